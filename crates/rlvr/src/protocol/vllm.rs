//! vLLM's OpenAI-compatible completions API: the subset RL rollouts need (token-id prompts, one
//! log-prob per sampled token, finish reasons), field for field as vLLM documents it. `rlvr serve`
//! answers these requests and the remote generator sends them, so both sides share these types.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `prompt`: text, token ids, or a batch of either.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    TextBatch(Vec<String>),
    TokensBatch(Vec<Vec<u32>>),
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// `POST /v1/completions`. Unset fields take vLLM's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Option<Prompt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// -1 (or 0) disables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_token_ids: Option<Vec<u32>>,
    /// Number of top log-probs per token besides the sampled one; `0` gives the sampled token's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_stop_str_in_output: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_special_tokens: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    /// Log-prob tokens spelled `token_id:{id}` instead of text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_tokens_as_token_ids: Option<bool>,
    /// Adds `token_ids` (and `prompt_token_ids`) to each choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_token_ids: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: Option<String>,
    /// The stop token id or stop string that ended the choice; `null` for EOS or length.
    #[serde(default)]
    pub stop_reason: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    pub text_offset: Vec<usize>,
    pub token_logprobs: Vec<Option<f32>>,
    pub tokens: Vec<String>,
    pub top_logprobs: Vec<Option<BTreeMap<String, f32>>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    #[serde(default)]
    pub root: Option<String>,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub max_model_len: Option<usize>,
}

/// vLLM's error body (v0.10.1 and later; earlier versions sent the inner object at top level).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub param: Option<String>,
    pub code: u16,
}

impl ErrorResponse {
    pub fn new(code: u16, kind: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorInfo {
                message: message.into(),
                kind: kind.into(),
                param: None,
                code,
            },
        }
    }
}

/// `POST /collective_rpc` (dev mode): `{"method": "reload_weights"}` reloads the checkpoint the
/// server was started on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectiveRpcRequest {
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
}

/// `POST /update_weight_version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateWeightVersionRequest {
    pub new_version: String,
}

/// `GET /weight_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightInfo {
    pub weight_version: Option<String>,
}

/// `token_id:1234` (the spelling `return_tokens_as_token_ids` asks for) → 1234.
pub fn parse_token_id(token: &str) -> Option<u32> {
    token.strip_prefix("token_id:")?.parse().ok()
}

impl CompletionChoice {
    /// The sampled token ids: `token_ids` when the server sent them, else the `token_id:N`
    /// spellings of the log-prob tokens.
    pub fn sampled_token_ids(&self) -> Option<Vec<u32>> {
        if let Some(ids) = &self.token_ids {
            return Some(ids.clone());
        }
        let lp = self.logprobs.as_ref()?;
        lp.tokens.iter().map(|t| parse_token_id(t)).collect()
    }
}
