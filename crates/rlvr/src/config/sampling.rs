//! `generator.sampling_params` (training rollouts) and `generator.eval_sampling_params`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub max_generate_length: usize,
    pub repetition_penalty: f64,
    /// 0 = greedy. Training log-probs are computed from logits divided by this.
    pub temperature: f64,
    pub top_p: f64,
    pub min_p: f64,
    /// -1 = off.
    pub top_k: i64,
    pub logprobs: Option<usize>,
    /// vLLM's `stop`: one string or a list.
    #[serde(deserialize_with = "super::keys::optional_names")]
    pub stop: Option<Vec<String>>,
}

impl SamplingParams {
    /// The stop strings as a list (empty when none).
    pub fn stop_strings(&self) -> Vec<String> {
        self.stop.clone().unwrap_or_default()
    }
}
