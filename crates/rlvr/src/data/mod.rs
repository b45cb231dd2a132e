//! Datasets in SkyRL's schema: one row per prompt, with the chat messages, the environment that
//! scores it and the ground truth.

mod io;
mod loader;
pub mod prepare;

pub use io::{read_rows, write_rows};
pub use loader::{LoaderState, PromptLoader};

use serde::{Deserialize, Serialize};

/// One chat message, as SkyRL stores it in the `prompt` column.
pub use rlvr_model::ChatMessage as Message;

/// `reward_spec` column: how the environment scores, and against what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardSpec {
    pub method: String,
    pub ground_truth: String,
}

/// One dataset row (SkyRL's schema: `data_source`, `prompt`, `env_class`, `reward_spec`, `extra_info`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRow {
    pub data_source: String,
    pub prompt: Vec<Message>,
    pub env_class: String,
    pub reward_spec: RewardSpec,
    #[serde(default)]
    pub extra_info: serde_json::Value,
}
