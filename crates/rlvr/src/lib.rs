//! rlvr: the framework (config, data, environments, generator, trainer) behind the `rlvr` binary.
#![deny(unsafe_op_in_unsafe_fn)]
pub mod config;
pub mod data;
pub mod dist;
pub mod env;
pub mod eval;
pub mod export;
pub mod generator;
pub mod logging;
pub mod optimizer;
pub mod plot;
pub mod protocol;
pub mod run;
pub mod serve;
pub mod toy;
pub mod trainer;
