//! The training loop, one step top to bottom in SkyRL's order:
//!
//! 1. take `train_batch_size` prompts, `n_samples_per_prompt` samples each (uid = prompt id);
//! 2. generate with this step's weights and score with the environment;
//! 3. dynamic sampling (may loop back to 1 within the same global step);
//! 4. `postprocess_generator_output` (soft overlong punishment), reward metrics;
//! 5. overlong filtering of loss masks;
//! 6. old-policy and reference log-probs;
//! 7. advantages;
//! 8. policy update over mini-batches and micro-batches;
//! 9. weight sync (the embedded engine rebuilds its bf16 decoding copy; remote engines reload
//!    the exported weights), eval, log, checkpoint.

mod batch;
pub mod checkpoint;
pub mod critic;
mod hooks;
mod update;

pub use batch::{build as build_batch, TrainBatch};
pub use hooks::{default_postprocess, DefaultHooks, HookContext, TrainerHooks};

use crate::config::Config;
use crate::data::{LoaderState, PromptLoader, PromptRow};
use crate::dist::{self, ProcessGroup};
use crate::env::EnvRegistry;
use crate::eval;
use crate::generator::{Generator, GeneratorOutput, PromptGroup, Sampling, StopReason};
use crate::logging::{Logger, Metrics};
use crate::optimizer::Optimizer;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rlvr_algo::dynamic_sampling::{DynamicSampler, Outcome};
use rlvr_model::Model;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Everything a run is made of. Built by [`crate::run::build`] from a config; tests build it
/// directly with tiny models.
pub struct Trainer {
    pub cfg: Config,
    pub policy: Arc<Model>,
    /// Frozen copy of the initial policy, only when `use_kl_loss` or `use_kl_in_reward`.
    pub reference: Option<Model>,
    /// The KL-in-reward coefficient (`kl_ctrl`); as in SkyRL it starts afresh each launch.
    pub reward_kl: rlvr_algo::kl::KlController,
    pub optimizer: Optimizer,
    /// The value model and its optimizer, when `trainer.critic.model.path` is set (GAE).
    pub critic: Option<critic::Critic>,
    pub generator: Box<dyn Generator>,
    pub loader: PromptLoader,
    pub val_rows: Vec<PromptRow>,
    pub hooks: Box<dyn TrainerHooks>,
    pub loggers: Vec<Box<dyn Logger>>,
    pub sampler: DynamicSampler<usize>,
    pub pad_id: u32,
    pub global_step: usize,
    /// Where checkpoints go (`trainer.ckpt_path`); `None` disables checkpointing.
    pub ckpt_dir: Option<PathBuf>,
    /// Where eval dumps go.
    pub run_dir: PathBuf,
    /// Set by Ctrl-C: the loop stops after the current step (and its checkpoint).
    pub stop: Arc<AtomicBool>,
    pub envs: EnvRegistry,
    /// `+trainer.max_steps` (rlvr-only): stop after this many global steps.
    pub max_steps: Option<usize>,
    /// `+trainer.shared_prompt` (rlvr-only, default true): one prompt pass per group of samples
    /// in the trainer's forward and backward passes.
    pub share_prompts: bool,
    /// The step and mean reward (`eval/all/avg_score`) of the last evaluation, if any ran.
    pub last_eval: Option<(usize, f64)>,
    /// Needed for HF export; `None` in tests that do not export.
    pub tokenizer: Option<Arc<rlvr_model::Tokenizer>>,
    /// The data-parallel ranks (one process: [`crate::dist::Solo`]). Rank 0 logs, writes
    /// evaluation dumps, checkpoints and exports.
    pub group: Rc<dyn ProcessGroup>,
}

impl Trainer {
    /// Global steps of the run without dynamic sampling: `epochs × batches per epoch`, capped by
    /// `+trainer.max_steps` (SkyRL's `total_training_steps`). With dynamic sampling a step can
    /// draw several batches and the data runs out first (see [`Trainer::data_used_up`]).
    pub fn total_steps(&self) -> usize {
        let all = self.cfg.trainer.epochs * self.loader.batches_per_epoch();
        self.max_steps.map_or(all, |m| m.min(all))
    }

