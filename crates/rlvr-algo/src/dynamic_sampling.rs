//! DAPO dynamic sampling (`trainer.algorithm.dynamic_sampling.*`), on raw environment rewards.
//!
//! - `filter`: drop prompt groups whose rewards have zero population std (exactly, like `np.std`);
//!   keep generating from the next prompt batches, accumulating the kept rows in
//!   [`DynamicSampler`]'s state, until `train_batch_size` groups are collected; then return the
//!   first `train_batch_size × n` rows. With `n_samples_per_prompt == 1` nothing is dropped; with
//!   `n > 1` a singleton group (std 0) is dropped.
//! - `replace`: if more than `min_replace_ratio` of the groups are good, overwrite the rows of each
//!   zero-std group with a copy of a randomly chosen good group (seeded); otherwise resample.
//!
//! After `max_sample_batches` generation batches without success (and `max_sample_batches > 0`),
//! [`Error::DynamicSamplingLimit`] is returned with SkyRL's message. REF crashed (`np.min([])`)
//! when two consecutive batches kept nothing; here that is just an empty accumulation.

use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// `dynamic_sampling.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Filter,
    Replace,
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "filter" => Ok(Strategy::Filter),
            "replace" => Ok(Strategy::Replace),
            other => Err(Error::invalid(format!(
                "Invalid dynamic sampling type: {other} (expected filter, replace or null)"
            ))),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Filter => "filter",
            Strategy::Replace => "replace",
        })
    }
}

/// Settings (SkyRL defaults: max_sample_batches 30, min_replace_ratio 0.3).
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicSamplingConfig {
    /// `None` = off (rows pass through).
    pub strategy: Option<Strategy>,
    pub train_batch_size: usize,
    pub n_samples_per_prompt: usize,
    /// `<= 0` = unlimited.
    pub max_sample_batches: i64,
    pub min_replace_ratio: f64,
}

impl Default for DynamicSamplingConfig {
    /// Off, with SkyRL's defaults for the rest.
    fn default() -> Self {
        DynamicSamplingConfig {
            strategy: None,
            train_batch_size: 1,
            n_samples_per_prompt: 1,
            max_sample_batches: 30,
            min_replace_ratio: 0.3,
        }
    }
}

/// Accumulated state of the `filter` strategy between generation batches.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterState<T> {
    /// Generation batches seen so far in this training step.
    pub sample_batch_count: usize,
    /// Groups kept so far.
    pub num_prompts_in_batch: usize,
    pub rows: Vec<T>,
    pub uids: Vec<String>,
}

/// What to do after a generation batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    /// Train on these rows (same length as `uids`).
    Ready { rows: Vec<T>, uids: Vec<String> },
    /// Generate another batch from the next prompts (same global step).
    KeepSampling,
}

/// Groups chosen by `replace` (for logging and tests).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplaceReport {
    pub good_uids: Vec<String>,
    pub bad_uids: Vec<String>,
    /// `(bad row, replacement row)` pairs that were copied.
    pub replaced_rows: Vec<(usize, usize)>,
}

/// The stateful dynamic sampler of one trainer.
pub struct DynamicSampler<T> {
    config: DynamicSamplingConfig,
    sample_batch_count: usize,
    filter: Option<FilterState<T>>,
    rng: StdRng,
    last_replace: Option<ReplaceReport>,
}

impl<T: Clone> DynamicSampler<T> {
    pub fn new(config: DynamicSamplingConfig, seed: u64) -> Self {
        DynamicSampler {
            config,
            sample_batch_count: 0,
            filter: None,
            rng: StdRng::seed_from_u64(seed),
            last_replace: None,
        }
    }

    pub fn config(&self) -> &DynamicSamplingConfig {
        &self.config
    }

    /// Generation batches seen in the current training step (0 after a `Ready`).
    pub fn sample_batch_count(&self) -> usize {
        self.sample_batch_count
    }

    /// The `filter` accumulation (None when nothing is pending).
    pub fn filter_state(&self) -> Option<&FilterState<T>> {
        self.filter.as_ref()
    }

    /// What the last `replace` call decided.
    pub fn last_replace(&self) -> Option<&ReplaceReport> {
        self.last_replace.as_ref()
    }

    /// Forget any accumulation (start of a new training step).
    pub fn reset(&mut self) {
        self.sample_batch_count = 0;
        self.filter = None;
    }

