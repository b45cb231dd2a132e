//! GSM8K: the final answer after `####` must equal the ground truth (SkyRL's `gsm8k` environment).

use super::Environment;
use crate::data::PromptRow;
use anyhow::Result;
use rlvr_algo::rewards::gsm8k::{compute_score, Method};
use serde_json::Value;

pub struct Gsm8kEnv {
    method: Method,
}

impl Gsm8kEnv {
    /// `Strict` is SkyRL's default; `Flexible` takes the last number in the response and compares
    /// strings; `Numeric` (rlvr) compares the last number's value.
    pub fn new(method: Method) -> Self {
        Self { method }
    }
}

impl Environment for Gsm8kEnv {
    fn reward(&self, response: &str, row: &PromptRow) -> Result<f64> {
        let gt = Value::String(row.reward_spec.ground_truth.clone());
        Ok(compute_score(response, &gt, self.method, 0.0, 1.0).value)
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
        ]
    }
}
