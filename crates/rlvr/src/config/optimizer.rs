//! `trainer.policy.optimizer_config` / `trainer.critic.optimizer_config`: AdamW, gradient clipping
//! and the learning-rate schedule.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub lr: f64,
    pub adam_betas: Vec<f64>,
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// SkyRL: offload optimizer state to CPU after each step (no effect on results).
    pub offload_after_step: bool,
    pub num_warmup_steps: usize,
    /// `constant_with_warmup` (default), `constant`, `linear`, `cosine`.
    pub scheduler: rlvr_model::optim::ScheduleKind,
}
