//! `environment`: which environment scores responses (`env_class`, the default for rows that do
//! not name one) and per-environment settings under `skyrl_gym`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentConfig {
    pub env_class: String,
    pub skyrl_gym: SkyrlGymConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkyrlGymConfig {
    /// SkyRL's background workers for env steps.
    pub max_env_workers: usize,
    pub text2sql: Text2SqlConfig,
    pub llm_as_a_judge: LlmAsAJudgeConfig,
    pub search: SearchConfig,
    /// rlvr-only.
    pub gsm8k: Gsm8kConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text2SqlConfig {
    pub db_path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmAsAJudgeConfig {
    pub model: String,
    pub base_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    pub log_requests: bool,
    pub search_url: String,
    pub topk: usize,
    pub timeout: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gsm8kConfig {
    /// `strict` (SkyRL: the number after `#### `), `flexible` (the last number in the text) or
    /// rlvr's `numeric`.
    pub method: rlvr_algo::rewards::gsm8k::Method,
    /// Partial credit for a formatted but wrong answer (`compute_score`'s `format_score`).
    pub format_score: f64,
}
