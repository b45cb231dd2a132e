//! GSM8K: the final answer after `####` must equal the ground truth (SkyRL's `gsm8k` environment).

use super::Environment;
use crate::data::PromptRow;
use anyhow::Result;
use rlvr_algo::rewards::gsm8k::{compute_score, Method};
use serde_json::Value;

pub struct Gsm8kEnv {
    method: Method,
    format_score: f64,
}

impl Gsm8kEnv {
    /// `Strict` is SkyRL's default; `Flexible` takes the last number in the response and compares
    /// strings; `Numeric` (rlvr) compares the last number's value. `format_score` is the reward of
    /// an answer that was extracted but is wrong (SkyRL and verl default to 0).
    pub fn new(method: Method, format_score: f64) -> Self {
        Self {
            method,
            format_score,
        }
    }
}

impl Environment for Gsm8kEnv {
    fn reward(&self, response: &str, row: &PromptRow) -> Result<f64> {
        let gt = Value::String(row.reward_spec.ground_truth.clone());
        Ok(compute_score(response, &gt, self.method, self.format_score, 1.0).value)
    }

    fn eval_scores(&self, response: &str, row: &PromptRow) -> Vec<(&'static str, f64)> {
        let gt = Value::String(row.reward_spec.ground_truth.clone());
        vec![
            (
                "strict_accuracy",
                compute_score(response, &gt, Method::Strict, 0.0, 1.0).value,
            ),
            (
                "flexible_accuracy",
                compute_score(response, &gt, Method::Flexible, 0.0, 1.0).value,
            ),
            (
                "numeric_accuracy",
                compute_score(response, &gt, Method::Numeric, 0.0, 1.0).value,
            ),
            // Whether the response wrote the answer marker at all: strict accuracy can only be
            // as high as this.
            ("marker_rate", response.contains("####") as u8 as f64),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::RewardSpec;

    fn row(gt: &str) -> PromptRow {
        PromptRow {
            data_source: "openai/gsm8k".into(),
            prompt: vec![],
            env_class: "gsm8k".into(),
            reward_spec: RewardSpec {
                method: "rule".into(),
                ground_truth: gt.into(),
            },
            extra_info: Value::Null,
        }
    }

    #[test]
    fn format_score_rewards_a_formatted_wrong_answer_only() {
        let env = Gsm8kEnv::new(Method::Strict, 0.1);
        let r = row("72");
        assert_eq!(env.reward("so 48 + 24 = 72\n#### 72", &r).unwrap(), 1.0);
        assert_eq!(env.reward("so 48 + 20 = 68\n#### 68", &r).unwrap(), 0.1);
        // No "#### N": nothing extracted, no credit, whatever the last number is.
        assert_eq!(env.reward("the answer is \\boxed{72}", &r).unwrap(), 0.0);
        assert_eq!(
            Gsm8kEnv::new(Method::Strict, 0.0)
                .reward("#### 68", &r)
                .unwrap(),
            0.0
        );
    }

    #[test]
    fn eval_scores_report_accuracy_without_credit_and_the_marker() {
        let env = Gsm8kEnv::new(Method::Strict, 0.1);
        let scores: std::collections::BTreeMap<_, _> = env
            .eval_scores("so 68\n#### 68", &row("72"))
            .into_iter()
            .collect();
        assert_eq!(scores["strict_accuracy"], 0.0);
        assert_eq!(scores["marker_rate"], 1.0);
        let scores: std::collections::BTreeMap<_, _> = env
            .eval_scores("\\boxed{72}", &row("72"))
            .into_iter()
            .collect();
        assert_eq!(scores["strict_accuracy"], 0.0);
        assert_eq!(scores["flexible_accuracy"], 1.0);
        assert_eq!(scores["marker_rate"], 0.0);
    }
}
