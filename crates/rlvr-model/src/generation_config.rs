//! `generation_config.json`: the decoding defaults shipped with a checkpoint. Fields rlvr reads
//! are typed; everything else is kept verbatim so a load → save round trip loses nothing.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// HF allows a single id or a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_sample: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f64>,
    /// Every other key, as read.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl GenerationConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid generation config", path.display()))
    }

    /// All EOS ids (a single id or a list).
    pub fn eos_token_ids(&self) -> Vec<u32> {
        crate::config::eos_ids(self.eos_token_id.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unknown_keys_and_reads_eos_lists() {
        let json = r#"{"bos_token_id": 1, "eos_token_id": [2, 7], "temperature": 0.6, "transformers_version": "4.0"}"#;
        let g: GenerationConfig = serde_json::from_str(json).unwrap();
        assert_eq!(g.bos_token_id, Some(1));
        assert_eq!(g.eos_token_ids(), vec![2, 7]);
        assert_eq!(g.temperature, Some(0.6));
        let back: serde_json::Value = serde_json::to_value(&g).unwrap();
        let orig: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(back, orig);
    }
}
