//! Steps 6-8 of a training step: old and reference log-probs, advantages, and the policy update
//! over mini-batches (one optimizer step each) and micro-batches (gradient accumulation).

use super::batch::{self, TrainBatch};
use super::Trainer;
use crate::generator::GeneratorOutput;
use crate::logging::Metrics;
use anyhow::Result;
use candle_core::{DType, Tensor};
use rlvr_algo::reduction::{LossReduction, MiniBatchReducer};
use rlvr_model::logprobs::LogProbOptions;
use rlvr_model::Model;

/// Runs steps 6-8 on the whole (post-processed) batch and returns the policy metrics.
pub fn train_on_batch(t: &mut Trainer, out: &GeneratorOutput, full: &TrainBatch) -> Result<Metrics> {
    let cfg = t.cfg.clone();
    let alg = &cfg.trainer.algorithm;
    let temperature = cfg.generator.sampling_params.temperature;
    let rows = out.len();
    let micro_fwd = cfg.trainer.micro_forward_batch_size_per_gpu.max(1);

    // 6. Old-policy (and reference) log-probs, recomputed by the trainer in forward-sized chunks.
    let t0 = std::time::Instant::now();
    let old_logprobs = forward_logprobs(&t.policy, out, full, micro_fwd, temperature, t.pad_id)?;
    let ref_logprobs = match &t.reference {
        Some(reference) => Some(forward_logprobs(reference, out, full, micro_fwd, temperature, t.pad_id)?),
        None => None,
    };
    let mut metrics = Metrics::new();
    metrics.insert("timing/fwd_logprobs".into(), t0.elapsed().as_secs_f64());

    // KL in the reward (the alternative to the KL loss): r_t -= coef * kl_t.
    let mut token_rewards = full.token_rewards.clone();
    if alg.use_kl_in_reward {
        if let Some(r) = &ref_logprobs {
            let kl = rlvr_algo::kl::approx_kl(&old_logprobs, r, alg.kl_estimator_type.parse()?, Some(&full.response_mask))?;
            token_rewards = (token_rewards - (kl * alg.kl_loss_coef)?)?;
        }
    }

    // 7. Advantages.
    let (mut advantages, _returns) = rlvr_algo::advantages::compute(
        &alg.advantage_estimator,
        &rlvr_algo::advantages::AdvantageInput {
            token_level_rewards: &token_rewards,
            response_mask: &full.response_mask,
            uids: &out.uids,
            values: None,
            gamma: alg.gamma,
            lambd: alg.lambd,
            norm_by_std: alg.grpo_norm_by_std,
        },
    )?;
    if alg.advantage_batch_normalize {
        advantages = rlvr_algo::advantages::advantage_batch_normalize(&advantages, &full.response_mask)?;
    }
    let masked_adv = (&advantages * &full.response_mask)?;
    let n_tokens = full.response_mask.sum_all()?.to_scalar::<f32>()?.max(1.0);
    metrics.insert(
        "loss/avg_raw_advantages".into(),
        (masked_adv.sum_all()?.to_scalar::<f32>()? / n_tokens) as f64,
    );

    // 8. Policy update: contiguous mini-batches of policy_mini_batch_size prompts.
    let n = cfg.generator.n_samples_per_prompt;
    let mini_rows = (cfg.trainer.policy_mini_batch_size * n).min(rows).max(1);
    let micro_rows = cfg.trainer.micro_train_batch_size_per_gpu.max(1);
    let loss_cfg = policy_loss_config(&cfg);
    let reduction: LossReduction = alg.loss_reduction.parse()?;
    let mut acc = MetricAcc::default();
    for _epoch in 0..cfg.trainer.update_epochs_per_batch {
        for mini_start in (0..rows).step_by(mini_rows) {
            let mini_end = (mini_start + mini_rows).min(rows);
            let mini_loss_mask = full.loss_mask.narrow(0, mini_start, mini_end - mini_start)?;
            let reducer = MiniBatchReducer::new(reduction, &mini_loss_mask, n, alg.max_seq_len)?;
            let mut grads: Option<candle_core::backprop::GradStore> = None;
            for micro_start in (mini_start..mini_end).step_by(micro_rows) {
                let micro_end = (micro_start + micro_rows).min(mini_end);
                let idx: Vec<usize> = (micro_start..micro_end).collect();
                let mb = batch::build(out, &idx, t.pad_id, t.policy.device())?;
                let r = mb.response_len;
                let take = |x: &Tensor| -> Result<Tensor> {
                    Ok(x.narrow(0, micro_start, micro_end - micro_start)?.narrow(1, 0, r)?.contiguous()?)
                };
                let old = take(&old_logprobs)?;
                let adv = take(&advantages)?;
                let lp = t.policy.response_logprobs(
                    &mb.input_ids,
                    &mb.attention_mask,
                    r,
                    &LogProbOptions { temperature, entropy: true, grad: true, ..Default::default() },
                )?;
                let entropy = lp.entropy.clone().expect("entropy requested");
                let (token_loss, loss_metrics) =
                    rlvr_algo::policy_loss::compute(&alg.policy_loss_type, &lp.logprobs, &old, &adv, &mb.loss_mask, &loss_cfg)?;
                let rows_in_mini = micro_start - mini_start..micro_end - mini_start;
                let policy_loss = reducer.reduce_micro(&token_loss, &mb.loss_mask, rows_in_mini.clone())?;
                let mut loss = policy_loss.clone();
                if alg.use_kl_loss {
                    if let Some(reference) = &ref_logprobs {
                        let ref_lp = take(reference)?;
                        let kl = rlvr_algo::kl::approx_kl(
                            &lp.logprobs,
                            &ref_lp,
                            alg.kl_estimator_type.parse()?,
                            Some(&mb.loss_mask),
                        )?;
                        let kl_loss = reducer.reduce_micro(&kl, &mb.loss_mask, rows_in_mini.clone())?;
                        acc.add("policy/policy_kl", kl_loss.to_dtype(DType::F64)?.to_scalar::<f64>()?);
                        loss = (loss + (kl_loss * alg.kl_loss_coef)?)?;
                    }
                }
                let entropy_term = reducer.reduce_micro(&entropy, &mb.loss_mask, rows_in_mini)?;
                acc.add("policy/policy_entropy", entropy_term.to_dtype(DType::F64)?.to_scalar::<f64>()?);
                if alg.use_entropy_loss {
                    loss = (loss - (entropy_term * alg.entropy_loss_coef)?)?;
                }
                acc.add("policy/policy_loss", policy_loss.to_dtype(DType::F64)?.to_scalar::<f64>()?);
                acc.add("policy/final_loss", loss.to_dtype(DType::F64)?.to_scalar::<f64>()?);
                for (k, v) in loss_metrics {
                    acc.add_mean(&format!("policy/loss_metrics/{k}"), v);
                }
                let g = loss.backward()?;
                grads = Some(match grads {
                    None => g,
                    Some(acc_g) => add_grads(acc_g, g, &t.policy)?,
                });
            }
            if let Some(grads) = grads {
                let stats = t.optimizer.step(&grads)?;
                acc.add_mean("policy/grad_norm", stats.grad_norm);
                acc.add_mean("policy/policy_lr", stats.lr);
                if stats.skipped {
                    acc.add("policy/skipped_steps", 1.0);
                }
            }
            acc.end_mini_batch();
        }
    }
    metrics.extend(acc.finish());
    Ok(metrics)
}