    /// Whether `trainer.epochs` passes over the training set have been drawn. As SkyRL's
    /// `for epoch in range(epochs): for batch in dataloader` loop, every generation batch of
    /// dynamic sampling comes from those passes, so such a run makes fewer global steps.
    pub fn data_used_up(&self) -> bool {
        self.loader.batches_drawn() >= self.cfg.trainer.epochs * self.loader.batches_per_epoch()
    }

    fn device(&self) -> &Device {
        self.policy.device()
    }

    fn train_sampling(&self) -> Sampling {
        sampling_from(&self.cfg.generator.sampling_params)
    }

    /// Runs until `trainer.epochs` passes over the data are drawn (or `+trainer.max_steps` steps
    /// are done), or `stop` is set. Returns the last step's metrics.
    pub fn fit(&mut self) -> Result<Metrics> {
        check_runnable(self)?;
        // Remote engines start from whatever they loaded; make them serve this policy (the
        // initial weights, or those of the checkpoint resumed from).
        self.generator
            .sync_weights(&self.policy, self.global_step)
            .context("syncing the policy's weights to the inference engines")?;
        let total = self.total_steps();
        // As SkyRL: only where evaluation is on at all, and also after a resume (at its step).
        if self.cfg.trainer.eval_before_train
            && self.cfg.trainer.eval_interval > 0
            && !self.val_rows.is_empty()
        {
            let m = self.evaluate()?;
            self.log(self.global_step, &m)?;
        }
        let mut last = Metrics::new();
        while self.global_step < total {
            // Ranks stop together, whichever of them saw the Ctrl-C.
            let stop = self.stop.load(Ordering::SeqCst);
            if dist::any(self.group.as_ref(), stop, "stop flag")? {
                self.stop.store(true, Ordering::SeqCst);
                tracing::info!("stopping at step {} (interrupted)", self.global_step);
                break;
            }
            match self.step()? {
                Some(m) => last = m,
                None => {
                    // SkyRL saves a final checkpoint when its loop ends; a step that reached
                    // `total_steps` has saved its own already.
                    tracing::info!(
                        "the training data's {} epochs are used up after {} steps ({} generation batches)",
                        self.cfg.trainer.epochs,
                        self.global_step,
                        self.loader.batches_drawn()
                    );
                    if let Some(dir) = self.ckpt_dir.clone() {
                        if self.cfg.trainer.ckpt_interval > 0 && self.global_step > 0 {
                            checkpoint::save(self, &dir)?;
                        }
                    }
                    break;
                }
            }
        }
        Ok(last)
    }

