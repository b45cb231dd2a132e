//! The prompt loader: shuffles with the run's seed, hands out `train_batch_size` prompts at a
//! time, drops the incomplete last batch (as SkyRL's loader does), and can be resumed mid-epoch.

use super::PromptRow;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Where the loader stands; saved in checkpoints so a resumed run continues with the same prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LoaderState {
    pub epoch: usize,
    /// Index of the next batch within the epoch.
    pub batch_in_epoch: usize,
}

pub struct PromptLoader {
    rows: Vec<PromptRow>,
    batch_size: usize,
    seed: u64,
    shuffle: bool,
    order: Vec<usize>,
    state: LoaderState,
}

impl PromptLoader {
    pub fn new(rows: Vec<PromptRow>, batch_size: usize, seed: u64, shuffle: bool) -> Self {
        let mut loader = Self {
            rows,
            batch_size: batch_size.max(1),
            seed,
            shuffle,
            order: Vec::new(),
            state: LoaderState::default(),
        };
        loader.reorder();
        loader
    }

    /// Number of full batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.rows.len() / self.batch_size
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// Batches handed out so far, over all epochs.
    pub fn batches_drawn(&self) -> usize {
        self.state.epoch * self.batches_per_epoch() + self.state.batch_in_epoch
    }

    pub fn set_state(&mut self, state: LoaderState) {
        self.state = state;
        self.reorder();
    }

    /// The next batch of `(row index, row)`; moves to the next epoch (re-shuffled) when the current
    /// one is used up. `None` only when the dataset holds fewer rows than one batch.
    pub fn next_batch(&mut self) -> Option<Vec<(usize, PromptRow)>> {
        if self.batches_per_epoch() == 0 {
            return None;
        }
        if self.state.batch_in_epoch >= self.batches_per_epoch() {
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
            self.reorder();
        }
        let start = self.state.batch_in_epoch * self.batch_size;
        let batch = self.order[start..start + self.batch_size]
            .iter()
            .map(|&i| (i, self.rows[i].clone()))
            .collect();
        self.state.batch_in_epoch += 1;
        Some(batch)
    }

    /// Each epoch's order depends only on (seed, epoch), so resuming needs no saved permutation.
    fn reorder(&mut self) {
        self.order = (0..self.rows.len()).collect();
        if self.shuffle {
            let mut rng = rand::rngs::StdRng::seed_from_u64(
                self.seed ^ (self.state.epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            self.order.shuffle(&mut rng);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Message, RewardSpec};

    fn rows(n: usize) -> Vec<PromptRow> {
        (0..n)
            .map(|i| PromptRow {
                data_source: "t".into(),
                prompt: vec![Message {
                    role: "user".into(),
                    content: i.to_string(),
                }],
                env_class: "t".into(),
                reward_spec: RewardSpec {
                    method: "rule".into(),
                    ground_truth: i.to_string(),
                },
                extra_info: serde_json::Value::Null,
            })
            .collect()
    }

    fn ids(b: Vec<(usize, PromptRow)>) -> Vec<usize> {
        b.into_iter().map(|(i, _)| i).collect()
    }

    #[test]
    fn epochs_cover_every_row_once_and_reshuffle() {
        let mut l = PromptLoader::new(rows(10), 3, 7, true);
        assert_eq!(l.batches_per_epoch(), 3);
        let mut e0: Vec<usize> = (0..3).flat_map(|_| ids(l.next_batch().unwrap())).collect();
        let e1: Vec<usize> = (0..3).flat_map(|_| ids(l.next_batch().unwrap())).collect();
        assert_eq!(l.state().epoch, 1);
        assert_ne!(e0, e1, "a new epoch is shuffled anew");
        e0.sort();
        e0.dedup();
        assert_eq!(e0.len(), 9, "no row twice within an epoch");
    }

    #[test]
    fn resume_mid_epoch_gives_the_same_batches() {
        let mut a = PromptLoader::new(rows(20), 4, 3, true);
        for _ in 0..7 {
            a.next_batch();
        }
        let saved = a.state();
        let expected: Vec<Vec<usize>> = (0..5).map(|_| ids(a.next_batch().unwrap())).collect();
        let mut b = PromptLoader::new(rows(20), 4, 3, true);
        b.set_state(saved);
        let got: Vec<Vec<usize>> = (0..5).map(|_| ids(b.next_batch().unwrap())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn too_small_dataset_gives_none() {
        assert!(PromptLoader::new(rows(2), 3, 0, true)
            .next_batch()
            .is_none());
    }
}
