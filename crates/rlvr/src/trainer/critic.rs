//! PPO's critic as SkyRL trains it (`trainer.critic.*`, needed by `advantage_estimator=gae`):
//! a value model with its own optimizer. Its values are computed beside the old log-probs (step
//! 6) and feed GAE; it is trained before the policy on the same batch, one optimizer step per
//! `critic_mini_batch_size` prompts, the clipped value loss averaged over micro-batches.

use super::batch::{self, TrainBatch};
use crate::dist;
use crate::generator::GeneratorOutput;
use crate::logging::Metrics;
use crate::optimizer::Optimizer;
use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use rlvr_algo::critic_loss::{ppo_critic_loss, values_mean};
use rlvr_model::{Precision, ValueModel};

pub struct Critic {
    pub model: ValueModel,
    pub optimizer: Optimizer,
}

/// What one critic update needs besides the rows.
pub struct CriticUpdate<'a> {
    /// The critic's values before the update (`[B, R]`, from [`Critic::values`]).
    pub old_values: &'a Tensor,
    /// GAE's returns `[B, R]`.
    pub returns: &'a Tensor,
    /// `[B, R]` loss mask of the whole batch.
    pub loss_mask: &'a Tensor,
    pub mini_batches: &'a [(usize, usize)],
    pub micro_rows: usize,
    pub epochs: usize,
    pub value_clip: Option<f64>,
    pub pad_id: u32,
    pub precision: Precision,
    /// Which rows this data-parallel rank trains on.
    pub shard: &'a super::update::Shard<'a>,
}

impl Critic {
    /// Values `[B, R]` of every row's response (no grad), in chunks of `micro` rows, padded to the
    /// batch's response width.
    pub fn values(
        &self,
        out: &GeneratorOutput,
        full: &TrainBatch,
        shard: &super::update::Shard,
        micro: usize,
        pad_id: u32,
        precision: Precision,
    ) -> Result<Tensor> {
        let device = self.model.device();
        super::update::forward_in_chunks(out, full, shard, micro, pad_id, device, |_, mb| {
            Ok(self.model.values(
                &mb.input_ids,
                &mb.attention_mask,
                mb.response_len,
                false,
                precision,
            )?)
        })
    }

    /// Trains on the batch; returns SkyRL's `critic/*` metrics (means over micro-batches, then
    /// over mini-batches and epochs).
    pub fn train(&mut self, out: &GeneratorOutput, u: &CriticUpdate) -> Result<Metrics> {
        let mut acc = super::update::MetricAcc::default();
        let device = self.model.device().clone();
        for _ in 0..u.epochs {
            for &(start, end) in u.mini_batches {
                let mut grads: Option<GradStore> = None;
                // Micro-batches of the whole mini-batch, over every rank's share.
                let n_micro: usize = (0..u.shard.group.size())
                    .map(|r| {
                        let (lo, hi) = u.shard.rows_of((start, end), r);
                        (hi - lo).div_ceil(u.micro_rows)
                    })
                    .sum();
                let (lo, hi) = u.shard.rows((start, end));
                for m_start in (lo..hi).step_by(u.micro_rows) {
                    let m_end = (m_start + u.micro_rows).min(hi);
                    let idx: Vec<usize> = (m_start..m_end).collect();
                    let mb = batch::build(out, &idx, u.pad_id, &device)?;
                    let r = mb.response_len;
                    let take = |x: &Tensor| -> Result<Tensor> {
                        Ok(x.narrow(0, m_start, m_end - m_start)?
                            .narrow(1, 0, r)?
                            .contiguous()?)
                    };
                    let values = self.model.values(
                        &mb.input_ids,
                        &mb.attention_mask,
                        r,
                        true,
                        u.precision,
                    )?;
                    let mask = take(u.loss_mask)?;
                    let loss = ppo_critic_loss(
                        &values,
                        &take(u.old_values)?,
                        &take(u.returns)?,
                        u.value_clip,
                        Some(&mask),
                    )?;
                    acc.add_mean(
                        "critic/critic_loss",
                        f64::from(loss.loss.to_scalar::<f32>()?),
                    );
                    acc.add_mean("critic/values_mean", values_mean(&values, Some(&mask))?);
                    if let Some(c) = loss.clipfrac {
                        acc.add_mean("critic/values_clipfrac", c);
                    }
                    acc.add_mean("critic/critic_lr", self.optimizer.current_lr());
                    // SkyRL scales the summed gradients by 1 / micro-batches before the step.
                    let g = (loss.loss / n_micro as f64)?.backward()?;
                    grads.get_or_insert_with(GradStore::default).extend(g)?;
                }
                acc.merge_ranks(u.shard.group)?;
                let vars = self.model_vars();
                let grads =
                    dist::all_reduce_grads(u.shard.group, grads, &vars, "critic gradients")?;
                if let Some(grads) = grads {
                    let stats = self.optimizer.step(grads)?;
                    acc.add_mean("critic/grad_norm", stats.grad_norm);
                }
                acc.end_mini_batch();
            }
        }
        Ok(acc.finish())
    }

    fn model_vars(&self) -> Vec<candle_core::Var> {
        self.model
            .named_vars()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }
}
