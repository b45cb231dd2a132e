//! DAPO's overlong handling: overlong filtering of loss masks, soft overlong punishment of rewards,
//! and the reward metrics SkyRL logs after punishment.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// HEAD behaviour (what we use): a response whose stop reason is not exactly `"stop"` (it hit the
/// length limit, was aborted, or has no stop reason) gets an all-zero loss mask. It stays in the
/// batch and in its group's reward statistics.
pub fn apply_overlong_filtering(
    loss_masks: &[Vec<u8>],
    stop_reasons: &[Option<String>],
) -> Result<Vec<Vec<u8>>> {
    if loss_masks.len() != stop_reasons.len() {
        return Err(Error::invalid(format!(
            "loss_masks and stop_reasons must have the same length (got {} and {})",
            loss_masks.len(),
            stop_reasons.len()
        )));
    }
    Ok(loss_masks
        .iter()
        .zip(stop_reasons)
        .map(|(mask, reason)| match reason.as_deref() {
            Some("stop") => mask.clone(),
            _ => vec![0; mask.len()],
        })
        .collect())
}

/// REF behaviour, kept for comparison only: zero the mask unless the last response token is EOS.
/// It misclassifies responses that end with EOS because the limit was hit exactly there, and
/// multi-turn responses; HEAD replaced it with the stop reason.
pub fn apply_overlong_filtering_by_eos(
    loss_masks: &[Vec<u8>],
    response_ids: &[Vec<u32>],
    eos_token_id: u32,
) -> Result<Vec<Vec<u8>>> {
    if loss_masks.len() != response_ids.len() {
        return Err(Error::invalid(format!(
            "loss_masks and response_ids must have the same length (got {} and {})",
            loss_masks.len(),
            response_ids.len()
        )));
    }
    Ok(loss_masks
        .iter()
        .zip(response_ids)
        .map(|(mask, ids)| {
            if ids.last() == Some(&eos_token_id) {
                mask.clone()
            } else {
                vec![0; mask.len()]
            }
        })
        .collect())
}

/// Soft overlong punishment settings (`trainer.algorithm.overlong_buffer.*` and
/// `generator.sampling_params.max_generate_length`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlongBuffer {
    pub max_generate_length: usize,
    pub len: usize,
    pub penalty_factor: f64,
}

impl OverlongBuffer {
    /// DAPO: with `start = L_max - len`, a response with `start < |y| <= L_max` loses
    /// `(|y| - start) / len * penalty_factor`; exactly `L_max` loses the full factor. SkyRL's branch
    /// for `|y| > L_max` (unreachable in practice) sets the reward to 0.0, reproduced here. Empty
    /// responses are not punished (REF crashes on them).
    pub fn punish(&self, reward: f64, response_len: usize) -> f64 {
        let start = self.max_generate_length as i64 - self.len as i64;
        let l = response_len as i64;
        if l > self.max_generate_length as i64 {
            0.0
        } else if l > start {
            let overlong = (l - start) as f64;
            reward - overlong / self.len as f64 * self.penalty_factor
        } else {
            reward
        }
    }
}

/// Punishes every reward by its response length.
pub fn soft_overlong_punishment(
    rewards: &[f64],
    response_lengths: &[usize],
    buffer: &OverlongBuffer,
) -> Result<Vec<f64>> {
    if rewards.len() != response_lengths.len() {
        return Err(Error::invalid(format!(
            "got {} rewards for {} responses",
            rewards.len(),
            response_lengths.len()
        )));
    }
    // A buffer longer than max_generate_length is allowed (every response is then in it).
    if buffer.len == 0 {
        return Err(Error::invalid("overlong_buffer.len must be > 0"));
    }
    Ok(rewards
        .iter()
        .zip(response_lengths)
        .map(|(&r, &l)| buffer.punish(r, l))
        .collect())
}

/// A scalar reward per response placed on its last token (`[len]` rows; empty responses get an
/// empty row).
pub fn token_level_rewards(rewards: &[f64], response_lengths: &[usize]) -> Vec<Vec<f64>> {
    rewards
        .iter()
        .zip(response_lengths)
        .map(|(&r, &l)| {
            let mut row = vec![0.0; l];
            if let Some(last) = row.last_mut() {
                *last = r;
            }
            row
        })
        .collect()
}

/// SkyRL's reward metrics: `reward/avg_raw_reward` (mean), `reward/avg_pass_at_{n}` (fraction of
/// uids with some reward > 0) and `reward/mean_positive_reward` (mean of `max(r, 0)`).
pub fn reward_metrics(
    rewards: &[f64],
    uids: &[String],
    n_samples_per_prompt: usize,
) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let n = rewards.len().max(1) as f64;
    m.insert(
        "reward/avg_raw_reward".into(),
        rewards.iter().sum::<f64>() / n,
    );
    m.insert(
        "reward/mean_positive_reward".into(),
        rewards.iter().map(|r| r.max(0.0)).sum::<f64>() / n,
    );
    let n_rows = uids.len().min(rewards.len());
    let groups = crate::ops::group_by_uid(&uids[..n_rows]);
    let passed = groups
        .iter()
        .filter(|(_, rows)| rows.iter().any(|&i| rewards[i] > 0.0))
        .count() as f64;
    m.insert(
        format!("reward/avg_pass_at_{n_samples_per_prompt}"),
        passed / groups.len().max(1) as f64,
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punishment_is_linear_in_the_buffer_and_full_at_max() {
        let b = OverlongBuffer {
            max_generate_length: 8,
            len: 4,
            penalty_factor: 1.0,
        };
        let out = soft_overlong_punishment(&[1.0; 5], &[0, 4, 5, 8, 9], &b).unwrap();
        assert_eq!(out, vec![1.0, 1.0, 0.75, 0.0, 0.0]);
    }

    #[test]
    fn filtering_keeps_only_stopped_responses() {
        let masks = vec![vec![1, 1], vec![1, 0]];
        let reasons = vec![Some("stop".to_string()), Some("length".to_string())];
        assert_eq!(
            apply_overlong_filtering(&masks, &reasons).unwrap(),
            vec![vec![1, 1], vec![0, 0]]
        );
        assert!(apply_overlong_filtering(&masks, &reasons[..1]).is_err());
    }
}
