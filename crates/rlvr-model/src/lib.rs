//! The policy model of rlvr: a Llama-family decoder on differentiable candle ops, checkpoint
//! loading (HF safetensors directories and GGUF), tokenizer and chat template, the generation
//! engine, and optimizer glue.

pub mod config;

pub use config::{ModelConfig, RopeScaling};