    /// One global step. Returns its metrics (also sent to the loggers), or `None` when the
    /// training data's epochs ran out before the step had its batch (dynamic sampling drew the
    /// rest); the rows generated for it are then dropped, as in SkyRL.
    pub fn step(&mut self) -> Result<Option<Metrics>> {
        let t_step = Instant::now();
        let step = self.global_step + 1;
        let cfg = self.cfg.clone();
        let n = cfg.generator.n_samples_per_prompt;
        let mut metrics = Metrics::new();

        // 1-3. Generate, score, and (with dynamic sampling) keep going until enough groups vary.
        let t_gen = Instant::now();
        let mut num_gen_batches = 0usize;
        let mut zero_std_groups = 0usize;
        let mut total_groups = 0usize;
        let mut gen_tokens = 0usize;
        // Every generated row of this step lives in `pool`; the sampler hands back which to keep.
        let mut pool = GeneratorOutput::default();
        // `generate/*` describes the last generation batch as drawn, as SkyRL's generator logs it.
        let mut last_batch: Metrics;
        let output = loop {
            if self.data_used_up() {
                return Ok(None);
            }
            let prompts = self
                .loader
                .next_batch()
                .context("the training set holds fewer prompts than trainer.train_batch_size")?;
            let epoch = self.loader.state().epoch;
            let groups: Vec<PromptGroup> = prompts
                .into_iter()
                .map(|(idx, row)| PromptGroup {
                    uid: format!("{epoch}-{idx}"),
                    row,
                    n,
                })
                .collect();
            let seed = cfg.trainer.seed ^ ((step as u64) << 20) ^ (num_gen_batches as u64);
            let t_batch = Instant::now();
            let mut out = self
                .generator
                .generate(&groups, &self.train_sampling(), seed)?;
            if cfg.generator.zero_reward_on_non_stop {
                out.zero_rewards_not_stopped();
            }
            num_gen_batches += 1;
            last_batch = length_metrics(&out);
            let batch_tokens = out.response_ids.iter().map(Vec::len).sum::<usize>();
            gen_tokens += batch_tokens;
            let (zero, groups_here) = zero_std_count(&out.rewards, &out.uids);
            tracing::info!(
                "step {step}: generation batch {num_gen_batches}: {} responses, {batch_tokens} tokens in {:.1}s, mean reward {:.3}, {}/{groups_here} groups with varied rewards",
                out.len(),
                t_batch.elapsed().as_secs_f64(),
                out.rewards.iter().sum::<f64>() / out.len().max(1) as f64,
                groups_here - zero,
            );
            zero_std_groups += zero;
            total_groups += groups_here;
            let base = pool.len();
            let rows: Vec<usize> = (base..base + out.len()).collect();
            let (uids, rewards) = (out.uids.clone(), out.rewards.clone());
            pool.extend(out);
            match self.sampler.process(rows, uids, &rewards)? {
                Outcome::Ready { rows, uids } => {
                    let mut kept = pool.select(&rows);
                    kept.uids = uids;
                    break kept;
                }
                Outcome::KeepSampling => continue,
            }
        };
        let gen_secs = t_gen.elapsed().as_secs_f64();
        metrics.insert("timing/generate".into(), gen_secs);
        metrics.insert(
            "dynamic_sampling/num_gen_batches".into(),
            num_gen_batches as f64,
        );
        metrics.insert(
            "dynamic_sampling/total_gen_batches".into(),
            self.loader.batches_drawn() as f64,
        );
        metrics.insert(
            "dynamic_sampling/zero_std_group_fraction".into(),
            zero_std_groups as f64 / total_groups.max(1) as f64,
        );
        metrics.insert(
            "generate/tokens_per_sec".into(),
            gen_tokens as f64 / gen_secs.max(1e-9),
        );

        // 4. Post-process (soft overlong punishment by default), then reward metrics.
        let ctx = HookContext {
            max_generate_length: cfg.generator.sampling_params.max_generate_length,
            overlong_buffer: cfg
                .trainer
                .algorithm
                .overlong_buffer
                .as_ref()
                .map(|b| (b.len, b.penalty_factor)),
        };
        let uids = output.uids.clone();
        let mut output = self
            .hooks
            .postprocess_generator_output(output, &uids, &ctx)?;
        metrics.extend(rlvr_algo::overlong::reward_metrics(
            &output.rewards,
            &output.uids,
            n,
        ));
        metrics.extend(last_batch);
        metrics.extend(environment_metrics(&self.envs, &output));

        // 5. Overlong filtering: responses that hit the length limit leave the loss.
        if cfg.generator.apply_overlong_filtering {
            let reasons: Vec<Option<String>> = output
                .stop_reasons
                .iter()
                .map(|r| Some(r.as_str().to_string()))
                .collect();
            let masks: Vec<Vec<u8>> = output
                .loss_masks
                .iter()
                .map(|m| m.iter().map(|&x| (x != 0.0) as u8).collect())
                .collect();
            output.loss_masks = rlvr_algo::overlong::apply_overlong_filtering(&masks, &reasons)?
                .into_iter()
                .map(|m| m.into_iter().map(f32::from).collect())
                .collect();
        }

        // 6-8. Log-probs, advantages, policy update.
        let t_train = Instant::now();
        let all: Vec<usize> = (0..output.len()).collect();
        let batch = batch::build(&output, &all, self.pad_id, self.device())?;
        let update_metrics = update::train_on_batch(self, &output, &batch)?;
        metrics.extend(update_metrics);
        let train_secs = t_train.elapsed().as_secs_f64();
        metrics.insert("timing/train".into(), train_secs);
        let train_tokens: usize = output.prompt_token_ids.iter().map(Vec::len).sum::<usize>()
            + output.response_ids.iter().map(Vec::len).sum::<usize>();
        metrics.insert(
            "train/tokens_per_sec".into(),
            (train_tokens * cfg.trainer.update_epochs_per_batch) as f64 / train_secs.max(1e-9),
        );

        self.global_step = step;
        let t_sync = Instant::now();
        self.generator
            .sync_weights(&self.policy, step)
            .context("syncing the updated weights to the inference engines")?;
        metrics.insert("timing/sync_weights".into(), t_sync.elapsed().as_secs_f64());
        metrics.insert("trainer/global_step".into(), step as f64);
        metrics.insert("trainer/epoch".into(), self.loader.state().epoch as f64);

        // 9. Evaluate, log, then checkpoint: a step whose checkpoint exists has been logged (a
        // step killed between the two is re-run on resume and logged again, identically).
        let last_step = step == self.total_steps();
        let eval_interval = cfg.trainer.eval_interval;
        if !self.val_rows.is_empty()
            && eval_interval > 0
            && (step as i64 % eval_interval == 0 || last_step)
        {
            let t = Instant::now();
            metrics.extend(self.evaluate()?);
            metrics.insert("timing/eval".into(), t.elapsed().as_secs_f64());
        }
        metrics.insert("timing/step".into(), t_step.elapsed().as_secs_f64());
        self.log(step, &metrics)?;
        if let Some(dir) = &self.ckpt_dir {
            let interval = cfg.trainer.ckpt_interval;
            if interval > 0 && (step as i64 % interval == 0 || last_step) {
                checkpoint::save(self, dir)?;
            }
        }
        if self.exports_at(step) {
            crate::export::export_policy(self)?;
        }
        Ok(Some(metrics))
    }

