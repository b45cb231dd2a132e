//! Generation split over data-parallel ranks: each rank generates and scores its share of the
//! prompt groups, then every rank receives every row, in the order one process would have made
//! them. Request seeds follow a group's place in the whole call, so the samples are those of one
//! process whatever the number of ranks.

use super::{Generator, GeneratorOutput, PromptGroup, Sampling};
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
        // The prompt rows are left out of the message: every rank has the groups.
        let bytes = postcard::to_stdvec(&mine).context("encoding this rank's generations")?;
        let parts = self.group.all_gather_bytes(&bytes, "generation results")?;
        let mut out = GeneratorOutput::default();
        for (rank, bytes) in parts.iter().enumerate() {
            let mut part: GeneratorOutput = postcard::from_bytes(bytes)
                .with_context(|| format!("decoding rank {rank}'s generations"))?;
            let (lo, hi) = split_even(groups.len(), rank, size);
            part.rows = groups[lo..hi]
                .iter()
                .flat_map(|g| std::iter::repeat_n(g.row.clone(), g.n))
                .collect();
            out.extend(part);
        }
        Ok(out)
    }

    fn sync_weights(&mut self, policy: &Model, global_step: usize) -> Result<()> {
        self.inner.sync_weights(policy, global_step)
    }
}
