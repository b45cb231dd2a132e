//! The algorithm core of rlvr.

pub mod logprobs;

pub use logprobs::{entropy_from_logits, log_probs_from_logits};
