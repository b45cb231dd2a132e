//! `trainer`: batch sizes, epochs, checkpoints, evaluation cadence, logging, and the model roles
//! (`policy`, `ref`, `critic`) with their optimizers. SkyRL's keys for its GPU stack (placement,
//! FSDP, sequence parallelism, LoRA) have no field here (`compat.rs`).

use serde::{Deserialize, Serialize};

use super::algorithm::AlgorithmConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// rlvr-only: `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
    pub policy: PolicyConfig,
    #[serde(rename = "ref")]
    pub reference: RefConfig,
    pub critic: CriticConfig,
    pub algorithm: AlgorithmConfig,
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
    pub eval_batch_size: usize,
    pub eval_before_train: bool,
    /// `<= 0` = never.
    pub eval_interval: i64,
    pub max_prompt_length: usize,
    pub run_name: String,
    /// Comma-separated sink names (`console`, `jsonl`, `csv`, `tensorboard`, SkyRL's `wandb`);
    /// a list (`['console','jsonl']`) is joined.
    #[serde(deserialize_with = "super::values::joined_names")]
    pub logger: String,
    pub dump_eval_results: bool,
}

/// `trainer.resume_mode`: `none` (or null) starts fresh, `latest` resumes from the newest
/// checkpoint under `trainer.ckpt_path`, `from_path` from `trainer.resume_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeMode {
    None,
    Latest,
    FromPath,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyConfig {
    pub model: ModelPath,
    pub optimizer_config: OptimizerConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefConfig {
    /// Defaults to the policy's path (`${trainer.policy.model.path}`).
    pub model: ModelPath,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticConfig {
    pub model: CriticModel,
    pub optimizer_config: OptimizerConfig,
}

/// A Hugging Face model directory or a `.gguf` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelPath {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticModel {
    /// `None` = no critic (needed only by `gae`).
    pub path: Option<String>,
}

/// `trainer.policy.optimizer_config` / `trainer.critic.optimizer_config`: AdamW, gradient
/// clipping and the learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub lr: f64,
    pub adam_betas: Vec<f64>,
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    pub num_warmup_steps: usize,
    /// `constant_with_warmup` (default), `constant`, `linear`, `cosine`.
    pub scheduler: rlvr_model::optim::ScheduleKind,
}
