//! The model roles under `trainer`: `policy`, `ref` and `critic`, with their model path, LoRA and
//! FSDP settings. FSDP and sequence parallelism only steer SkyRL's GPU stack.

use serde::{Deserialize, Serialize};
use serde_yaml::Mapping;

use super::optimizer::OptimizerConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// 0 = full fine-tuning.
    pub rank: usize,
    pub alpha: usize,
    pub dropout: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_sync_path: Option<String>,
    pub target_modules: String,
    pub exclude_modules: Option<serde_yaml::Value>,
    pub init_method: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsdpConfig {
    pub cpu_offload: bool,
    pub reshard_after_forward: bool,
    pub fsdp_size: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyModel {
    /// A Hugging Face model directory or a `.gguf` file.
    pub path: String,
    pub lora: LoraConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyConfig {
    pub model: PolicyModel,
    pub optimizer_config: OptimizerConfig,
    pub fsdp_config: FsdpConfig,
    pub sequence_parallel_size: usize,
    pub use_torch_compile: bool,
    pub record_memory: bool,
    pub model_config_kwargs: Mapping,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefModel {
    /// Defaults to the policy's path (`${trainer.policy.model.path}`).
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefConfig {
    pub model: RefModel,
    pub sequence_parallel_size: usize,
    pub fsdp_config: FsdpConfig,
    pub model_config_kwargs: Mapping,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticModel {
    /// `None` = no critic (needed only by `gae`).
    pub path: Option<String>,
    pub lora: LoraConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticConfig {
    pub model: CriticModel,
    pub optimizer_config: OptimizerConfig,
    pub fsdp_config: FsdpConfig,
    pub sequence_parallel_size: usize,
    pub model_config_kwargs: Mapping,
}