    /// Whether step `step`, just taken, ends with an HF export, as SkyRL: every
    /// `hf_save_interval` steps and where the step used up an epoch's data, never when the
    /// interval is <= 0. (`rlvr train` also exports the run's last step when the interval is > 0.)
    pub fn exports_at(&self, step: usize) -> bool {
        let hf = self.cfg.trainer.hf_save_interval;
        let epoch_end = self.loader.state().batch_in_epoch == self.loader.batches_per_epoch();
        hf > 0 && (step as i64 % hf == 0 || epoch_end)
    }

    /// The run's closing figures: a line on the last training batch's and the last evaluation's
    /// mean rewards, and the `final mean reward`. That is the last evaluation's where the run
    /// evaluated: a training batch's is biased (dynamic sampling keeps only groups whose rewards
    /// vary; DAPO's overlong punishment shapes it), so it cannot show a learned task.
    pub fn final_mean_reward(&self, last: &Metrics) -> Option<(String, f64)> {
        let batch = last.get("reward/avg_raw_reward").copied();
        let batch_text = batch.map_or("none".into(), |r| format!("{r:.4}"));
        match (self.last_eval, batch) {
            (Some((step, score)), _) => Some((
                format!(
                    "last training batch: mean reward {batch_text}; evaluation at step {step}: mean reward {score:.4}"
                ),
                score,
            )),
            (None, Some(r)) => Some((format!("last training batch: mean reward {batch_text}"), r)),
            (None, None) => None,
        }
    }

    /// Evaluates the current policy on the validation rows with `eval_sampling_params`.
    pub fn evaluate(&mut self) -> Result<Metrics> {
        let sampling = sampling_from(&self.cfg.generator.eval_sampling_params);
        let dump = (self.cfg.trainer.dump_eval_results && self.group.is_main()).then(|| {
            self.run_dir
                .join("dumped_evals")
                .join(format!("global_step_{}_evals.jsonl", self.global_step))
        });
        let m = eval::evaluate(
            self.generator.as_mut(),
            &self.val_rows,
            &eval::EvalSettings {
                sampling: &sampling,
                n_samples: self.cfg.generator.eval_n_samples_per_prompt,
                batch_size: self.cfg.trainer.eval_batch_size,
                seed: self.cfg.trainer.seed,
                envs: &self.envs,
                dump: dump.as_deref(),
                zero_reward_on_non_stop: self.cfg.generator.zero_reward_on_non_stop,
            },
        )?;
        if let Some(&score) = m.get("eval/all/avg_score") {
            self.last_eval = Some((self.global_step, score));
        }
        Ok(m)
    }

