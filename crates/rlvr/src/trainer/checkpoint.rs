//! Checkpoints under `trainer.ckpt_path/global_step_N/`: policy weights, optimizer and scheduler
//! state, the data loader's position and the resolved config. Each one is written under a
//! temporary name and renamed, and `latest_ckpt_global_step.txt` (SkyRL's pointer file) is
//! replaced atomically, so a run killed at any moment resumes from the last complete checkpoint.

use super::Trainer;
use crate::data::LoaderState;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const LATEST: &str = "latest_ckpt_global_step.txt";

/// What besides tensors a checkpoint records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    pub global_step: usize,
    pub loader: LoaderState,
    pub optimizer: serde_json::Value,
    pub seed: u64,
}

pub fn step_dir(ckpt_root: &Path, step: usize) -> PathBuf {
    ckpt_root.join(format!("global_step_{step}"))
}

/// Writes the checkpoint of the trainer's current step and prunes old ones.
pub fn save(t: &Trainer, ckpt_root: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(ckpt_root)
        .with_context(|| format!("creating {}", ckpt_root.display()))?;
    let final_dir = step_dir(ckpt_root, t.global_step);
    let tmp = ckpt_root.join(format!(".global_step_{}.tmp", t.global_step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;

    let weights: HashMap<String, Tensor> = t.policy.tensors();
    candle_core::safetensors::save(&weights, tmp.join("model.safetensors"))?;
    let (opt_tensors, opt_meta) = t.optimizer.state()?;
    candle_core::safetensors::save(&opt_tensors, tmp.join("optimizer.safetensors"))?;
    let state = TrainerState {
        global_step: t.global_step,
        loader: t.loader_state(),
        optimizer: opt_meta,
        seed: t.cfg.trainer.seed,
    };
    std::fs::write(
        tmp.join("trainer_state.json"),
        serde_json::to_string_pretty(&state)?,
    )?;
    std::fs::write(tmp.join("config.yaml"), serde_yaml::to_string(&t.cfg)?)?;
    sync_dir(&tmp)?;

    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), final_dir.display()))?;
    write_atomic(
        &ckpt_root.join(LATEST),
        t.global_step.to_string().as_bytes(),
    )?;
    prune(ckpt_root, t.cfg.trainer.max_ckpts_to_keep)?;
    tracing::info!("saved checkpoint {}", final_dir.display());
    Ok(final_dir)
}

/// The directory `trainer.resume_mode` points at, if any: `latest` reads SkyRL's pointer file
/// (no checkpoint yet = fresh start), `from_path` uses `trainer.resume_path`, `none`/null = fresh.
pub fn resume_dir(
    mode: Option<&str>,
    resume_path: Option<&str>,
    ckpt_root: &Path,
) -> Result<Option<PathBuf>> {
    match mode.unwrap_or("none") {
        "none" | "null" | "" => Ok(None),
        "latest" => {
            let pointer = ckpt_root.join(LATEST);
            if !pointer.exists() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&pointer)?;
            let step: usize = text.trim().parse().with_context(|| {
                format!(
                    "{}: expected a step number, found {text:?}",
                    pointer.display()
                )
            })?;
            Ok(Some(step_dir(ckpt_root, step)))
        }
        "from_path" => match resume_path {
            Some(p) => Ok(Some(PathBuf::from(p))),
            None => bail!("trainer.resume_mode=from_path needs trainer.resume_path"),
        },
        other => bail!("trainer.resume_mode={other:?}: expected none, latest or from_path"),
    }
}

/// Restores weights, optimizer, loader position and step from `dir`.
pub fn load(t: &mut Trainer, dir: &Path) -> Result<()> {
    let state: TrainerState = serde_json::from_str(
        &std::fs::read_to_string(dir.join("trainer_state.json")).with_context(|| {
            format!(
                "{}: not a checkpoint (no trainer_state.json)",
                dir.display()
            )
        })?,
    )
    .with_context(|| format!("{}/trainer_state.json is malformed", dir.display()))?;
    let device = t.policy.device().clone();
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &device)
        .with_context(|| format!("reading {}/model.safetensors", dir.display()))?;
    for (name, var) in t.policy.named_vars() {
        let w = weights
            .get(name)
            .with_context(|| format!("{}/model.safetensors has no tensor {name}", dir.display()))?;
        var.set(w).with_context(|| format!("restoring {name}"))?;
    }
    let opt = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &device)
        .with_context(|| format!("reading {}/optimizer.safetensors", dir.display()))?;
    t.optimizer.load_state(&opt, &state.optimizer)?;
    t.loader.set_state(state.loader);
    t.global_step = state.global_step;
    tracing::info!(
        "resumed from {} (step {})",
        dir.display(),
        state.global_step
    );
    Ok(())
}

fn prune(root: &Path, keep: i64) -> Result<()> {
    if keep <= 0 {
        return Ok(());
    }
    let mut steps: Vec<usize> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("global_step_")?
                .parse()
                .ok()
        })
        .collect();
    steps.sort_unstable();
    let excess = steps.len().saturating_sub(keep as usize);
    for s in &steps[..excess] {
        std::fs::remove_dir_all(step_dir(root, *s))?;
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        std::fs::File::open(e?.path())?.sync_all()?;
    }
    Ok(())
}