    /// Processes one generation batch: `rows[i]` has group `uids[i]` and scalar reward
    /// `rewards[i]` (token-level rewards summed by the caller).
    pub fn process(
        &mut self,
        rows: Vec<T>,
        uids: Vec<String>,
        rewards: &[f64],
    ) -> Result<Outcome<T>> {
        if rows.len() != uids.len() || rows.len() != rewards.len() {
            return Err(Error::invalid(format!(
                "dynamic sampling got {} rows, {} uids and {} rewards",
                rows.len(),
                uids.len(),
                rewards.len()
            )));
        }
        let Some(strategy) = self.config.strategy else {
            return Ok(Outcome::Ready { rows, uids });
        };
        self.sample_batch_count += 1;
        let outcome = match strategy {
            Strategy::Filter => self.filter(rows, uids, rewards),
            Strategy::Replace => self.replace(rows, uids, rewards),
        };
        match outcome {
            Outcome::KeepSampling => {
                let max = self.config.max_sample_batches;
                if max > 0 && self.sample_batch_count as i64 >= max {
                    self.reset();
                    return Err(Error::DynamicSamplingLimit {
                        strategy: strategy.to_string(),
                        max_sample_batches: max,
                    });
                }
                Ok(Outcome::KeepSampling)
            }
            ready => {
                self.reset();
                Ok(ready)
            }
        }
    }

    fn filter(&mut self, rows: Vec<T>, uids: Vec<String>, rewards: &[f64]) -> Outcome<T> {
        let n = self.config.n_samples_per_prompt;
        let good: Vec<String> = groups(&uids, rewards)
            .into_iter()
            .filter(|(_, vals)| n == 1 || population_std(vals) > 0.0)
            .map(|(uid, _)| uid)
            .collect();
        let state = self.filter.get_or_insert_with(|| FilterState {
            sample_batch_count: 0,
            num_prompts_in_batch: 0,
            rows: Vec::new(),
            uids: Vec::new(),
        });
        state.sample_batch_count = self.sample_batch_count;
        state.num_prompts_in_batch += good.len();
        for (row, uid) in rows.into_iter().zip(uids) {
            if good.contains(&uid) {
                state.rows.push(row);
                state.uids.push(uid);
            }
        }
        if state.num_prompts_in_batch < self.config.train_batch_size {
            return Outcome::KeepSampling;
        }
        let max_rows = self.config.train_batch_size * n;
        let mut state = self.filter.take().expect("state was just set");
        state.rows.truncate(max_rows);
        state.uids.truncate(max_rows);
        Outcome::Ready {
            rows: state.rows,
            uids: state.uids,
        }
    }

    fn replace(&mut self, mut rows: Vec<T>, mut uids: Vec<String>, rewards: &[f64]) -> Outcome<T> {
        let n = self.config.n_samples_per_prompt;
        let grouped = groups(&uids, rewards);
        let (good, bad): (Vec<_>, Vec<_>) = grouped
            .iter()
            .partition(|(_, vals)| n == 1 || population_std(vals) > 0.0);
        let good: Vec<String> = good.into_iter().map(|(u, _)| u.clone()).collect();
        let bad: Vec<String> = bad.into_iter().map(|(u, _)| u.clone()).collect();
        if (good.len() as f64) <= grouped.len() as f64 * self.config.min_replace_ratio {
            self.last_replace = None;
            return Outcome::KeepSampling;
        }
        // A random good group for each bad group: a permutation when there are enough good
        // groups, otherwise draws with replacement (SkyRL's rule).
        let chosen: Vec<&String> = if good.len() >= bad.len() {
            let mut perm: Vec<usize> = (0..good.len()).collect();
            rand::seq::SliceRandom::shuffle(perm.as_mut_slice(), &mut self.rng);
            perm.iter().take(bad.len()).map(|&i| &good[i]).collect()
        } else {
            (0..bad.len())
                .map(|_| &good[self.rng.gen_range(0..good.len())])
                .collect()
        };
        let rows_of = |uid: &str| -> Vec<usize> {
            uids.iter()
                .enumerate()
                .filter(|(_, u)| u.as_str() == uid)
                .map(|(i, _)| i)
                .collect()
        };
        let bad_rows: Vec<usize> = bad.iter().flat_map(|u| rows_of(u)).collect();
        let src_rows: Vec<usize> = chosen.iter().flat_map(|u| rows_of(u)).collect();
        let pairs: Vec<(usize, usize)> = bad_rows.into_iter().zip(src_rows).collect();
        for &(dst, src) in &pairs {
            rows[dst] = rows[src].clone();
        }
        let original = uids.clone();
        for &(dst, src) in &pairs {
            uids[dst] = original[src].clone();
        }
        self.last_replace = Some(ReplaceReport {
            good_uids: good,
            bad_uids: bad,
            replaced_rows: pairs,
        });
        Outcome::Ready { rows, uids }
    }
}

/// Rewards grouped by uid, in order of first appearance.
fn groups(uids: &[String], rewards: &[f64]) -> Vec<(String, Vec<f64>)> {
    crate::ops::group_by_uid(&uids[..uids.len().min(rewards.len())])
        .into_iter()
        .map(|(uid, rows)| (uid.to_string(), rows.iter().map(|&i| rewards[i]).collect()))
        .collect()
}

