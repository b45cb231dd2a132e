#![deny(unsafe_op_in_unsafe_fn)]
//! The policy model of rlvr: a Llama-family decoder on differentiable candle ops, checkpoint
//! loading (HF safetensors directories and GGUF), tokenizer and chat template, the generation
//! engine, and optimizer glue.

pub mod config;
pub mod device;

pub use config::{ModelConfig, RopeScaling};
pub use device::{device_name, parse_device};
pub mod engine;
/// Public for the kernel benchmarks in `examples/`; the model is the API.
pub mod kernels;
pub mod kv_cache;
pub mod logprobs;
pub mod model;
pub mod optim;

pub use kernels::gemm::Precision;
pub use kv_cache::KvCache;
pub use logprobs::{LogProbOptions, TokenLogProbs};
pub use model::{Model, SharedPrompts};
pub mod chat_template;
pub mod export;
pub mod generation_config;
pub mod gguf;
pub mod hub;
pub mod load;
pub mod tokenizer;
pub mod value;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use export::{all_finite, save_hf, save_hf_with, SaveDType, SaveOptions};
pub use generation_config::GenerationConfig;
pub use load::{load_pretrained, read_model_config, Pretrained};
pub use tokenizer::{SpecialTokens, Tokenizer};
pub use value::{HeadInit, ValueModel};
