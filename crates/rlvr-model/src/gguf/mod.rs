//! GGUF checkpoints (llama.cpp): header and tensors through candle's reader and block decoders,
//! names mapped to HF's, llama.cpp's q/k row permutation undone, tokenizer rebuilt from the
//! metadata. The result is the same [`Pretrained`] an HF directory gives.

pub mod config;
pub mod names;
pub mod permute;
pub mod reader;
pub mod tokenizer;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};

pub use reader::{dequantize_bytes, GgufFile};

use crate::generation_config::GenerationConfig;
use crate::load::Pretrained;

/// The model config from the header alone (validated), before any tensor is read.
pub fn header_config(file: &GgufFile) -> Result<crate::ModelConfig> {
    let tied = file.tensor_info("output.weight").is_none();
    let qkv_bias = file.tensor_info("blk.0.attn_q.bias").is_some();
    let vocab = file
        .tensor_info("token_embd.weight")
        .and_then(|i| i.shape.dims().first().copied())
        .ok_or_else(|| anyhow!("{}: no token_embd.weight tensor", file.path().display()))?;
    config::model_config(file, vocab, tied, qkv_bias)
}

pub fn load_gguf(path: &Path, device: &Device) -> Result<Pretrained> {
    let mut file = GgufFile::open(path)?;
    let shown = path.display().to_string();
    let config = header_config(&file)?;
    let tokenizer = tokenizer::tokenizer_from_gguf(&file)?;
    let arch = file
        .get_str("general.architecture")?
        .unwrap_or_default()
        .to_owned();
    // llama.cpp permutes q/k rows for the llama family only (Qwen2 is stored as HF has it).
    let permuted = arch == "llama" || arch == "mistral";
    let n_head = file
        .get_u64(&format!("{arch}.attention.head_count"))?
        .unwrap_or(0) as usize;
    let n_head_kv = file
        .get_u64(&format!("{arch}.attention.head_count_kv"))?
        .map(|v| v as usize)
        .unwrap_or(n_head);

    let names: Vec<String> = file.tensor_names().into_iter().map(str::to_owned).collect();
    if names.iter().any(|n| n == "rope_freqs.weight") {
        bail!("{shown}: rope_freqs.weight (Llama 3.1 rope scaling) is not supported");
    }
    let mut tensors: HashMap<String, Tensor> = HashMap::with_capacity(names.len());
    for name in &names {
        let hf = names::hf_name(name).ok_or_else(|| {
            anyhow!(
                "{shown}: tensor {} has no Hugging Face counterpart",
                crate::load::quote(name)
            )
        })?;
        let mut t = file.dequantize(name)?;
        if permuted {
            let heads = if hf.contains(".q_proj.") {
                Some(n_head)
            } else if hf.contains(".k_proj.") {
                Some(n_head_kv)
            } else {
                None
            };
            if let Some(h) = heads {
                t = permute::unpermute_qk(&t, h)
                    .map_err(|e| anyhow!("{shown}: tensor {name}: {e}"))?;
            }
        }
        tensors.insert(hf, t.to_device(device)?);
    }

    let generation_config = GenerationConfig {
        bos_token_id: tokenizer.bos_token_id(),
        eos_token_id: tokenizer.eos_token_id().map(serde_json::Value::from),
        pad_token_id: tokenizer.pad_token_id(),
        ..Default::default()
    };
    let pretrained = Pretrained {
        config,
        tensors,
        tokenizer,
        generation_config: Some(generation_config),
        source: path.to_owned(),
    };
    pretrained.check_tensors()?;
    Ok(pretrained)
}
