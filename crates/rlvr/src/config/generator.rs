//! `generator`: rollout generation and its sampling parameters. rlvr generates with its embedded
//! engine in the trainer's process, or with remote vLLM/SGLang/`rlvr serve` servers; SkyRL's keys
//! for deploying its own engines have no field here (`compat.rs`).

use serde::{Deserialize, Serialize};
use serde_yaml::Mapping;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    pub model_name: String,
    pub model_dtype: String,
    pub run_engines_locally: bool,
    /// The API remote engines speak (`vllm` / `sglang`); rlvr's own engine ignores it.
    pub backend: crate::protocol::Backend,
    /// Responses per prompt (the GRPO group size).
    pub n_samples_per_prompt: usize,
    pub max_input_length: usize,
    pub max_num_seqs: usize,
    pub remote_inference_engine_urls: Vec<String>,
    pub served_model_name: Option<String>,
    /// rlvr-only: where weights are written for remote engines to reload.
    pub weight_sync_dir: String,
    /// rlvr-only.
    pub remote_request_timeout_s: f64,
    /// rlvr-only.
    pub remote_max_retries: usize,
    /// rlvr-only: the Bearer key of the servers (`rlvr serve --api-key`, vLLM's `--api-key`);
    /// else `RLVR_API_KEY`. Never written out: saved configs show `"***"`.
    #[serde(serialize_with = "redact")]
    pub remote_api_key: Option<String>,
    pub chat_template: ChatTemplateConfig,
    pub chat_template_kwargs: Mapping,
    pub sampling_params: SamplingParams,
    pub eval_sampling_params: SamplingParams,
    pub eval_n_samples_per_prompt: usize,
    /// Reward 0 for responses that did not stop on their own.
    pub zero_reward_on_non_stop: bool,
    /// DAPO overlong filtering: zero the loss mask of truncated responses.
    pub apply_overlong_filtering: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTemplateConfig {
    /// `name` (the model's own template) or `file`.
    pub source: String,
}

/// `generator.sampling_params` (training rollouts) and `generator.eval_sampling_params`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub max_generate_length: usize,
    /// 0 = greedy. Training log-probs are computed from logits divided by this.
    pub temperature: f64,
    pub top_p: f64,
    pub min_p: f64,
    /// -1 = off.
    pub top_k: i64,
    pub logprobs: Option<usize>,
    /// vLLM's `stop`: one string or a list.
    #[serde(deserialize_with = "super::values::optional_names")]
    pub stop: Option<Vec<String>>,
}

impl SamplingParams {
    /// The stop strings as a list (empty when none).
    pub fn stop_strings(&self) -> Vec<String> {
        self.stop.clone().unwrap_or_default()
    }
}

fn redact<S: serde::Serializer>(key: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match key {
        Some(_) => s.serialize_str("***"),
        None => s.serialize_none(),
    }
}
