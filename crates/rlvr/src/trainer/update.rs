//! Steps 6-8 of a training step: old and reference log-probs, advantages, and the policy update
//! over mini-batches (one optimizer step each) and micro-batches (gradient accumulation).

use super::batch::{self, TrainBatch};
use super::Trainer;
use crate::dist::{self, ProcessGroup};
use crate::generator::GeneratorOutput;
use crate::logging::Metrics;
use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use rlvr_algo::kl::approx_kl;
use rlvr_algo::reduction;
use rlvr_algo::{advantages, policy_loss};
use rlvr_model::logprobs::LogProbOptions;
use rlvr_model::{Model, Precision};

/// Runs steps 6-8 on the whole (post-processed) batch and returns the policy metrics.
pub fn train_on_batch(
    t: &mut Trainer,
    out: &GeneratorOutput,
    full: &TrainBatch,
) -> Result<Metrics> {
    let cfg = t.cfg.clone();
    let alg = &cfg.trainer.algorithm;
    let temperature = cfg.generator.sampling_params.temperature;
    let rows = out.len();
    let micro_fwd = cfg.trainer.micro_forward_batch_size_per_gpu.max(1);
    let kl_estimator = alg.kl_estimator_type;
    // SkyRL's `trainer.bf16`: bf16 inputs to every linear product, f32 everywhere else.
    let precision = if cfg.trainer.bf16 {
        Precision::Bf16
    } else {
        Precision::F32
    };
    // One prompt pass per group wherever a chunk's consecutive rows share their prompt.
    let share_prompts = t.share_prompts;
    // `replace` copies a good group over a bad one under the same uid; group boundaries only need
    // contiguous runs, so number the runs.
    let run_ids = contiguous_run_ids(&out.uids);
    let prompt_bounds = reduction::prompt_boundaries(&run_ids)?;
    // Each data-parallel rank computes the forward passes of its share of the groups.
    let group = t.group.clone();
    let shard = Shard {
        group: group.as_ref(),
        prompts: &prompt_bounds,
    };
    let fwd = |model: &Model| {
        forward_logprobs(
            model,
            out,
            full,
            &shard,
            micro_fwd,
            temperature,
            t.pad_id,
            precision,
            share_prompts,
        )
    };

    // 6. Old-policy (and reference) log-probs, recomputed by the trainer in forward-sized chunks.
    let t0 = std::time::Instant::now();
    let old_logprobs = fwd(&t.policy)?;
    let ref_logprobs = t.reference.as_ref().map(fwd).transpose()?;
    // The critic's values. SkyRL hands GAE the critic's outputs at padding positions too (its
    // recursion ignores the mask), so a response's last token would bootstrap from a padding
    // token's value, which depends on how wide the batch was padded. As verl does, values
    // outside the response are 0: the state after the last token is terminal.
    let old_values = match &t.critic {
        Some(c) => Some(
            c.values(out, full, &shard, micro_fwd, t.pad_id, precision)?
                .mul(&full.response_mask)?,
        ),
        None => None,
    };
    let mut metrics = Metrics::new();
    metrics.insert("timing/fwd_logprobs".into(), t0.elapsed().as_secs_f64());
    if !out.rollout_logprobs.is_empty() {
        metrics.extend(rollout_logprob_diff(
            &old_logprobs,
            &out.rollout_logprobs,
            &full.loss_mask,
        )?);
    }

    // KL in the reward (the alternative to the KL loss): r_t -= coef * kl_t, the coefficient
    // from `kl_ctrl` (SkyRL's `apply_reward_kl_penalty`).
    let mut token_rewards = full.token_rewards.clone();
    if alg.use_kl_in_reward {
        if let Some(r) = &ref_logprobs {
            let kl = approx_kl(&old_logprobs, r, Some(&full.loss_mask), kl_estimator)?;
            let coef = t.reward_kl.value();
            token_rewards = (token_rewards - (&kl * coef.max(0.0))?)?;
            let per_row = (kl.mul(&full.loss_mask)?.sum(1)?
                / full.loss_mask.sum(1)?.clamp(1.0, f64::INFINITY)?)?;
            let avg_kl = f64::from(per_row.mean_all()?.to_scalar::<f32>()?);
            let avg_kl_max = f64::from(kl.abs()?.max(1)?.mean_all()?.to_scalar::<f32>()?);
            t.reward_kl.update(avg_kl, rows);
            metrics.insert("loss/avg_kl".into(), avg_kl);
            metrics.insert("loss/avg_kl_max".into(), avg_kl_max);
            metrics.insert("loss/kl_loss_coef".into(), coef);
        }
    }

    // 7. Advantages, then per-mini-batch pre-scaling so each micro-batch loss is a plain masked sum
    // and the mini-batch loss does not depend on the micro-batch split.
    let (advantages, returns) = advantages::compute_advantages_and_returns(
        &alg.advantage_estimator,
        &advantages::AdvantageInputs {
            token_level_rewards: &token_rewards,
            response_mask: &full.response_mask,
            uids: &out.uids,
            values: old_values.as_ref(),
        },
        &advantages::AdvantageParams {
            gamma: alg.gamma,
            lambd: alg.lambd,
            grpo_norm_by_std: alg.grpo_norm_by_std,
            ..Default::default()
        },
    )?;
    // SkyRL's metrics of the advantage step: mean final reward per row (token rewards summed),
    // and the mean and mean absolute advantage over response tokens.
    let n_tokens = full.response_mask.sum_all()?.to_scalar::<f32>()?.max(1.0);
    let token_mean = |x: &Tensor| -> Result<f64> {
        Ok(((x * &full.response_mask)?.sum_all()?.to_scalar::<f32>()? / n_tokens) as f64)
    };
    metrics.insert("loss/avg_raw_advantages".into(), token_mean(&advantages)?);
    metrics.insert(
        "loss/avg_raw_advantages_abs".into(),
        token_mean(&advantages.abs()?)?,
    );
    metrics.insert(
        "loss/avg_final_rewards".into(),
        token_rewards
            .to_dtype(DType::F64)?
            .sum(1)?
            .mean_all()?
            .to_scalar::<f64>()?,
    );
    let n = cfg.generator.n_samples_per_prompt;
    let micro_rows = cfg.trainer.micro_train_batch_size_per_gpu.max(1);
    let reduction = alg.loss_reduction;
    let mini_bounds = reduction::mini_batch_boundaries(
        &run_ids,
        cfg.trainer.policy_mini_batch_size,
        prompt_bounds.len(),
        false,
        n,
    )?;
    let scaled_adv = reduction::normalize_advantages(
        &advantages,
        &full.response_mask,
        &full.loss_mask,
        &reduction::NormalizeOptions {
            reduction,
            advantage_batch_normalize: alg.advantage_batch_normalize,
            micro_batch_size: micro_rows,
            max_seq_len: Some(cfg.max_seq_len()),
            mini_batch_boundaries: &mini_bounds,
            prompt_boundaries: Some(&prompt_bounds),
        },
    )?;

    // 8. Critic update (SkyRL trains the critic first), then the policy: one optimizer step per
    // mini-batch, gradients summed over micro-batches.
    let pad_id = t.pad_id;
    if let (Some(critic), Some(old_values)) = (t.critic.as_mut(), old_values.as_ref()) {
        let t0 = std::time::Instant::now();
        let bounds = reduction::mini_batch_boundaries(
            &run_ids,
            cfg.trainer.critic_mini_batch_size,
            prompt_bounds.len(),
            false,
            n,
        )?;
        metrics.extend(critic.train(
            out,
            &super::critic::CriticUpdate {
                old_values,
                returns: &returns,
                loss_mask: &full.loss_mask,
                mini_batches: &bounds,
                micro_rows,
                epochs: cfg.trainer.update_epochs_per_batch,
                value_clip: alg.value_clip,
                pad_id,
                precision,
                shard: &shard,
            },
        )?);
        metrics.insert("timing/critic_train".into(), t0.elapsed().as_secs_f64());
    }
    let policy_vars = t.policy.vars();
    let loss_cfg = policy_loss_config(&cfg)?;
    // The engine's log-probs, for off-policy correction (TIS and rejection masks) when it is on.
    let oc = &loss_cfg.off_policy_correction;
    let rollout_logprobs = if oc.tis_ratio_type.is_some() || oc.sequence_mask_metric.is_some() {
        if out.rollout_logprobs.len() != rows {
            bail!("off-policy correction needs the engine's log-probs, and the generator returned none");
        }
        Some(pad_rows(
            &out.rollout_logprobs,
            old_logprobs.dim(1)?,
            t.policy.device(),
        )?)
    } else {
        None
    };
    let kl_entropy = reduction::KlEntropySettings {
        kl: (alg.use_kl_loss && ref_logprobs.is_some()).then_some((kl_estimator, alg.kl_loss_coef)),
        entropy_coef: alg.use_entropy_loss.then_some(alg.entropy_loss_coef),
    };
    let mut acc = MetricAcc::default();
    let mut prompt_passes_saved = 0usize;
    for _epoch in 0..cfg.trainer.update_epochs_per_batch {
        for &(mini_start, mini_end) in &mini_bounds {
            let mut grads: Option<GradStore> = None;
            // This rank's share of the mini-batch; the loss is pre-scaled for the whole of it.
            let (lo, hi) = shard.rows((mini_start, mini_end));
            for micro_start in (lo..hi).step_by(micro_rows) {
                let micro_end = (micro_start + micro_rows).min(hi);
                let idx: Vec<usize> = (micro_start..micro_end).collect();
                let mb = batch::build(out, &idx, t.pad_id, t.policy.device())?;
                let r = mb.response_len;
                let take = |x: &Tensor| -> Result<Tensor> {
                    Ok(x.narrow(0, micro_start, micro_end - micro_start)?
                        .narrow(1, 0, r)?
                        .contiguous()?)
                };
                let layout = match share_prompts {
                    true => batch::shared_layout(out, &idx, t.pad_id, t.policy.device())?,
                    false => None,
                };
                if let Some(l) = &layout {
                    prompt_passes_saved +=
                        idx.len() - l.group.last().map_or(0, |&g| g as usize + 1);
                }
                let lp = logprobs(
                    &t.policy,
                    &mb,
                    layout.as_ref(),
                    &LogProbOptions {
                        temperature,
                        entropy: true,
                        grad: true,
                        precision,
                        segmented: true,
                        ..Default::default()
                    },
                )?;
                let old = take(&old_logprobs)?;
                let adv = take(&scaled_adv)?;
                let rollout = rollout_logprobs.as_ref().map(take).transpose()?;
                let token_loss = policy_loss::compute_token_loss(
                    &alg.policy_loss_type,
                    &policy_loss::PolicyLossInputs {
                        log_probs: &lp.logprobs,
                        old_log_probs: &old,
                        advantages: &adv,
                        loss_mask: Some(&mb.loss_mask),
                        rollout_log_probs: rollout.as_ref(),
                    },
                    &loss_cfg,
                )?;
                let policy_loss =
                    reduction::masked_sum(&token_loss.loss, token_loss.loss_mask.as_ref())?;
                // SkyRL reduces the KL and entropy terms per micro-batch, unscaled by the policy
                // loss's reduction, weighs them by the micro-batch's share of the mini-batch's
                // rows, and reports them as means over micro-batches.
                let micro_weight =
                    (micro_end - micro_start) as f64 / (mini_end - mini_start) as f64;
                let reference = ref_logprobs.as_ref().map(take).transpose()?;
                let terms = reduction::kl_entropy_terms(
                    &lp.logprobs,
                    reference.as_ref(),
                    lp.entropy.as_ref().expect("entropy was requested"),
                    &mb.loss_mask,
                    &kl_entropy,
                    micro_weight,
                )?;
                if let Some(kl) = &terms.kl {
                    acc.add_mean("policy/policy_kl", scalar(kl)?);
                }
                acc.add_mean("policy/policy_entropy", scalar(&terms.entropy)?);
                let loss = (&policy_loss + &terms.loss)?;
                acc.add("policy/policy_loss", scalar(&policy_loss)?);
                // SkyRL's worker reports each micro-batch's response width (`num_actions`).
                acc.add_mean("policy/response_length", r as f64);
                acc.add("policy/final_loss", scalar(&loss)?);
                for (k, v) in token_loss.metrics {
                    acc.add_mean(&format!("policy/loss_metrics/{k}"), v);
                }
                lp.backward_into(&loss, grads.get_or_insert_with(GradStore::default))?;
            }
            acc.merge_ranks(shard.group)?;
            let grads =
                dist::all_reduce_grads(shard.group, grads, &policy_vars, "policy gradients")?;
            if let Some(grads) = grads {
                let stats = t.optimizer.step(grads)?;
                acc.add_mean("policy/grad_norm", stats.grad_norm);
                acc.add_mean("policy/policy_lr", stats.lr);
                acc.add(
                    "policy/skipped_steps",
                    if stats.skipped { 1.0 } else { 0.0 },
                );
                let limit = t.cfg.trainer.max_consecutive_skipped_steps;
                if limit > 0 && t.optimizer.skipped_in_a_row() >= limit {
                    anyhow::bail!(
                        "{} optimizer steps in a row had a non-finite gradient norm ({}) and were \
                         skipped (trainer.max_consecutive_skipped_steps={limit}): the loss or the \
                         weights have diverged; lower the learning rate, check the rewards and \
                         resume from the last checkpoint",
                        t.optimizer.skipped_in_a_row(),
                        stats.grad_norm
                    );
                }
            }
            acc.end_mini_batch();
        }
    }
    metrics.extend(acc.finish());
    let mut saved = [prompt_passes_saved as f32];
    shard
        .group
        .all_reduce_sum(&mut saved, "prompt passes saved")?;
    let prompt_passes_saved = saved[0] as usize;
    // rlvr's own: prompt forward/backward passes the policy update did not repeat (one per
    // sample beyond the first of each group in a micro-batch).
    metrics.insert(
        "train/prompt_passes_saved".into(),
        prompt_passes_saved as f64,
    );
    Ok(metrics)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// `0, 0, 1, 1, 2, …`: one id per run of equal uids.
fn contiguous_run_ids(uids: &[String]) -> Vec<String> {
    let mut run = 0usize;
    uids.iter()
        .enumerate()
        .map(|(i, u)| {
            if i > 0 && *u != uids[i - 1] {
                run += 1;
            }
            run.to_string()
        })
        .collect()
}

/// SkyRL's `policy/rollout_train_logprobs_abs_diff_{mean,std}`: how far the engine's log-probs
/// are from the trainer's for the same tokens (0 up to float noise with the embedded engine).
fn rollout_logprob_diff(
    trainer_lp: &Tensor,
    rollout: &[Vec<f32>],
    mask: &Tensor,
) -> Result<Metrics> {
    let trainer_lp = trainer_lp.to_vec2::<f32>()?;
    let mask = mask.to_vec2::<f32>()?;
    let mut diffs = Vec::new();
    for (i, row) in rollout.iter().enumerate() {
        for (j, &lp) in row.iter().enumerate() {
            if mask[i].get(j).copied().unwrap_or(0.0) > 0.0 {
                diffs.push((lp - trainer_lp[i][j]).abs() as f64);
            }
        }
    }
    let n = diffs.len().max(1) as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    // torch's default (unbiased) std, as SkyRL logs it.
    let std = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    let mut m = Metrics::new();
    m.insert("policy/rollout_train_logprobs_abs_diff_mean".into(), mean);
    m.insert("policy/rollout_train_logprobs_abs_diff_std".into(), std);
    Ok(m)
}

/// Log-probs `[B, R]` of every row's response under `model` (no grad), in chunks of `micro` rows.
#[allow(clippy::too_many_arguments)]
fn forward_logprobs(
    model: &Model,
    out: &GeneratorOutput,
    full: &TrainBatch,
    shard: &Shard,
    micro: usize,
    temperature: f64,
    pad_id: u32,
    precision: Precision,
    share_prompts: bool,
) -> Result<Tensor> {
    let rows = out.len();
    forward_in_chunks(
        out,
        full,
        shard,
        micro,
        pad_id,
        model.device(),
        |start, mb| {
            let idx: Vec<usize> = (start..(start + mb.lengths.len()).min(rows)).collect();
            let layout = match share_prompts {
                true => batch::shared_layout(out, &idx, pad_id, model.device())?,
                false => None,
            };
            let lp = logprobs(
                model,
                mb,
                layout.as_ref(),
                &LogProbOptions {
                    temperature,
                    entropy: false,
                    grad: false,
                    precision,
                    ..Default::default()
                },
            )?;
            Ok(lp.logprobs.detach())
        },
    )
}

/// The log-probs of the rows laid out as `mb`, or, given their shared layout, with one prompt
/// pass per group.
fn logprobs(
    model: &Model,
    mb: &TrainBatch,
    shared: Option<&batch::SharedLayout>,
    opts: &LogProbOptions,
) -> Result<rlvr_model::TokenLogProbs> {
    Ok(match shared {
        Some(layout) => model.response_logprobs_shared(&layout.view(), opts)?,
        None => {
            model.response_logprobs(&mb.input_ids, &mb.attention_mask, mb.response_len, opts)?
        }
    })
}

/// Runs `f(first row, chunk)` on this rank's share of the batch in chunks of `micro` rows and
/// stacks every rank's `[rows, R_chunk]` results, zero-padded to the whole batch's response width.
pub(super) fn forward_in_chunks(
    out: &GeneratorOutput,
    full: &TrainBatch,
    shard: &Shard,
    micro: usize,
    pad_id: u32,
    device: &candle_core::Device,
    f: impl Fn(usize, &TrainBatch) -> Result<Tensor>,
) -> Result<Tensor> {
    let (lo, hi) = shard.rows((0, out.len()));
    let mut parts = Vec::new();
    for start in (lo..hi).step_by(micro.max(1)) {
        let idx: Vec<usize> = (start..(start + micro.max(1)).min(hi)).collect();
        let mb = batch::build(out, &idx, pad_id, device)?;
        let part = f(start, &mb)?;
        let pad = full.response_len - mb.response_len;
        parts.push(if pad > 0 {
            part.pad_with_zeros(1, 0, pad)?
        } else {
            part
        });
    }
    let mine = match parts.is_empty() {
        true => Tensor::zeros((0, full.response_len), candle_core::DType::F32, device)?,
        false => Tensor::cat(&parts, 0)?,
    };
    dist::all_gather_rows(shard.group, &mine, "forward passes")
}

/// The data-parallel rank's view of a batch: which rows it computes.
pub struct Shard<'a> {
    pub group: &'a dyn ProcessGroup,
    /// Each prompt group's rows `(start, end)`, in order.
    pub prompts: &'a [(usize, usize)],
}