/// Log-probs `[B, R]` of every row's response under `model` (no grad), in chunks of `micro` rows.
fn forward_logprobs(
    model: &Model,
    out: &GeneratorOutput,
    full: &TrainBatch,
    micro: usize,
    temperature: f64,
    pad_id: u32,
) -> Result<Tensor> {
    let rows = out.len();
    let r_full = full.response_len;
    let mut parts = Vec::new();
    for start in (0..rows).step_by(micro) {
        let idx: Vec<usize> = (start..(start + micro).min(rows)).collect();
        let mb = batch::build(out, &idx, pad_id, model.device())?;
        let lp = model.response_logprobs(
            &mb.input_ids,
            &mb.attention_mask,
            mb.response_len,
            &LogProbOptions { temperature, entropy: false, grad: false, ..Default::default() },
        )?;
        let lp = lp.logprobs.detach();
        let pad = r_full - mb.response_len;
        parts.push(if pad > 0 { lp.pad_with_zeros(1, 0, pad)? } else { lp });
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Sums two gradient stores over the policy's parameters.
fn add_grads(
    mut acc: candle_core::backprop::GradStore,
    g: candle_core::backprop::GradStore,
    model: &Model,
) -> Result<candle_core::backprop::GradStore> {
    for var in model.vars() {
        if let Some(new) = g.get(var.as_tensor()) {
            let sum = match acc.get(var.as_tensor()) {
                Some(old) => (old + new)?,
                None => new.clone(),
            };
            acc.insert(var.as_tensor(), sum);
        }
    }
    Ok(acc)
}

fn policy_loss_config(cfg: &crate::config::Config) -> rlvr_algo::policy_loss::PolicyLossConfig {
    let a = &cfg.trainer.algorithm;
    rlvr_algo::policy_loss::PolicyLossConfig {
        eps_clip_low: a.eps_clip_low,
        eps_clip_high: a.eps_clip_high,
        clip_ratio_c: a.clip_ratio_c,
        ..Default::default()
    }
}

/// Accumulates per-micro-batch metrics: sums within a mini-batch (the reduced losses add up to the
/// mini-batch loss), then means over mini-batches.
#[derive(Default)]
struct MetricAcc {
    mini: std::collections::BTreeMap<String, (f64, usize, bool)>,
    done: std::collections::BTreeMap<String, Vec<f64>>,
}

impl MetricAcc {
    fn add(&mut self, k: &str, v: f64) {
        let e = self.mini.entry(k.to_string()).or_insert((0.0, 0, false));
        e.0 += v;
        e.1 += 1;
    }
    fn add_mean(&mut self, k: &str, v: f64) {
        let e = self.mini.entry(k.to_string()).or_insert((0.0, 0, true));
        e.0 += v;
        e.1 += 1;
    }
    fn end_mini_batch(&mut self) {
        for (k, (sum, count, mean)) in std::mem::take(&mut self.mini) {
            let v = if mean { sum / count.max(1) as f64 } else { sum };
            self.done.entry(k).or_default().push(v);
        }
    }
    fn finish(mut self) -> Metrics {
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
