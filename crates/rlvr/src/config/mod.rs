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

mod algorithm;
mod builder;
mod compat;
mod data;
mod defaults;
mod environment;
mod error;
mod generator;
mod interpolate;
mod keys;
mod model;
mod optimizer;
mod override_arg;
mod placement;
mod resolved;
mod sampling;
mod trainer;
mod tree;
mod validate;

use serde::{Deserialize, Serialize};
use std::path::Path;

pub use algorithm::{
    AlgorithmConfig, CispoConfig, ClipCovConfig, DynamicSamplingConfig, KlCovConfig, KlCtrlConfig,
    OffPolicyCorrectionConfig, OverlongBufferConfig, SapoConfig,
};
pub use builder::ConfigBuilder;
pub use data::DataConfig;
pub use defaults::BASE_YAML;
pub use environment::{
    EnvironmentConfig, Gsm8kConfig, LlmAsAJudgeConfig, SearchConfig, SkyrlGymConfig, Text2SqlConfig,
};
pub use error::{ConfigError, Origin};
pub use generator::{ChatTemplateConfig, GeneratorConfig};
pub use model::{
    CriticConfig, CriticModel, FsdpConfig, LoraConfig, PolicyConfig, PolicyModel, RefConfig,
    RefModel,
};
pub use optimizer::OptimizerConfig;
pub use override_arg::{parse as parse_override, Mode as OverrideMode, Override};
pub use placement::PlacementConfig;
pub use resolved::ResolvedConfig;
pub use sampling::SamplingParams;
pub use trainer::{
    FullyAsyncConfig, ResumeMode, SequenceParallelBackend, TrainStrategy, TrainerConfig,
};
pub use tree::leaves as flatten;
pub use validate::{log_warnings, validate_with, NameChecks};

/// The whole typed config, one field per top-level section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub trainer: TrainerConfig,
    pub generator: GeneratorConfig,
    pub data: DataConfig,
    pub environment: EnvironmentConfig,
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

/// Defaults, then `file` (if any), then `overrides`, resolved. Does not validate.
pub fn load<S: AsRef<str>>(
    file: Option<&Path>,
    overrides: &[S],
) -> Result<ResolvedConfig, ConfigError> {
    let mut builder = ConfigBuilder::new();
    if let Some(path) = file {
        builder.merge_file(path)?;
    }
    builder.apply_overrides(overrides)?;
    builder.resolve()
}