impl Shard<'_> {
    /// This rank's rows of `span` (whole prompt groups); all of it with one rank.
    pub fn rows(&self, span: (usize, usize)) -> (usize, usize) {
        self.rows_of(span, self.group.rank())
    }

    /// Rank `rank`'s rows of `span`.
    pub fn rows_of(&self, span: (usize, usize), rank: usize) -> (usize, usize) {
        match self.group.size() {
            1 => span,
            n => dist::shard_rows(self.prompts, span, rank, n),
        }
    }
}

/// `trainer.algorithm.*` → the loss's settings.
fn policy_loss_config(cfg: &crate::config::Config) -> Result<policy_loss::PolicyLossConfig> {
    let a = &cfg.trainer.algorithm;
    let mut c = policy_loss::PolicyLossConfig {
        eps_clip_low: a.eps_clip_low,
        eps_clip_high: a.eps_clip_high,
        clip_ratio_c: a.clip_ratio_c,
        loss_reduction: a.loss_reduction,
        // SkyRL's fallback when null: max input + max generate length.
        max_seq_len: Some(cfg.max_seq_len()),
        sapo: a.sapo,
        cispo: a.cispo,
        clip_cov: a.clip_cov,
        kl_cov: a.kl_cov,
        off_policy_correction: a.off_policy_correction.clone(),
    };
    // SkyRL's deprecated `use_tis` is token-level TIS capped at `tis_imp_ratio_cap`.
    if a.use_tis && c.off_policy_correction.tis_ratio_type.is_none() {
        if a.tis_imp_ratio_cap.is_nan() || a.tis_imp_ratio_cap <= 0.0 {
            bail!(
                "trainer.algorithm.use_tis=true needs trainer.algorithm.tis_imp_ratio_cap > 0, got {}",
                a.tis_imp_ratio_cap
            );
        }
        c.off_policy_correction.tis_ratio_type = Some(policy_loss::TisRatioType::Token);
        c.off_policy_correction.token_tis_ratio_clip_high = a.tis_imp_ratio_cap;
    }
    Ok(c)
}

