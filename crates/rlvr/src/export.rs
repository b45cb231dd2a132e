//! HF-format export of the policy (`trainer.export_path`), loadable by transformers and vLLM.

use crate::trainer::Trainer;
use anyhow::Result;
use std::path::PathBuf;

/// Writes `export_path/global_step_N/policy` when `trainer.export_path` is set.
pub fn export_policy(t: &Trainer) -> Result<Option<PathBuf>> {
    let Some(tokenizer) = &t.tokenizer else {
        return Ok(None);
    };
    if t.cfg.trainer.export_path.is_empty() || !t.group.is_main() {
        return Ok(None);
    }
    let dir = PathBuf::from(&t.cfg.trainer.export_path)
        .join(format!("global_step_{}", t.global_step))
        .join("policy");
    rlvr_model::save_hf(
        &dir,
        t.policy.config(),
        &t.policy.tensors(),
        tokenizer,
        None,
    )?;
    tracing::info!("exported the policy to {}", dir.display());
    Ok(Some(dir))
}
