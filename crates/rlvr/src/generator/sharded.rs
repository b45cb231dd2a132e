//! Generation split over data-parallel ranks: each rank generates and scores its share of the
//! prompt groups, then every rank receives every row, in the order one process would have made
//! them. Request seeds follow a group's place in the whole call, so the samples are those of one
//! process whatever the number of ranks.

use super::{Generator, GeneratorOutput, PromptGroup, Sampling, StopReason};
use crate::dist::{split_even, ProcessGroup};
use anyhow::{Context, Result};
use rlvr_model::Model;
use std::rc::Rc;

pub struct ShardedGenerator {
    inner: Box<dyn Generator>,
    group: Rc<dyn ProcessGroup>,
}

impl ShardedGenerator {
    pub fn new(inner: Box<dyn Generator>, group: Rc<dyn ProcessGroup>) -> Self {
        Self { inner, group }
    }
}

/// What a rank generated for its groups (the groups themselves every rank already has).
#[derive(serde::Serialize, serde::Deserialize)]
struct Part {
    prompt_token_ids: Vec<Vec<u32>>,
    response_ids: Vec<Vec<u32>>,
    responses: Vec<String>,
    rewards: Vec<f64>,
    loss_masks: Vec<Vec<f32>>,
    stop_reasons: Vec<StopReason>,
    rollout_logprobs: Vec<Vec<f32>>,
}

impl Generator for ShardedGenerator {
    fn generate(
        &mut self,
        groups: &[PromptGroup],
        sampling: &Sampling,
        seed: u64,
    ) -> Result<GeneratorOutput> {
        let size = self.group.size();
        let (lo, hi) = split_even(groups.len(), self.group.rank(), size);
        let mine = if lo < hi {
            self.inner
                .generate(&groups[lo..hi], sampling, super::shard_seed(seed, lo))?
        } else {
            GeneratorOutput::default()
        };
        let part = Part {
            prompt_token_ids: mine.prompt_token_ids,
            response_ids: mine.response_ids,
            responses: mine.responses,
            rewards: mine.rewards,
            loss_masks: mine.loss_masks,
            stop_reasons: mine.stop_reasons,
            rollout_logprobs: mine.rollout_logprobs,
        };
        let bytes = postcard::to_stdvec(&part).context("encoding this rank's generations")?;
        let parts = self.group.all_gather_bytes(&bytes, "generation results")?;
        let mut out = GeneratorOutput::default();
        for (rank, bytes) in parts.iter().enumerate() {
            let p: Part = postcard::from_bytes(bytes)
                .with_context(|| format!("decoding rank {rank}'s generations"))?;
            let (lo, hi) = split_even(groups.len(), rank, size);
            for g in &groups[lo..hi] {
                for _ in 0..g.n {
                    out.uids.push(g.uid.clone());
                    out.rows.push(g.row.clone());
                }
            }
            out.prompt_token_ids.extend(p.prompt_token_ids);
            out.response_ids.extend(p.response_ids);
            out.responses.extend(p.responses);
            out.rewards.extend(p.rewards);
            out.loss_masks.extend(p.loss_masks);
            out.stop_reasons.extend(p.stop_reasons);
            out.rollout_logprobs.extend(p.rollout_logprobs);
        }
        Ok(out)
    }

    fn sync_weights(&mut self, policy: &Model, global_step: usize) -> Result<()> {
        self.inner.sync_weights(policy, global_step)
    }
}