/// Rows of different lengths as a `[B, width]` f32 tensor, zero-padded on the right.
fn pad_rows(rows: &[Vec<f32>], width: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mut flat = vec![0f32; rows.len() * width];
    for (i, r) in rows.iter().enumerate() {
        let n = r.len().min(width);
        flat[i * width..i * width + n].copy_from_slice(&r[..n]);
    }
    Ok(Tensor::from_vec(flat, (rows.len(), width), device)?)
}

/// Accumulates per-micro-batch metrics: sums within a mini-batch (the reduced losses add up to the
/// mini-batch loss), then means over mini-batches.
#[derive(Default)]
pub(super) struct MetricAcc {
    mini: std::collections::BTreeMap<String, (f64, usize, bool)>,
    done: std::collections::BTreeMap<String, Vec<f64>>,
}

impl MetricAcc {
    pub(super) fn add(&mut self, k: &str, v: f64) {
        let e = self.mini.entry(k.to_string()).or_insert((0.0, 0, false));
        e.0 += v;
        e.1 += 1;
    }
    pub(super) fn add_mean(&mut self, k: &str, v: f64) {
        let e = self.mini.entry(k.to_string()).or_insert((0.0, 0, true));
        e.0 += v;
        e.1 += 1;
    }
    /// Adds up every rank's micro-batch metrics of this mini-batch, so each rank holds those of
    /// the whole mini-batch.
    pub(super) fn merge_ranks(&mut self, group: &dyn ProcessGroup) -> Result<()> {
        if group.size() == 1 {
            return Ok(());
        }
        let mine: Vec<(String, f64, u64, bool)> = self
            .mini
            .iter()
            .map(|(k, &(sum, count, mean))| (k.clone(), sum, count as u64, mean))
            .collect();
        let parts = group.all_gather_bytes(&postcard::to_stdvec(&mine)?, "metrics")?;
        self.mini.clear();
        for p in parts {
            let theirs: Vec<(String, f64, u64, bool)> = postcard::from_bytes(&p)?;
            for (k, sum, count, mean) in theirs {
                let e = self.mini.entry(k).or_insert((0.0, 0, mean));
                e.0 += sum;
                e.1 += count as usize;
            }
        }
        Ok(())
    }

    pub(super) fn end_mini_batch(&mut self) {
        for (k, (sum, count, mean)) in std::mem::take(&mut self.mini) {
            let v = if mean { sum / count.max(1) as f64 } else { sum };
            self.done.entry(k).or_default().push(v);
        }
    }
    pub(super) fn finish(mut self) -> Metrics {
        self.end_mini_batch();
        self.done
            .into_iter()
            .map(|(k, v)| {
                let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
                (k, m)
            })
            .collect()
    }
}
