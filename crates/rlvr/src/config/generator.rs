//! `generator`: rollout generation. Most engine keys describe SkyRL's vLLM/SGLang deployment and
//! only parse here; rlvr generates with its embedded engine in the trainer's process.

use serde::{Deserialize, Serialize};
use serde_yaml::Mapping;

use super::sampling::SamplingParams;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    pub model_name: String,
    pub model_dtype: String,
    pub run_engines_locally: bool,
    pub num_inference_engines: usize,
    /// `vllm` / `sglang` (SkyRL); served by rlvr's embedded engine.
    /// The API remote engines speak; rlvr's own engine generates in-process whatever it says.
    pub backend: crate::protocol::Backend,
    pub weight_sync_backend: String,
    #[serde(rename = "weight_transfer_threshold_cuda_ipc_GB")]
    pub weight_transfer_threshold_cuda_ipc_gb: f64,
    pub external_proxy_url: Option<String>,
    pub external_server_urls: Option<Vec<String>>,
    pub inference_engine_tensor_parallel_size: usize,
    pub inference_engine_pipeline_parallel_size: usize,
    pub inference_engine_expert_parallel_size: usize,
    pub inference_engine_data_parallel_size: usize,
    /// Responses per prompt (the GRPO group size).
    pub n_samples_per_prompt: usize,
    pub async_engine: bool,
    pub batched: bool,
    pub max_input_length: usize,
    pub vllm_v1_disable_multiproc: bool,
    pub enable_prefix_caching: bool,
    pub enable_chunked_prefill: bool,
    pub max_num_batched_tokens: usize,
    pub enforce_eager: bool,
    pub fully_sharded_loras: bool,
    pub enable_ray_prometheus_stats: bool,
    pub gpu_memory_utilization: f64,
    pub max_num_seqs: usize,
    pub remote_inference_engine_urls: Vec<String>,
    pub enable_http_endpoint: bool,
    pub http_endpoint_host: String,
    pub http_endpoint_port: usize,
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
    pub max_turns: usize,
    pub chat_template: ChatTemplateConfig,
    pub chat_template_kwargs: Mapping,
    pub engine_init_kwargs: Mapping,
    pub override_existing_update_group: String,
    pub sampling_params: SamplingParams,
    pub use_conversation_multi_turn: bool,
    pub append_eos_token_after_stop_str_in_multi_turn: bool,
    pub eval_sampling_params: SamplingParams,
    pub eval_n_samples_per_prompt: usize,
    /// Reward 0 for responses that did not stop on their own.
    pub zero_reward_on_non_stop: bool,
    /// DAPO overlong filtering: zero the loss mask of truncated responses.
    pub apply_overlong_filtering: bool,
    pub rope_scaling: Option<serde_yaml::Value>,
    pub rope_theta: Option<f64>,
    pub step_wise_trajectories: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTemplateConfig {
    /// `name` (the model's own template) or `file`.
    pub source: String,
    pub name_or_path: Option<String>,
}

fn redact<S: serde::Serializer>(key: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match key {
        Some(_) => s.serialize_str("***"),
        None => s.serialize_none(),
    }
}
