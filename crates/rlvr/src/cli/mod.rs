pub mod bench;
pub mod config;
pub mod conformance;
pub mod data;
pub mod generate;
pub mod plot;
pub mod toy;
pub mod train;
