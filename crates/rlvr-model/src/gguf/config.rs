//! `ModelConfig` from GGUF metadata (`{arch}.block_count`, `{arch}.embedding_length`, ...).

use anyhow::{anyhow, bail, Result};

use super::reader::GgufFile;
use crate::config::{ModelConfig, RopeScaling};

/// Architectures whose GGUF layout maps onto HF's Llama/Qwen2 parameters.
pub const SUPPORTED_ARCHITECTURES: [&str; 3] = ["llama", "mistral", "qwen2"];

pub fn model_config(
    file: &GgufFile,
    vocab_size: usize,
    tie_word_embeddings: bool,
    qkv_bias: bool,
) -> Result<ModelConfig> {
    let path = file.path().display().to_string();
    let arch = file
        .get_str("general.architecture")?
        .ok_or_else(|| anyhow!("{path}: no general.architecture in the metadata"))?;
    if !SUPPORTED_ARCHITECTURES.contains(&arch) {
        bail!("{path}: architecture {arch:?} is not supported (supported: {SUPPORTED_ARCHITECTURES:?})");
    }
    let key = |k: &str| format!("{arch}.{k}");
    let hidden_size = file.require_usize(&key("embedding_length"))?;
    let num_attention_heads = file.require_usize(&key("attention.head_count"))?;
    if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
        bail!("{path}: embedding_length {hidden_size} is not a multiple of head_count {num_attention_heads}");
    }
    let num_key_value_heads = file
        .get_u64(&key("attention.head_count_kv"))?
        .map(|v| v as usize)
        .unwrap_or(num_attention_heads);
    let head_dim = file
        .get_u64(&key("attention.key_length"))?
        .map(|v| v as usize)
        .filter(|&d| d != hidden_size / num_attention_heads);
    let rope_scaling = match file.get_str(&key("rope.scaling.type"))? {
        None | Some("none") => None,
        Some("linear") => Some(RopeScaling::Linear {
            factor: file.get_f64(&key("rope.scaling.factor"))?.ok_or_else(|| {
                anyhow!("{path}: linear rope scaling without {arch}.rope.scaling.factor")
            })?,
        }),
        Some(other) => bail!("{path}: rope scaling type {other:?} is not supported"),
    };
    let model_type = if arch == "qwen2" { "qwen2" } else { "llama" };
    let config = ModelConfig {
        model_type: model_type.into(),
        vocab_size,
        hidden_size,
        intermediate_size: file.require_usize(&key("feed_forward_length"))?,
        num_hidden_layers: file.require_usize(&key("block_count"))?,
        num_attention_heads,
        num_key_value_heads: Some(num_key_value_heads),
        head_dim,
        rms_norm_eps: file
            .get_f64(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-6),
        rope_theta: file.get_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0),
        rope_scaling,
        max_position_embeddings: file
            .get_u64(&key("context_length"))?
            .map(|v| v as usize)
            .unwrap_or(2048),
        tie_word_embeddings,
        attention_bias: Some(qkv_bias),
        bos_token_id: file
            .get_u64("tokenizer.ggml.bos_token_id")?
            .map(|v| v as u32),
        eos_token_id: file
            .get_u64("tokenizer.ggml.eos_token_id")?
            .map(serde_json::Value::from),
        hidden_act: "silu".into(),
        torch_dtype: Some("float32".into()),
        initializer_range: None,
    };
    config
        .validate()
        .map_err(|e| anyhow!("{path}: metadata describes no usable model: {e}"))?;
    Ok(config)
}
