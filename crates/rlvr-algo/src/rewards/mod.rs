//! Verifiable rewards.

pub mod gsm8k;
