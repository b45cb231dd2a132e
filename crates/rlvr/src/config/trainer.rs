//! `trainer`: batch sizes, epochs, checkpoints, evaluation cadence, logging, and the model roles.

use serde::{Deserialize, Serialize};

use super::algorithm::AlgorithmConfig;
use super::model::{CriticConfig, PolicyConfig, RefConfig};
use super::placement::PlacementConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    pub placement: PlacementConfig,
    pub sequence_parallel_backend: SequenceParallelBackend,
    pub strategy: TrainStrategy,
    /// rlvr-only: `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
    pub policy: PolicyConfig,
    #[serde(rename = "ref")]
    pub reference: RefConfig,
    pub critic: CriticConfig,
    pub algorithm: AlgorithmConfig,
    pub fully_async: FullyAsyncConfig,
    pub gradient_checkpointing: bool,
    pub gradient_checkpointing_use_reentrant: bool,
    pub seed: u64,
    pub resume_mode: Option<ResumeMode>,
    pub resume_path: Option<String>,
    pub log_path: String,
    pub ckpt_path: String,
    /// -1 = keep all.
    pub max_ckpts_to_keep: i64,
    /// rlvr-only: optimizer steps skipped in a row (non-finite gradient norm) that stop the run;
    /// 0 = never.
    pub max_consecutive_skipped_steps: usize,
    /// `<= 0` = never.
    pub ckpt_interval: i64,
    pub hf_save_interval: i64,
    pub export_path: String,
    pub bf16: bool,
    pub epochs: usize,
    pub update_epochs_per_batch: usize,
    /// Prompts per training step.
    pub train_batch_size: usize,
    /// Prompts per optimizer step.
    pub policy_mini_batch_size: usize,
    pub critic_mini_batch_size: usize,
    /// Rows (prompt x sample) per forward/backward pass.
    pub micro_train_batch_size_per_gpu: usize,
    pub micro_forward_batch_size_per_gpu: usize,
    pub update_ref_every_epoch: bool,
    pub use_sample_packing: bool,
    pub eval_batch_size: usize,
    pub eval_before_train: bool,
    /// `<= 0` = never.
    pub eval_interval: i64,
    pub max_prompt_length: usize,
    pub flash_attn: bool,
    pub disable_fast_tokenizer: bool,
    pub project_name: String,
    pub run_name: String,
    /// Comma-separated sink names (`console`, `jsonl`, `csv`, `tensorboard`, SkyRL's `wandb`);
    /// a list (`['console','jsonl']`) is joined.
    #[serde(deserialize_with = "super::keys::joined_names")]
    pub logger: String,
    pub dump_data_batch: bool,
    pub dump_eval_results: bool,
    pub rope_scaling: Option<serde_yaml::Value>,
    pub rope_theta: Option<f64>,
}

/// `trainer.resume_mode`: start afresh (`none`, or null), from the latest checkpoint under
/// `trainer.ckpt_path`, or from `trainer.resume_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeMode {
    None,
    Latest,
    FromPath,
}

/// SkyRL's `trainer.strategy` (its distributed training backend; rlvr trains in-process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainStrategy {
    Fsdp,
    Fsdp2,
    Deepspeed,
    Megatron,
}

/// SkyRL's `trainer.sequence_parallel_backend`: only `ulysses` exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SequenceParallelBackend {
    Ulysses,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FullyAsyncConfig {
    pub max_staleness_steps: usize,
    pub num_parallel_generation_workers: usize,
}
