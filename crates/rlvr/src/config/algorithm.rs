//! `trainer.algorithm`: advantage estimator, policy loss and its reduction, KL, entropy, clipping,
//! dynamic sampling and (rlvr-only) DAPO's soft overlong punishment.

use serde::{Deserialize, Serialize};

pub use rlvr_algo::policy_loss::{
    CispoConfig, ClipCovConfig, KlCovConfig, OffPolicyCorrectionConfig, SapoConfig,
};
use rlvr_algo::{KlEstimator, LossReduction};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlgorithmConfig {
    /// A name in `rlvr_algo::advantages`' registry (`grpo`, `rloo`, `reinforce++`, `gae`, ...).
    pub advantage_estimator: String,
    pub kl_ctrl: KlCtrlConfig,
    pub kl_estimator_type: KlEstimator,
    pub use_kl_in_reward: bool,
    pub use_kl_loss: bool,
    pub kl_loss_coef: f64,
    pub use_entropy_loss: bool,
    pub entropy_loss_coef: f64,
    pub advantage_batch_normalize: bool,
    pub value_head_prefix: String,
    /// A name in `rlvr_algo::policy_loss`' registry (`regular`, `dual_clip`, `gspo`, ...).
    pub policy_loss_type: String,
    pub loss_reduction: LossReduction,
    pub grpo_norm_by_std: bool,
    pub lambd: f64,
    pub gamma: f64,
    pub eps_clip_low: f64,
    pub eps_clip_high: f64,
    pub clip_ratio_c: f64,
    pub tis_imp_ratio_cap: f64,
    pub use_tis: bool,
    /// Normaliser of `seq_mean_token_sum_norm`; see [`super::Config::max_seq_len`] for the default.
    pub max_seq_len: Option<usize>,
    pub off_policy_correction: OffPolicyCorrectionConfig,
    pub sapo: SapoConfig,
    /// The critic's value clipping (`None` = unclipped value loss).
    pub value_clip: Option<f64>,
    pub dynamic_sampling: DynamicSamplingConfig,
    pub clip_cov: ClipCovConfig,
    pub kl_cov: KlCovConfig,
    pub cispo: CispoConfig,
    /// rlvr-only (DAPO): `None` = off.
    pub overlong_buffer: Option<OverlongBufferConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KlCtrlConfig {
    #[serde(rename = "type")]
    pub kind: rlvr_algo::kl::KlCtrlType,
    pub kl_target: f64,
    pub horizon: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynamicSamplingConfig {
    #[serde(rename = "type")]
    pub kind: Option<rlvr_algo::dynamic_sampling::Strategy>,
    /// Generation batches per step before giving up; `<= 0` = no limit.
    pub max_sample_batches: i64,
    pub min_replace_ratio: f64,
}

/// Soft overlong punishment: with `start = max_generate_length - len`, a response of length
/// `start < |y| <= max_generate_length` loses `(|y| - start) / len * penalty_factor` reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverlongBufferConfig {
    pub len: usize,
    pub penalty_factor: f64,
}
