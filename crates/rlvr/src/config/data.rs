//! `data`: the training and evaluation datasets (parquet or jsonl files in SkyRL's row schema).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    pub train_data: Vec<String>,
    pub val_data: Vec<String>,
}
