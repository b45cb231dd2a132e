//! Saving a checkpoint as a Hugging Face directory that transformers loads with
//! `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`.
//!
//! Everything is written into a sibling temporary directory first and then renamed into place,
//! so a crash never leaves a half-written checkpoint under `dir`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Tensor};
use safetensors::tensor::TensorView;

use crate::config::ModelConfig;
use crate::generation_config::GenerationConfig;
use crate::load::expected_shapes;
use crate::tokenizer::Tokenizer;

/// Storage dtype of `model.safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveDType {
    #[default]
    F32,
    BF16,
}

impl SaveDType {
    fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::BF16 => "bfloat16",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    pub dtype: SaveDType,
}

/// Writes `dir` as an f32 HF checkpoint (replacing it if it exists).
pub fn save_hf(
    dir: &Path,
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
    tokenizer: &Tokenizer,
    generation_config: Option<&GenerationConfig>,
) -> Result<()> {
    save_hf_with(
        dir,
        config,
        tensors,
        tokenizer,
        generation_config,
        &SaveOptions::default(),
    )
}

pub fn save_hf_with(
    dir: &Path,
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
    tokenizer: &Tokenizer,
    generation_config: Option<&GenerationConfig>,
    options: &SaveOptions,
) -> Result<()> {
    for (name, shape) in expected_shapes(config) {
        let t = tensors
            .get(&name)
            .ok_or_else(|| anyhow!("cannot save {}: missing tensor {name}", dir.display()))?;
        if t.dims() != shape.as_slice() {
            bail!(
                "cannot save {}: tensor {name} has shape {:?}, the config implies {shape:?}",
                dir.display(),
                t.dims()
            );
        }
        if !all_finite(t)? {
            bail!(
                "cannot save {}: tensor {name} holds NaN or infinite values (the weights have diverged)",
                dir.display()
            );
        }
    }
    if dir.exists() && !dir.is_dir() {
        bail!(
            "cannot save {}: it exists and is not a directory",
            dir.display()
        );
    }
    let tmp = sibling(dir, "tmp")?;
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let written = write_all(&tmp, config, tensors, tokenizer, generation_config, options);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("saving {}", dir.display())));
    }
    replace_dir(&tmp, dir)
}

fn write_all(
    tmp: &Path,
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
    tokenizer: &Tokenizer,
    generation_config: Option<&GenerationConfig>,
    options: &SaveOptions,
) -> Result<()> {
    write_safetensors(
        &tmp.join("model.safetensors"),
        config,
        tensors,
        options.dtype,
    )?;
    write_json(
        &tmp.join("config.json"),
        &config_json(config, options.dtype)?,
    )?;
    std::fs::write(tmp.join("tokenizer.json"), tokenizer.to_tokenizer_json()?)
        .context("writing tokenizer.json")?;
    let mut tc = tokenizer.to_tokenizer_config_json();
    if tokenizer.model_max_length().is_none() {
        tc["model_max_length"] = serde_json::Value::from(config.max_position_embeddings);
    }
    write_json(&tmp.join("tokenizer_config.json"), &tc)?;
    write_json(
        &tmp.join("special_tokens_map.json"),
        &tokenizer.to_special_tokens_map_json(),
    )?;
    let gen = match generation_config {
        Some(g) => g.clone(),
        None => GenerationConfig {
            bos_token_id: config.bos_token_id.or(tokenizer.bos_token_id()),
            eos_token_id: config
                .eos_token_id
                .clone()
                .or(tokenizer.eos_token_id().map(serde_json::Value::from)),
            pad_token_id: tokenizer.pad_token_id(),
            ..Default::default()
        },
    };
    write_json(
        &tmp.join("generation_config.json"),
        &serde_json::to_value(&gen)?,
    )
}

/// `config.json` as transformers expects it: the architecture class, dtype, no null entries.
pub fn config_json(config: &ModelConfig, dtype: SaveDType) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(config)?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| anyhow!("ModelConfig did not serialize to an object"))?;
    obj.retain(|_, v| !v.is_null());
    let arch = match config.model_type.as_str() {
        "qwen2" => "Qwen2ForCausalLM",
        "mistral" => "MistralForCausalLM",
        _ => "LlamaForCausalLM",
    };
    obj.insert("architectures".into(), serde_json::json!([arch]));
    obj.insert("torch_dtype".into(), dtype.torch_name().into());
    obj.insert(
        "tie_word_embeddings".into(),
        config.tie_word_embeddings.into(),
    );
    if config.model_type != "qwen2" {
        obj.insert("mlp_bias".into(), false.into());
    }
    Ok(v)
}

