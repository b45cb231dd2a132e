pub mod bench;
pub mod conformance;
pub mod config;
pub mod generate;
