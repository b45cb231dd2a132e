//! GSM8K: the final answer after `####` must equal the ground truth (SkyRL's `gsm8k` environment).

use super::Environment;
use crate::data::PromptRow;
use anyhow::Result;
use rlvr_algo::rewards::gsm8k::{compute_score, ScoringMethod};

pub struct Gsm8kEnv {
    method: ScoringMethod,
}

impl Gsm8kEnv {
    /// `Strict` is SkyRL's default; `Flexible` takes the last number in the response.
    pub fn new(method: ScoringMethod) -> Self {
        Self { method }
    }
}

impl Environment for Gsm8kEnv {
    fn reward(&self, response: &str, row: &PromptRow) -> Result<f64> {
        Ok(compute_score(response, &row.reward_spec.ground_truth, self.method))
    }
}
