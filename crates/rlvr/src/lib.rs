//! rlvr: the framework (config, data, environments, generator, trainer) behind the `rlvr` binary.
pub mod config;
pub mod data;
pub mod env;
pub mod eval;
pub mod generator;
pub mod logging;
pub mod plot;
pub mod toy;