    fn log(&mut self, step: usize, metrics: &Metrics) -> Result<()> {
        for l in &mut self.loggers {
            l.log(step, metrics)?;
        }
        Ok(())
    }

    /// The loader's position (saved in checkpoints).
    pub fn loader_state(&self) -> LoaderState {
        self.loader.state()
    }
}

/// `generator.sampling_params` → the generator's sampling settings.
pub fn sampling_from(p: &crate::config::SamplingParams) -> Sampling {
    Sampling {
        temperature: p.temperature,
        top_p: p.top_p,
        top_k: p.top_k,
        min_p: p.min_p,
        max_generate_length: p.max_generate_length,
        stop: p.stop_strings(),
    }
}

/// (groups whose rewards all equal, number of groups).
fn zero_std_count(rewards: &[f64], uids: &[String]) -> (usize, usize) {
    let groups = rlvr_algo::ops::group_by_uid(&uids[..uids.len().min(rewards.len())]);
    let zero = groups
        .iter()
        .filter(|(_, rows)| rows.iter().all(|&i| rewards[i] == rewards[rows[0]]))
        .count();
    (zero, groups.len())
}

/// `environment/<name>`: the mean over this step's responses of each extra score their
/// environments report (GSM8K: strict and flexible accuracy, the `####` rate), so the training
/// curves show what the reward alone hides (e.g. the format being learned before the answers).
pub fn environment_metrics(envs: &EnvRegistry, out: &GeneratorOutput) -> Metrics {
    let mut scores: std::collections::BTreeMap<&'static str, eval::Moments> = Default::default();
    for (response, row) in out.responses.iter().zip(&out.rows) {
        for (name, v) in envs.eval_scores(response, row) {
            scores.entry(name).or_default().add(v);
        }
    }
    scores
        .into_iter()
        .map(|(k, m)| (format!("environment/{k}"), m.mean()))
        .collect()
}

/// `generate/{min,max,avg,std}_num_tokens`, SkyRL's `generate/avg_tokens_{non_zero,zero}_rewards`
/// (0 where no response has such a reward) and the fraction cut at the length limit.
pub fn length_metrics(out: &GeneratorOutput) -> Metrics {
    let lens: Vec<f64> = out.response_ids.iter().map(|r| r.len() as f64).collect();
    let n = lens.len().max(1) as f64;
    let avg = lens.iter().sum::<f64>() / n;
    let var = lens.iter().map(|l| (l - avg).powi(2)).sum::<f64>() / n;
    let mut m = Metrics::new();
    m.insert(
        "generate/min_num_tokens".into(),
        lens.iter().copied().fold(f64::INFINITY, f64::min),
    );
    m.insert(
        "generate/max_num_tokens".into(),
        lens.iter().copied().fold(0.0, f64::max),
    );
    m.insert("generate/avg_num_tokens".into(), avg);
    m.insert("generate/std_num_tokens".into(), var.sqrt());
    let mean_len_where = |keep: fn(f64) -> bool| {
        let picked: Vec<f64> = lens
            .iter()
            .zip(&out.rewards)
            .filter(|(_, &r)| keep(r))
            .map(|(&l, _)| l)
            .collect();
        picked.iter().sum::<f64>() / picked.len().max(1) as f64
    };
    m.insert(
        "generate/avg_tokens_non_zero_rewards".into(),
        mean_len_where(|r| r > 0.0),
    );
    m.insert(
        "generate/avg_tokens_zero_rewards".into(),
        mean_len_where(|r| r == 0.0),
    );
    let truncated = out
        .stop_reasons
        .iter()
        .filter(|r| **r == StopReason::Length)
        .count();
    m.insert("generate/truncated_fraction".into(), truncated as f64 / n);
    m
}

/// Moves a `[B, R]` f32 tensor's rows to a `Vec<Vec<f32>>` (for metrics and checkpoints).
pub fn rows_f32(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
}

/// Fails early with a clear message when a run cannot make progress.
pub fn check_runnable(trainer: &Trainer) -> Result<()> {
    if trainer.loader.batches_per_epoch() == 0 {
        bail!(
            "the training set has {} prompts after filtering, fewer than trainer.train_batch_size={}",
            trainer.loader.len(),
            trainer.cfg.trainer.train_batch_size
        );
    }
    Ok(())
}
