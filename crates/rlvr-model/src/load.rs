//! Loading a pretrained checkpoint: an HF directory (`config.json`, safetensors, tokenizer files,
//! `generation_config.json`) or a single `.gguf` file, into f32 tensors with HF names and layouts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;

use crate::config::ModelConfig;
use crate::generation_config::GenerationConfig;
use crate::tokenizer::Tokenizer;

/// A checkpoint in memory. `tensors` use HF names (`model.layers.0.self_attn.q_proj.weight`),
/// f32, HF layouts (linears are `[out, in]`). With tied embeddings `lm_head.weight` is absent:
/// the head is `model.embed_tokens.weight`.
#[derive(Debug, Clone)]
pub struct Pretrained {
    pub config: ModelConfig,
    pub tensors: HashMap<String, Tensor>,
    pub tokenizer: Tokenizer,
    pub generation_config: Option<GenerationConfig>,
    pub source: PathBuf,
}

/// Loads an HF checkpoint directory, a `.gguf` file, or a Hugging Face model id found in the
/// local HF cache (see [`crate::hub`]).
pub fn load_pretrained(path: &Path, device: &Device) -> Result<Pretrained> {
    let path = &crate::hub::resolve_model_path(path)?;
    if path.is_dir() {
        load_hf_dir(path, device)
    } else if path.is_file() {
        crate::gguf::load_gguf(path, device)
    } else {
        bail!(
            "{}: no such checkpoint (expected an HF directory or a .gguf file)",
            path.display()
        )
    }
}

/// Only the model config of a checkpoint (validated), without reading its weights: to check that
/// a checkpoint fits before loading it.
pub fn read_model_config(path: &Path) -> Result<ModelConfig> {
    let path = &crate::hub::resolve_model_path(path)?;
    if path.is_dir() {
        read_hf_config(path)
    } else if path.is_file() {
        crate::gguf::header_config(&crate::gguf::GgufFile::open(path)?)
    } else {
        bail!(
            "{}: no such checkpoint (expected an HF directory or a .gguf file)",
            path.display()
        )
    }
}

fn read_hf_config(dir: &Path) -> Result<ModelConfig> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config = ModelConfig::from_hf_json(&text)
        .with_context(|| format!("{}: not a valid model config", config_path.display()))?;
    config
        .validate()
        .with_context(|| format!("{}: not a usable model config", config_path.display()))?;
    Ok(config)
}

fn load_hf_dir(dir: &Path, device: &Device) -> Result<Pretrained> {
    let config = read_hf_config(dir)?;
    let mut tensors = HashMap::new();
    for file in safetensors_files(dir)? {
        read_safetensors(&file, device, &mut tensors)?;
    }
    // Buffers some exporters save; the model recomputes them.
    tensors.retain(|k, _| !k.ends_with("rotary_emb.inv_freq"));
    if config.tie_word_embeddings {
        tensors.remove("lm_head.weight");
    }
    let tokenizer = Tokenizer::from_hf_dir(dir)?;
    let gen_path = dir.join("generation_config.json");
    let generation_config = gen_path
        .exists()
        .then(|| GenerationConfig::from_file(&gen_path))
        .transpose()?;
    let pretrained = Pretrained {
        config,
        tensors,
        tokenizer,
        generation_config,
        source: dir.to_owned(),
    };
    pretrained.check_tensors()?;
    Ok(pretrained)
}

/// `model.safetensors`, or every shard named by `model.safetensors.index.json`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.exists() {
        bail!(
            "{}: neither model.safetensors nor model.safetensors.index.json",
            dir.display()
        );
    }
    let text =
        std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", index.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| anyhow!("{}: no weight_map object", index.display()))?;
    let mut files: Vec<String> = map
        .iter()
        .map(|(k, v)| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("{}: weight_map[{k:?}] is not a file name", index.display()))
        })
        .collect::<Result<_>>()?;
    files.sort();
    files.dedup();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

