//! Policy-loss hyper-parameters with SkyRL's defaults (`trainer.algorithm.*`).

use crate::reduction::LossReduction;
use serde::{Deserialize, Serialize};

/// `trainer.algorithm.sapo.*`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SapoConfig {
    pub tau_pos: f64,
    pub tau_neg: f64,
}

impl Default for SapoConfig {
    fn default() -> Self {
        SapoConfig {
            tau_pos: 1.0,
            tau_neg: 1.05,
        }
    }
}

/// `trainer.algorithm.cispo.*`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CispoConfig {
    pub cispo_eps_clip_low: f64,
    pub cispo_eps_clip_high: f64,
}

impl Default for CispoConfig {
    fn default() -> Self {
        CispoConfig {
            cispo_eps_clip_low: 0.0,
            cispo_eps_clip_high: 5.0,
        }
    }
}

/// `trainer.algorithm.clip_cov.*` (+ the seed of the random subset, SkyRL uses the global RNG).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClipCovConfig {
    pub clip_ratio: f64,
    pub clip_cov_lb: f64,
    pub clip_cov_ub: f64,
    /// Not a config key: the trainer sets it.
    #[serde(skip)]
    pub seed: u64,
}

impl Default for ClipCovConfig {
    fn default() -> Self {
        ClipCovConfig {
            clip_ratio: 0.0002,
            clip_cov_lb: 1.0,
            clip_cov_ub: 5.0,
            seed: 0,
        }
    }
}

/// `trainer.algorithm.kl_cov.*`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KlCovConfig {
    pub kl_cov_frac: f64,
    pub ppo_kl_coef: f64,
}

impl Default for KlCovConfig {
    fn default() -> Self {
        KlCovConfig {
            kl_cov_frac: 0.2,
            ppo_kl_coef: 1.0,
        }
    }
}

/// Truncated importance sampling against the rollout engine's log-probs: per token, or one
/// ratio per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TisRatioType {
    Token,
    Sequence,
}

/// How a sequence's importance ratio is taken for masking: the geometric mean of its tokens'
/// ratios, or their product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SequenceMaskMetric {
    Geometric,
    Product,
}

/// `trainer.algorithm.off_policy_correction.*` (all off by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffPolicyCorrectionConfig {
    pub tis_ratio_type: Option<TisRatioType>,
    pub token_tis_ratio_clip_high: f64,
    pub sequence_tis_ratio_clip_high: f64,
    pub sequence_mask_metric: Option<SequenceMaskMetric>,
    pub geo_mask_high: f64,
    pub geo_mask_low: f64,
    pub product_mask_high: f64,
    pub product_mask_low: f64,
    pub outlier_token_is_threshold_low: Option<f64>,
    pub outlier_token_is_threshold_high: Option<f64>,
}

impl Default for OffPolicyCorrectionConfig {
    fn default() -> Self {
        OffPolicyCorrectionConfig {
            tis_ratio_type: None,
            token_tis_ratio_clip_high: 2.0,
            sequence_tis_ratio_clip_high: 5.0,
            sequence_mask_metric: None,
            geo_mask_high: 1.01,
            geo_mask_low: 0.99,
            product_mask_high: 2.0,
            product_mask_low: 0.5,
            outlier_token_is_threshold_low: None,
            outlier_token_is_threshold_high: None,
        }
    }
}

/// Everything a policy loss reads; `Default` is SkyRL's base config.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyLossConfig {
    pub eps_clip_low: f64,
    pub eps_clip_high: f64,
    pub clip_ratio_c: f64,
    pub loss_reduction: LossReduction,
    pub max_seq_len: Option<usize>,
    pub sapo: SapoConfig,
    pub cispo: CispoConfig,
    pub clip_cov: ClipCovConfig,
    pub kl_cov: KlCovConfig,
    pub off_policy_correction: OffPolicyCorrectionConfig,
}

impl Default for PolicyLossConfig {
    fn default() -> Self {
        PolicyLossConfig {
            eps_clip_low: 0.2,
            eps_clip_high: 0.2,
            clip_ratio_c: 3.0,
            loss_reduction: LossReduction::TokenMean,
            max_seq_len: None,
            sapo: SapoConfig::default(),
            cispo: CispoConfig::default(),
            clip_cov: ClipCovConfig::default(),
            kl_cov: KlCovConfig::default(),
            off_policy_correction: OffPolicyCorrectionConfig::default(),
        }
    }
}