/// numpy's pairwise summation (`np.add.reduce` on a contiguous f64 array).
fn pairwise_sum(v: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    if v.len() < 8 {
        v.iter().fold(0.0, |a, &x| a + x)
    } else if v.len() <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&v[..8]);
        let mut i = 8;
        while i + 8 <= v.len() {
            for k in 0..8 {
                r[k] += v[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &v[i..] {
            res += x;
        }
        res
    } else {
        let half = (v.len() / 2) / 8 * 8;
        pairwise_sum(&v[..half]) + pairwise_sum(&v[half..])
    }
}

/// `np.std(values)` (population, ddof 0), with numpy's summation order so "equal but not
/// representable" rewards (0.1, 0.1, 0.1) give the same tiny non-zero std as SkyRL.
pub fn population_std(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let n = values.len() as f64;
    let mean = pairwise_sum(values) / n;
    let sq: Vec<f64> = values.iter().map(|x| (x - mean) * (x - mean)).collect();
    (pairwise_sum(&sq) / n).sqrt()
}

/// SkyRL `zero_variance_filter`: indices of rows whose group has non-zero population std or is a
/// singleton.
pub fn zero_variance_filter(rewards: &[f64], uids: &[String]) -> Vec<usize> {
    let keep: Vec<String> = groups(uids, rewards)
        .into_iter()
        .filter(|(_, v)| v.len() == 1 || population_std(v) > 0.0)
        .map(|(u, _)| u)
        .collect();
    (0..uids.len())
        .filter(|&i| keep.contains(&uids[i]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(strategy: Strategy, tbs: usize, n: usize, max: i64) -> DynamicSamplingConfig {
        DynamicSamplingConfig {
            strategy: Some(strategy),
            train_batch_size: tbs,
            n_samples_per_prompt: n,
            max_sample_batches: max,
            min_replace_ratio: 0.3,
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// Several calls with mixed group sizes (a singleton, a 3-group, 2-groups), including a batch
    /// that keeps nothing twice in a row (REF crashed there).
    #[test]
    fn filter_accumulates_across_calls_with_mixed_groups() {
        let mut ds = DynamicSampler::new(cfg(Strategy::Filter, 3, 2, 0), 0);
        let out = ds
            .process(
                vec![0, 1, 2, 3],
                s(&["a", "b", "b", "b"]),
                &[1.0, 0.0, 0.0, 1.0],
            )
            .unwrap();
        assert_eq!(out, Outcome::KeepSampling);
        assert_eq!(ds.filter_state().unwrap().uids, s(&["b", "b", "b"]));
        for _ in 0..2 {
            let out = ds.process(vec![9, 9], s(&["z", "z"]), &[1.0, 1.0]).unwrap();
            assert_eq!(out, Outcome::KeepSampling);
        }
        assert_eq!(ds.filter_state().unwrap().num_prompts_in_batch, 1);
        assert_eq!(ds.sample_batch_count(), 3);
        let out = ds
            .process(
                vec![10, 11, 12, 13, 14],
                s(&["c", "c", "d", "d", "e"]),
                &[0.0, 0.5, 1.0, 0.0, 0.3],
            )
            .unwrap();
        // b (3 rows) + c + d = 3 groups; the first 3 x 2 rows are kept.
        assert_eq!(
            out,
            Outcome::Ready {
                rows: vec![1, 2, 3, 10, 11, 12],
                uids: s(&["b", "b", "b", "c", "c", "d"])
            }
        );
        assert_eq!(ds.sample_batch_count(), 0);
        assert!(ds.filter_state().is_none());
    }

    #[test]
    fn limit_error_has_skyrl_text() {
        let mut ds = DynamicSampler::new(cfg(Strategy::Filter, 2, 2, 1), 0);
        let err = ds
            .process(vec![0, 1], s(&["a", "a"]), &[1.0, 1.0])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Exiting training loop due to hitting dynamic sampling limit for filter strategy with 1 max sample batches. Please check your data difficulty distribution."
        );
    }

    #[test]
    fn replace_copies_good_groups_over_bad_ones() {
        let mut ds = DynamicSampler::new(cfg(Strategy::Replace, 3, 2, 30), 7);
        let out = ds
            .process(
                vec![0, 1, 2, 3, 4, 5],
                s(&["a", "a", "b", "b", "c", "c"]),
                &[1.0, 0.0, 1.0, 1.0, 0.0, 1.0],
            )
            .unwrap();
        let Outcome::Ready { rows, uids } = out else {
            panic!("expected Ready")
        };
        assert_eq!(&rows[..2], &[0, 1]);
        assert_eq!(&rows[4..], &[4, 5]);
        assert!(rows[2..4] == [0, 1] || rows[2..4] == [4, 5]);
        assert_eq!(uids[2], uids[3]);
        assert_ne!(uids[2], "b");
    }

    #[test]
    fn population_std_follows_numpy_rounding() {
        assert!(population_std(&[0.1, 0.1, 0.1]) > 0.0);
        assert_eq!(population_std(&[0.5, 0.5, 0.5]), 0.0);
    }
}