fn read_safetensors(path: &Path, device: &Device, out: &mut HashMap<String, Tensor>) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: the file is only read; a checkpoint being rewritten while loading is out of scope.
    let mmap = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    let st = SafeTensors::deserialize(&mmap)
        .map_err(|e| anyhow!("{}: not a readable safetensors file: {e}", path.display()))?;
    for (name, view) in st.tensors() {
        let t = view_to_f32(&view, device)
            .with_context(|| format!("{}: tensor {}", path.display(), quote(&name)))?;
        if out.insert(name.clone(), t).is_some() {
            bail!(
                "{}: tensor {} appears in more than one file",
                path.display(),
                quote(&name)
            );
        }
    }
    Ok(())
}

fn view_to_f32(view: &safetensors::tensor::TensorView<'_>, device: &Device) -> Result<Tensor> {
    use safetensors::Dtype;
    let shape = view.shape().to_vec();
    let data = view.data();
    let dtype = match view.dtype() {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        other => bail!("dtype {other:?} is not a floating-point weight type"),
    };
    let t = Tensor::from_raw_buffer(data, dtype, &shape, &Device::Cpu)?;
    Ok(t.to_dtype(DType::F32)?.to_device(device)?)
}

impl Pretrained {
    /// Every parameter the config implies is present with its shape; a clear error otherwise.
    pub fn check_tensors(&self) -> Result<()> {
        for (name, t) in &self.tensors {
            if !crate::export::all_finite(t)? {
                bail!(
                    "{}: tensor {} holds NaN or infinite values",
                    self.source.display(),
                    quote(name)
                );
            }
        }
        for (name, shape) in expected_shapes(&self.config) {
            let t = self.tensors.get(&name).ok_or_else(|| {
                anyhow!(
                    "{}: missing tensor {name} (expected shape {shape:?})",
                    self.source.display()
                )
            })?;
            if t.dims() != shape.as_slice() {
                bail!(
                    "{}: tensor {name} has shape {:?}, the config implies {shape:?}",
                    self.source.display(),
                    t.dims()
                );
            }
        }
        Ok(())
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn num_parameters(&self) -> usize {
        self.tensors.values().map(|t| t.elem_count()).sum()
    }
}

/// HF parameter names and shapes of a Llama/Qwen2 decoder with `config`.
pub fn expected_shapes(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let h = config.hidden_size;
    let q = config.num_attention_heads * config.head_dim();
    let kv = config.num_kv_heads() * config.head_dim();
    let ff = config.intermediate_size;
    let mut out = vec![
        (
            "model.embed_tokens.weight".to_owned(),
            vec![config.vocab_size, h],
        ),
        ("model.norm.weight".to_owned(), vec![h]),
    ];
    if !config.tie_word_embeddings {
        out.push(("lm_head.weight".to_owned(), vec![config.vocab_size, h]));
    }
    for i in 0..config.num_hidden_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        out.push((p("self_attn.q_proj.weight"), vec![q, h]));
        out.push((p("self_attn.k_proj.weight"), vec![kv, h]));
        out.push((p("self_attn.v_proj.weight"), vec![kv, h]));
        out.push((p("self_attn.o_proj.weight"), vec![h, q]));
        if config.qkv_bias() {
            out.push((p("self_attn.q_proj.bias"), vec![q]));
            out.push((p("self_attn.k_proj.bias"), vec![kv]));
            out.push((p("self_attn.v_proj.bias"), vec![kv]));
        }
        out.push((p("mlp.gate_proj.weight"), vec![ff, h]));
        out.push((p("mlp.up_proj.weight"), vec![ff, h]));
        out.push((p("mlp.down_proj.weight"), vec![h, ff]));
        out.push((p("input_layernorm.weight"), vec![h]));
        out.push((p("post_attention_layernorm.weight"), vec![h]));
    }
    out
}

/// A name or value read from a file, as an error message may quote it: control characters
/// escaped, at most 96 characters (a corrupt header can hold kilobytes of binary "name").
pub fn quote(s: &str) -> String {
    const MAX: usize = 96;
    let escaped: String = s
        .chars()
        .take(MAX)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if s.chars().nth(MAX).is_some() {
        format!("\"{escaped}\"… ({} bytes)", s.len())
    } else {
        format!("\"{escaped}\"")
    }
}
