//! Checkpoints under `trainer.ckpt_path/global_step_N/`: policy weights, optimizer and scheduler
//! state, the data loader's position and the resolved config. Each one is written under a
//! temporary name and renamed, and `latest_ckpt_global_step.txt` (SkyRL's pointer file) is
//! replaced atomically, so a run killed at any moment resumes from the last complete checkpoint.

use super::Trainer;
use crate::config::ResumeMode;
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
    /// The critic optimizer's state, when the run has a critic (its tensors are under `critic/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critic_optimizer: Option<serde_json::Value>,
}

pub fn step_dir(ckpt_root: &Path, step: usize) -> PathBuf {
    ckpt_root.join(format!("global_step_{step}"))
}

/// Writes the checkpoint of the trainer's current step and prunes old ones.
pub fn save(t: &Trainer, ckpt_root: &Path) -> Result<PathBuf> {
    let final_dir = step_dir(ckpt_root, t.global_step);
    // Data-parallel ranks hold the same state; rank 0 writes it.
    if !t.group.is_main() {
        return Ok(final_dir);
    }
    std::fs::create_dir_all(ckpt_root)
        .with_context(|| format!("creating {}", ckpt_root.display()))?;
    let weights: HashMap<String, Tensor> = t.policy.tensors();
    let critic_weights = t.critic.as_ref().map(|c| c.model.tensors());
    // A diverged policy or critic must not replace the last good checkpoint.
    for (name, w) in weights.iter().chain(critic_weights.iter().flatten()) {
        if !rlvr_model::all_finite(w)? {
            bail!(
                "not saving the step-{} checkpoint: weight {name} holds NaN or infinite values \
                 (the run has diverged; the last checkpoint saved is kept)",
                t.global_step
            );
        }
    }
    let tmp = ckpt_root.join(format!(".global_step_{}.tmp", t.global_step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let (opt_tensors, opt_meta) = t.optimizer.state()?;
    let critic_opt = t.critic.as_ref().map(|c| c.optimizer.state()).transpose()?;
    let state = TrainerState {
        global_step: t.global_step,
        loader: t.loader_state(),
        optimizer: opt_meta,
        seed: t.cfg.trainer.seed,
        critic_optimizer: critic_opt.as_ref().map(|(_, meta)| meta.clone()),
    };
    let written = (|| -> Result<()> {
        let file = tmp.join("model.safetensors");
        candle_core::safetensors::save(&weights, &file)
            .with_context(|| format!("writing {}", file.display()))?;
        let file = tmp.join("optimizer.safetensors");
        candle_core::safetensors::save(&opt_tensors, &file)
            .with_context(|| format!("writing {}", file.display()))?;
        // As SkyRL: the critic's weights and optimizer in `critic/`.
        if let (Some(w), Some((opt, _))) = (&critic_weights, &critic_opt) {
            let dir = tmp.join("critic");
            std::fs::create_dir_all(&dir)?;
            for (name, tensors) in [("model.safetensors", w), ("optimizer.safetensors", opt)] {
                let file = dir.join(name);
                candle_core::safetensors::save(tensors, &file)
                    .with_context(|| format!("writing {}", file.display()))?;
            }
            sync_dir(&dir)?;
        }
        write_file(
            &tmp.join("trainer_state.json"),
            serde_json::to_string_pretty(&state)?.as_bytes(),
        )?;
        write_file(
            &tmp.join("config.yaml"),
            serde_yaml::to_string(&t.cfg)?.as_bytes(),
        )?;
        sync_dir(&tmp)
    })();
    if let Err(e) = written {
        // Disk full and the like: leave no partial directory behind; earlier checkpoints stay.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }

    if final_dir.exists() {
        remove_checkpoint(ckpt_root, t.global_step)?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), final_dir.display()))?;
    sync_parent(ckpt_root)?;
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
    mode: Option<ResumeMode>,
    resume_path: Option<&str>,
    ckpt_root: &Path,
) -> Result<Option<PathBuf>> {
    match mode.unwrap_or(ResumeMode::None) {
        ResumeMode::None => Ok(None),
        ResumeMode::Latest => {
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
        ResumeMode::FromPath => match resume_path {
            Some(p) => Ok(Some(PathBuf::from(p))),
            None => bail!("trainer.resume_mode=from_path needs trainer.resume_path"),
        },
    }
}

/// Resumes as `trainer.resume_mode` says. With `latest`, a latest checkpoint that cannot be read
/// (a disk fault, a file cut short) is reported and the newest intact earlier one is used.
pub fn resume(
    t: &mut Trainer,
    mode: Option<ResumeMode>,
    resume_path: Option<&str>,
    ckpt_root: &Path,
) -> Result<()> {
    let Some(dir) = resume_dir(mode, resume_path, ckpt_root)? else {
        return Ok(());
    };
    let first = match load(t, &dir) {
        Ok(()) => return Ok(()),
        Err(e) if mode == Some(ResumeMode::Latest) => e,
        Err(e) => return Err(e),
    };
    let newest = step_of(&dir).unwrap_or(usize::MAX);
    let mut earlier: Vec<usize> = checkpoint_steps(ckpt_root)?
        .into_iter()
        .filter(|&s| s < newest)
        .collect();
    earlier.sort_unstable_by(|a, b| b.cmp(a));
    for step in earlier {
        let older = step_dir(ckpt_root, step);
        tracing::warn!(
            "the latest checkpoint cannot be used ({first:#}); trying {}",
            older.display()
        );
        match load(t, &older) {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!("{} cannot be used either: {e:#}", older.display()),
        }
    }
    Err(first.context(
        "no intact checkpoint to resume from (set trainer.resume_mode=none to start afresh)",
    ))
}

fn step_of(dir: &Path) -> Option<usize> {
    dir.file_name()?
        .to_str()?
        .strip_prefix("global_step_")?
        .parse()
        .ok()
}

/// Restores weights, optimizer, loader position and step from `dir`. Everything is read and
/// checked before the trainer is touched, so a bad checkpoint leaves it as it was.
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
    check_state(t, &state).with_context(|| format!("{}/trainer_state.json", dir.display()))?;
    let device = t.policy.device().clone();
    let restored = read_weights(
        &dir.join("model.safetensors"),
        t.policy.named_vars(),
        &device,
    )?;
    let opt = read_optimizer(
        &dir.join("optimizer.safetensors"),
        &t.optimizer,
        &state.optimizer,
        &device,
    )?;
    let critic = match (&t.critic, &state.critic_optimizer) {
        (None, _) => None,
        (Some(c), Some(meta)) => {
            let d = dir.join("critic");
            let w = read_weights(&d.join("model.safetensors"), &c.model.named_vars(), &device)?;
            let o = read_optimizer(
                &d.join("optimizer.safetensors"),
                &c.optimizer,
                meta,
                &device,
            )?;
            Some((w, o, meta))
        }
        (Some(_), None) => bail!(
            "{}: the checkpoint has no critic, and this run trains one \
             (trainer.critic.model.path): resume it with the config it was saved with",
            dir.display()
        ),
    };
    for (var, w) in restored {
        var.set(&w)?;
    }
    t.optimizer.load_state(&opt, &state.optimizer)?;
    if let (Some(c), Some((w, o, meta))) = (t.critic.as_mut(), critic) {
        for (var, w) in w {
            var.set(&w)?;
        }
        c.optimizer.load_state(&o, meta)?;
    }
    t.loader.set_state(state.loader);
    t.global_step = state.global_step;
    tracing::info!(
        "resumed from {} (step {})",
        dir.display(),
        state.global_step
    );
    Ok(())
}

/// The tensors of `file` for `vars` (HF names), each present, of the variable's shape and dtype,
/// and finite.
fn read_weights(
    file: &Path,
    vars: &[(String, candle_core::Var)],
    device: &candle_core::Device,
) -> Result<Vec<(candle_core::Var, Tensor)>> {
    let weights = candle_core::safetensors::load(file, device)
        .with_context(|| format!("reading {}", file.display()))?;
    let mut restored = Vec::new();
    for (name, var) in vars {
        let w = weights
            .get(name)
            .with_context(|| format!("{} has no tensor {name}", file.display()))?;
        if w.dims() != var.dims() || w.dtype() != var.dtype() {
            bail!(
                "{}: tensor {name} is {:?} {:?}, the model's is {:?} {:?}",
                file.display(),
                w.dtype(),
                w.dims(),
                var.dtype(),
                var.dims()
            );
        }
        if !rlvr_model::all_finite(w)? {
            bail!(
                "{}: tensor {name} holds NaN or infinite values",
                file.display()
            );
        }
        restored.push((var.clone(), w.clone()));
    }
    Ok(restored)
}

/// An optimizer state file, checked against `optimizer` (which it does not change).
fn read_optimizer(
    file: &Path,
    optimizer: &crate::optimizer::Optimizer,
    meta: &serde_json::Value,
    device: &candle_core::Device,
) -> Result<HashMap<String, Tensor>> {
    let opt = candle_core::safetensors::load(file, device)
        .with_context(|| format!("reading {}", file.display()))?;
    optimizer
        .check_state(&opt, meta)
        .with_context(|| file.display().to_string())?;
    Ok(opt)
}

/// A state this run could have written: no step beyond the run's last, no loader position
/// beyond its data.
fn check_state(t: &Trainer, s: &TrainerState) -> Result<()> {
    let total = t.total_steps();
    if s.global_step > total {
        bail!(
            "global_step {} is beyond this run's {total} steps (trainer.epochs × batches per \
             epoch): the checkpoint belongs to another run or data set",
            s.global_step
        );
    }
    let (epochs, per_epoch) = (t.cfg.trainer.epochs, t.loader.batches_per_epoch());
    if s.loader.epoch > epochs || s.loader.batch_in_epoch > per_epoch {
        bail!(
            "the data loader position (epoch {}, batch {}) is beyond this run's {epochs} epochs \
             of {per_epoch} batches",
            s.loader.epoch,
            s.loader.batch_in_epoch
        );
    }
    Ok(())
}

/// Steps of the `global_step_N` directories under `root`.
fn checkpoint_steps(root: &Path) -> Result<Vec<usize>> {
    Ok(std::fs::read_dir(root)
        .with_context(|| format!("listing {}", root.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| step_of(&e.path()))
        .collect())
}

/// Keeps the newest `keep` checkpoints (all when `keep <= 0`), and clears what an interrupted
/// earlier removal left.
fn prune(root: &Path, keep: i64) -> Result<()> {
    for e in std::fs::read_dir(root)?.filter_map(|e| e.ok()) {
        let name = e.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(".deleting")) {
            std::fs::remove_dir_all(e.path())
                .with_context(|| format!("removing {}", e.path().display()))?;
        }
    }
    if keep <= 0 {
        return Ok(());
    }
    let mut steps = checkpoint_steps(root)?;
    steps.sort_unstable();
    let excess = steps.len().saturating_sub(keep as usize);
    for s in &steps[..excess] {
        remove_checkpoint(root, *s)?;
    }
    Ok(())
}

/// Removes a checkpoint so that a kill at any moment leaves either all of it or none of it under
/// its name: it is renamed out of the way first, then deleted.
fn remove_checkpoint(root: &Path, step: usize) -> Result<()> {
    let dir = step_dir(root, step);
    let doomed = root.join(format!(".global_step_{step}.deleting"));
    std::fs::rename(&dir, &doomed)
        .with_context(|| format!("renaming {} to {}", dir.display(), doomed.display()))?;
    sync_parent(root)?;
    std::fs::remove_dir_all(&doomed).with_context(|| format!("removing {}", doomed.display()))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    write_file(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_parent(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        std::fs::File::open(&path)?
            .sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
    }
    sync_parent(dir)
}

/// Makes a rename or a new entry in `dir` durable (the entry lives in the directory's data).
fn sync_parent(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigBuilder;
    use crate::run::{self, Extensions};

    /// A toy trainer whose checkpoints go under `dir/ckpt`.
    fn trainer(dir: &Path) -> Trainer {
        trainer_with(dir, &[])
    }

    fn trainer_with(dir: &Path, extra: &[String]) -> Trainer {
        crate::toy::write(dir, 3).unwrap();
        let mut b = ConfigBuilder::new();
        b.merge_file(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/toy/dapo_toy.yaml"),
        )
        .unwrap();
        let mut overrides = crate::toy::run_overrides(dir);
        overrides.push("trainer.max_ckpts_to_keep=2".into());
        // The tests resume by hand.
        overrides.push("trainer.resume_mode=none".into());
        overrides.extend_from_slice(extra);
        b.apply_overrides(&overrides).unwrap();
        let resolved = b.resolve().unwrap();
        let ext = Extensions::defaults(&resolved.config).unwrap();
        run::build(&resolved, ext).unwrap()
    }

    fn entries(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn first_weight(t: &Trainer) -> Vec<f32> {
        let (_, var) = t.policy.named_vars().first().unwrap().clone();
        var.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// The critic's weights and optimizer state go into `critic/` and come back on resume; a
    /// checkpoint without them does not resume a run that trains a critic.
    #[test]
    fn a_critic_is_saved_and_restored_with_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let with_critic = [
            "trainer.algorithm.advantage_estimator=gae".to_string(),
            format!("trainer.critic.model.path={}/model", dir.path().display()),
            "trainer.critic.optimizer_config.lr=1.0e-2".into(),
            "trainer.critic_mini_batch_size=4".into(),
        ];
        let critic_weights = |t: &Trainer| -> Vec<Vec<f32>> {
            t.critic
                .as_ref()
                .unwrap()
                .model
                .named_vars()
                .iter()
                .map(|(_, v)| v.flatten_all().unwrap().to_vec1().unwrap())
                .collect()
        };
        let mut t = trainer_with(dir.path(), &with_critic);
        let untrained = critic_weights(&t);
        t.step().unwrap().unwrap();
        let trained = critic_weights(&t);
        assert_ne!(trained, untrained, "a step trains the critic");
        let saved = save(&t, &dir.path().join("ckpt")).unwrap();
        assert!(saved.join("critic/model.safetensors").is_file());
        assert!(saved.join("critic/optimizer.safetensors").is_file());

        let mut fresh = trainer_with(dir.path(), &with_critic);
        assert_eq!(critic_weights(&fresh), untrained);
        load(&mut fresh, &saved).unwrap();
        assert_eq!(critic_weights(&fresh), trained);
        let (a, b) = (
            t.critic.as_ref().unwrap().optimizer.state().unwrap(),
            fresh.critic.as_ref().unwrap().optimizer.state().unwrap(),
        );
        assert_eq!(a.1, b.1, "step counts");
        let key = "value_head.weight.exp_avg_sq";
        assert_eq!(
            a.0[key].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.0[key].flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );

        // A checkpoint of a critic-free run cannot resume this one.
        let other = tempfile::tempdir().unwrap();
        let mut plain = trainer(other.path());
        plain.step().unwrap().unwrap();
        let plain_ckpt = save(&plain, &other.path().join("ckpt")).unwrap();
        let err = load(&mut fresh, &plain_ckpt).unwrap_err().to_string();
        assert!(err.contains("no critic"), "{err}");
        assert_eq!(
            critic_weights(&fresh),
            trained,
            "a refused checkpoint changes nothing"
        );
    }

    #[test]
    fn pruning_is_whole_and_a_diverged_policy_is_never_saved() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ckpt");
        let mut t = trainer(dir.path());
        // What a kill in the middle of an earlier removal leaves behind.
        std::fs::create_dir_all(root.join(".global_step_0.deleting/x")).unwrap();
        for step in 1..=3 {
            t.global_step = step;
            save(&t, &root).unwrap();
        }
        assert_eq!(
            entries(&root),
            [
                "global_step_2",
                "global_step_3",
                "latest_ckpt_global_step.txt"
            ]
        );
        // NaN weights: refused, the previous checkpoint stays the latest, nothing half-written.
        let (name, var) = t.policy.named_vars().first().unwrap().clone();
        let nan = (var.as_tensor() * f64::NAN).unwrap();
        var.set(&nan).unwrap();
        t.global_step = 4;
        let err = save(&t, &root).unwrap_err();
        assert!(
            format!("{err:#}").contains(&format!("weight {name} holds NaN")),
            "{err:#}"
        );
        assert_eq!(
            entries(&root),
            [
                "global_step_2",
                "global_step_3",
                "latest_ckpt_global_step.txt"
            ]
        );
        assert_eq!(std::fs::read_to_string(root.join(LATEST)).unwrap(), "3");
    }

    #[test]
    fn a_corrupt_latest_checkpoint_falls_back_to_the_previous_and_absurd_states_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ckpt");
        let mut t = trainer(dir.path());
        let at_step_1 = first_weight(&t);
        t.global_step = 1;
        save(&t, &root).unwrap();
        // Different weights at step 2.
        let (_, var) = t.policy.named_vars().first().unwrap().clone();
        var.set(&(var.as_tensor() + 1.0).unwrap()).unwrap();
        t.global_step = 2;
        save(&t, &root).unwrap();

        // Step 2's weights cut short: `latest` resumes from step 1, with step 1's weights.
        let file = step_dir(&root, 2).join("model.safetensors");
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
        let mut fresh = trainer(dir.path());
        var_set_to(&fresh, 7.0);
        load(&mut trainer(dir.path()), &step_dir(&root, 1)).unwrap();
        resume(&mut fresh, Some(ResumeMode::Latest), None, &root).unwrap();
        assert_eq!(fresh.global_step, 1);
        assert_eq!(first_weight(&fresh), at_step_1);
        // `from_path` names one checkpoint: no fallback.
        let step2 = step_dir(&root, 2).display().to_string();
        assert!(resume(&mut fresh, Some(ResumeMode::FromPath), Some(&step2), &root).is_err());

        // A state no run of this config could have written: refused, the trainer untouched.
        let state_file = step_dir(&root, 1).join("trainer_state.json");
        let mut state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
        state["global_step"] = 1000.into();
        std::fs::write(&state_file, state.to_string()).unwrap();
        let mut other = trainer(dir.path());
        var_set_to(&other, 7.0);
        let err = load(&mut other, &step_dir(&root, 1)).unwrap_err();
        assert!(
            format!("{err:#}").contains("global_step 1000 is beyond"),
            "{err:#}"
        );
        assert_eq!(other.global_step, 0);
        assert!(first_weight(&other).iter().all(|&x| x == 7.0));
        state["global_step"] = 1.into();
        state["loader"]["batch_in_epoch"] = 1_000_000_000.into();
        std::fs::write(&state_file, state.to_string()).unwrap();
        let err = load(&mut other, &step_dir(&root, 1)).unwrap_err();
        assert!(format!("{err:#}").contains("loader position"), "{err:#}");
        // Neither checkpoint usable now: the error says so.
        let err = resume(&mut other, Some(ResumeMode::Latest), None, &root).unwrap_err();
        assert!(
            format!("{err:#}").contains("no intact checkpoint"),
            "{err:#}"
        );
    }

    fn var_set_to(t: &Trainer, value: f64) {
        let (_, var) = t.policy.named_vars().first().unwrap().clone();
        let v = (var.as_tensor().zeros_like().unwrap() + value).unwrap();
        var.set(&v).unwrap();
    }
}