fn write_safetensors(
    path: &Path,
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
    dtype: SaveDType,
) -> Result<()> {
    let mut names: Vec<&String> = tensors
        .keys()
        .filter(|k| !(config.tie_word_embeddings && k.as_str() == "lm_head.weight"))
        .collect();
    names.sort();
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(names.len());
    for name in names {
        let t = &tensors[name];
        let bytes = tensor_bytes(t, dtype).with_context(|| format!("tensor {name}"))?;
        buffers.push((name.clone(), t.dims().to_vec(), bytes));
    }
    let st_dtype = match dtype {
        SaveDType::F32 => safetensors::Dtype::F32,
        SaveDType::BF16 => safetensors::Dtype::BF16,
    };
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(n, shape, b)| Ok((n.clone(), TensorView::new(st_dtype, shape.clone(), b)?)))
        .collect::<Result<_>>()?;
    let metadata = Some(HashMap::from([("format".to_owned(), "pt".to_owned())]));
    safetensors::serialize_to_file(views, metadata, path)
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

fn tensor_bytes(t: &Tensor, dtype: SaveDType) -> Result<Vec<u8>> {
    let flat = t.flatten_all()?;
    Ok(match dtype {
        SaveDType::F32 => flat
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        SaveDType::BF16 => flat
            .to_dtype(DType::BF16)?
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
    })
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(v)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `parent/.name.<tag>-<pid>-<nanos>`, on the same filesystem as `dir` so renames are atomic.
fn sibling(dir: &Path, tag: &str) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a directory name", dir.display()))?
        .to_string_lossy();
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Ok(parent.join(format!(".{name}.{tag}-{}-{nanos}", std::process::id())))
}

/// Moves the finished `tmp` to `dir`; an existing `dir` is moved aside first and removed after.
fn replace_dir(tmp: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        let old = sibling(dir, "old")?;
        std::fs::rename(dir, &old)
            .with_context(|| format!("moving the old {} aside", dir.display()))?;
        std::fs::rename(tmp, dir).with_context(|| format!("renaming into {}", dir.display()))?;
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("removing the old checkpoint {}", old.display()))?;
    } else {
        std::fs::rename(tmp, dir).with_context(|| format!("renaming into {}", dir.display()))?;
    }
    Ok(())
}

/// Whether every element of `t` is finite. Reads CPU f32 storage in place (no copy of a large
/// embedding); other tensors through `x * 0`, which is 0 only for finite `x`.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    if t.device().is_cpu() && t.dtype() == DType::F32 {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(cpu), Some((from, to))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(cpu.as_slice::<f32>()?[from..to]
                .iter()
                .all(|x| x.is_finite()));
        }
    }
    let t = t.to_dtype(DType::F32)?;
    // x * 0 is 0 for finite x and NaN for NaN and ±inf.
    let zero = (&t * 0.0)?.sum_all()?.to_scalar::<f32>()?;
    Ok(zero == 0.0)
}

#[cfg(test)]
mod finite_tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn non_finite_values_are_found_in_every_layout_and_dtype() {
        let d = &Device::Cpu;
        let ok = Tensor::new(&[[1f32, -2.0], [3.0, 1e30]], d).unwrap();
        assert!(all_finite(&ok).unwrap());
        assert!(all_finite(&ok.t().unwrap()).unwrap());
        assert!(all_finite(&ok.to_dtype(DType::BF16).unwrap()).unwrap());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let t = Tensor::new(&[[1f32, 2.0], [bad, 4.0]], d).unwrap();
            assert!(!all_finite(&t).unwrap());
            assert!(!all_finite(&t.t().unwrap()).unwrap());
            assert!(!all_finite(&t.narrow(0, 1, 1).unwrap()).unwrap());
            assert!(!all_finite(&t.to_dtype(DType::BF16).unwrap()).unwrap());
        }
    }
}
