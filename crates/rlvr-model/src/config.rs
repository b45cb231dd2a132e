//! Decoder hyper-parameters, as Hugging Face's `config.json` names them (Llama, SmolLM/SmolLM2,
//! Qwen2, Mistral-style GQA all fit this one struct).

use serde::{Deserialize, Serialize};

/// RoPE scaling as HF writes it under `rope_scaling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.x frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `llama`, `qwen2`, `mistral`: decides the defaults for biases.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (no GQA) when absent.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads` when absent.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2: true; Llama: false).
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// HF allows a single id or a list.
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// Std of HF's weight init (a critic's value head absent from the checkpoint is drawn with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initializer_range: Option<f64>,
}

fn default_model_type() -> String {
    "llama".into()
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_max_position_embeddings() -> usize {
    2048
}
fn default_hidden_act() -> String {
    "silu".into()
}

/// The longest context a config may claim: RoPE tables are built for all of it up front (1M
/// positions of a 128-wide head are 1 GiB), so a corrupt value must be an error, not an abort.
pub const MAX_POSITIONS: usize = 1 << 20;

/// The architectures this decoder implements.
const MODEL_TYPES: &[&str] = &["llama", "qwen2", "mistral"];

impl ModelConfig {
    /// Checks what the decoder relies on, so a corrupt or foreign config is an error naming the
    /// field rather than a panic, an abort or a silently wrong model.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut bad = Vec::new();
        if !MODEL_TYPES.contains(&self.model_type.as_str()) {
            bad.push(format!(
                "model_type `{}` is not supported (expected one of {})",
                self.model_type.escape_debug(),
                MODEL_TYPES.join(", ")
            ));
        }
        if self.hidden_act != "silu" {
            bad.push(format!(
                "hidden_act `{}` is not supported (expected silu)",
                self.hidden_act.escape_debug()
            ));
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_kv_heads()),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                bad.push(format!("{name} must be at least 1"));
            }
        }
        let (heads, kv) = (self.num_attention_heads, self.num_kv_heads());
        if heads > 0 && kv > 0 && !heads.is_multiple_of(kv) {
            bad.push(format!(
                "num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv})"
            ));
        }
        match self.head_dim {
            Some(d) if d == 0 || !d.is_multiple_of(2) => {
                bad.push(format!("head_dim must be even and at least 2, got {d}"))
            }
            None if heads > 0 && (!self.hidden_size.is_multiple_of(heads) || !(self.hidden_size / heads).is_multiple_of(2)) => {
                bad.push(format!(
                    "hidden_size ({}) / num_attention_heads ({heads}) must be a whole, even head size",
                    self.hidden_size
                ))
            }
            _ => {}
        }
        if self.max_position_embeddings > MAX_POSITIONS {
            bad.push(format!(
                "max_position_embeddings {} is beyond {MAX_POSITIONS}",
                self.max_position_embeddings
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            bad.push(format!(
                "rms_norm_eps must be finite and > 0, got {}",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            bad.push(format!(
                "rope_theta must be finite and > 0, got {}",
                self.rope_theta
            ));
        }
        let factor_ok = |f: f64| f.is_finite() && f > 0.0;
        match &self.rope_scaling {
            Some(RopeScaling::Linear { factor }) if !factor_ok(*factor) => {
                bad.push(format!("rope_scaling.factor must be finite and > 0, got {factor}"))
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) if !(factor_ok(*factor)
                && factor_ok(*low_freq_factor)
                && factor_ok(*high_freq_factor)
                && high_freq_factor > low_freq_factor
                && *original_max_position_embeddings > 0) =>
            {
                bad.push("rope_scaling (llama3): factors must be finite and > 0, high_freq_factor > low_freq_factor, original_max_position_embeddings > 0".into())
            }
            _ => {}
        }
        if bad.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", bad.join("; "))
        }
    }

    /// Parses a Hugging Face `config.json`. transformers 5 writes `rope_theta` and the RoPE
    /// scaling under `rope_parameters` (`{"rope_type": "default", "rope_theta": 1e6}`) instead
    /// of at the top level; read from there, or a model would silently get the default base of
    /// 10,000 and wrong positions.
    pub fn from_hf_json(text: &str) -> serde_json::Result<Self> {
        use serde::de::Error;
        let mut v: serde_json::Value = serde_json::from_str(text)?;
        if let Some(top) = v.as_object_mut() {
            if let Some(p) = top.remove("rope_parameters").filter(|p| !p.is_null()) {
                let theta = p
                    .get("rope_theta")
                    .filter(|t| t.is_number())
                    .ok_or_else(|| {
                        serde_json::Error::custom(
                        "rope_parameters has no number `rope_theta` (parameters per layer type \
                         are not supported)",
                    )
                    })?;
                top.entry("rope_theta").or_insert_with(|| theta.clone());
                if p.get("rope_type").and_then(|t| t.as_str()) != Some("default") {
                    top.entry("rope_scaling").or_insert(p);
                }
            }
            let default_scaling = top
                .get("rope_scaling")
                .and_then(|s| s.get("rope_type"))
                .and_then(|t| t.as_str())
                == Some("default");
            if default_scaling {
                top.remove("rope_scaling");
            }
        }
        serde_json::from_value(v)
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Qwen2 has q/k/v biases unless told otherwise; Llama has none.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias.unwrap_or(self.model_type == "qwen2")
    }

    /// All EOS ids named by the config (a single id or a list).
    pub fn eos_token_ids(&self) -> Vec<u32> {
        eos_ids(self.eos_token_id.as_ref())
    }
}

/// The ids of an `eos_token_id` entry (`config.json`, `generation_config.json`): one id or a list.
pub(crate) fn eos_ids(entry: Option<&serde_json::Value>) -> Vec<u32> {
    match entry {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama() -> serde_json::Value {
        serde_json::json!({
            "model_type": "llama", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 128
        })
    }

    fn check(edit: impl Fn(&mut serde_json::Value)) -> Result<(), String> {
        let mut v = llama();
        edit(&mut v);
        let c: ModelConfig = serde_json::from_value(v).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())
    }

    /// transformers 5's `rope_parameters` give the same config as the top-level keys of 4.x.
    #[test]
    fn rope_parameters_are_read_as_the_top_level_keys() {
        let parse = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = llama();
            edit(&mut v);
            ModelConfig::from_hf_json(&v.to_string())
        };
        let plain = parse(&|v| v["rope_theta"] = serde_json::json!(1e6)).unwrap();
        let v5 = parse(&|v| {
            v["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 1e6})
        })
        .unwrap();
        assert_eq!((v5.rope_theta, &v5.rope_scaling), (1e6, &None));
        assert_eq!(v5, plain);
        let scaled = parse(&|v| {
            v["rope_parameters"] = serde_json::json!({
                "rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192
            })
        })
        .unwrap();
        assert_eq!(scaled.rope_theta, 5e5);
        assert!(matches!(
            scaled.rope_scaling,
            Some(RopeScaling::Llama3 { factor, .. }) if factor == 8.0
        ));
        let linear = parse(&|v| {
            v["rope_parameters"] =
                serde_json::json!({"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0})
        })
        .unwrap();
        assert_eq!(
            linear.rope_scaling,
            Some(RopeScaling::Linear { factor: 2.0 })
        );
        for (bad, says) in [
            (
                serde_json::json!({"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}),
                "yarn",
            ),
            (
                serde_json::json!({"full_attention": {"rope_theta": 1e4}}),
                "rope_theta",
            ),
        ] {
            let err = parse(&|v| v["rope_parameters"] = bad.clone()).unwrap_err();
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_sound_config_passes_and_corrupt_ones_name_the_field() {
        check(|_| {}).unwrap();
        for (key, value, says) in [
            (
                "num_attention_heads",
                serde_json::json!(0),
                "num_attention_heads",
            ),
            (
                "num_key_value_heads",
                serde_json::json!(3),
                "multiple of num_key_value_heads",
            ),
            ("hidden_size", serde_json::json!(18), "head size"),
            (
                "max_position_embeddings",
                serde_json::json!(1u64 << 50),
                "max_position_embeddings",
            ),
            ("rms_norm_eps", serde_json::json!(-1.0), "rms_norm_eps"),
            ("rope_theta", serde_json::json!(0.0), "rope_theta"),
            ("model_type", serde_json::json!("gpt2"), "model_type `gpt2`"),
            ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
            (
                "num_hidden_layers",
                serde_json::json!(0),
                "num_hidden_layers",
            ),
            ("head_dim", serde_json::json!(3), "head_dim"),
        ] {
            let err = check(|v| v[key] = value.clone()).unwrap_err();
            assert!(err.contains(says), "{key}={value}: {err}");
        }
    }
}
