//! rlvr's configuration: SkyRL's `ppo_base_config.yaml` layout, keys and defaults
//! (`crates/rlvr/config/base.yaml`), Hydra-style command-line overrides, a typed view, and
//! validation before any work starts.
//!
//! ```no_run
//! use rlvr::config::ConfigBuilder;
//! let resolved = ConfigBuilder::new()
//!     .apply_overrides(&["trainer.algorithm.eps_clip_high=0.28", "+trainer.algorithm.overlong_buffer.len=512"])?
//!     .resolve()?;
//! let warnings = resolved.validate()?;
//! let eps = resolved.config.trainer.algorithm.eps_clip_high;
//! # Ok::<(), rlvr::config::ConfigError>(())
//! ```
//!
//! Order: defaults, then `--config` files, then overrides in order; `${...}` interpolations are
//! resolved last, so `trainer.policy.model.path=X` also moves `generator.model_name`.
//!
//! Each key's type is its field in [`Config`]; keys SkyRL has but rlvr does not act on have no
//! field and are listed with what rlvr does instead in `crates/rlvr/config/skyrl_compat.yaml`.

mod algorithm;
mod builder;
mod compat;
mod error;
mod generator;
mod interpolate;
mod override_arg;
mod resolved;
mod trainer;
mod tree;
mod validate;
mod values;

use serde::{Deserialize, Serialize};
use std::path::Path;

pub use algorithm::{
    AlgorithmConfig, CispoConfig, ClipCovConfig, DynamicSamplingConfig, KlCovConfig, KlCtrlConfig,
    OffPolicyCorrectionConfig, OverlongBufferConfig, SapoConfig,
};
pub use builder::ConfigBuilder;
pub use error::{ConfigError, Origin};
pub use generator::{ChatTemplateConfig, GeneratorConfig, SamplingParams};
pub use resolved::ResolvedConfig;
pub use trainer::{
    CriticConfig, CriticModel, ModelPath, OptimizerConfig, PolicyConfig, RefConfig, ResumeMode,
    TrainerConfig,
};
pub use tree::leaves as flatten;

/// The whole typed config, one field per top-level section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub trainer: TrainerConfig,
    pub generator: GeneratorConfig,
    pub data: DataConfig,
    pub environment: EnvironmentConfig,
}

/// `data`: the training and evaluation datasets (parquet or jsonl files in SkyRL's row schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    pub train_data: Vec<String>,
    pub val_data: Vec<String>,
}

/// `environment`: which environment scores responses (`env_class`, the default for rows that do
/// not name one) and the settings of rlvr's GSM8K scorer under `skyrl_gym.gsm8k`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentConfig {
    pub env_class: String,
    pub skyrl_gym: SkyrlGymConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkyrlGymConfig {
    pub gsm8k: Gsm8kConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gsm8kConfig {
    /// `strict` (SkyRL: the number after `#### `), `flexible` (the last number in the text) or
    /// rlvr's `numeric`.
    pub method: rlvr_algo::rewards::gsm8k::Method,
    /// Partial credit for a formatted but wrong answer (`compute_score`'s `format_score`).
    pub format_score: f64,
}

impl Config {
    /// The `seq_mean_token_sum_norm` normaliser: `trainer.algorithm.max_seq_len`, or (as SkyRL
    /// does when it is null) `generator.max_input_length + sampling_params.max_generate_length`.
    pub fn max_seq_len(&self) -> usize {
        self.trainer.algorithm.max_seq_len.unwrap_or(
            self.generator.max_input_length + self.generator.sampling_params.max_generate_length,
        )
    }
}

/// Defaults, then `files` in order, then `overrides`, resolved. Does not validate.
pub fn load<P: AsRef<Path>, S: AsRef<str>>(
    files: &[P],
    overrides: &[S],
) -> Result<ResolvedConfig, ConfigError> {
    let mut builder = ConfigBuilder::new();
    for path in files {
        builder.merge_file(path.as_ref())?;
    }
    builder.apply_overrides(overrides)?;
    builder.resolve()
}
