//! Loss reductions over one optimizer mini-batch, independent of how it is split into micro-batches.
//!
//! HEAD SkyRL's approach, which we follow: before the update, each mini-batch's advantages are
//! pre-scaled by a per-row factor computed from the *whole* mini-batch's masks
//! ([`row_scales`] / [`scale_advantages_minibatch`]). Every micro-batch loss is then a plain masked
//! SUM ([`masked_sum`]); summing the micro-batch losses (and their gradients) gives exactly the
//! mini-batch reduction, whatever the micro-batch split. The policy losses are linear in the
//! advantage, so pre-scaling the advantage scales each token's loss.
//!
//! | reduction | per-row scale |
//! |---|---|
//! | `token_mean` | `1 / max(Σ mask over the mini-batch, 1)` (true token mean, DAPO Eq. 12) |
//! | `token_mean_legacy` | `1 / (max(Σ mask over the row's micro-batch, 1) · num_micro)`; rows past `num_micro · micro` get 0 |
//! | `sequence_mean` | `1 / (B · max(Σ mask over the row, 1))` (every row counts, even all-masked ones) |
//! | `seq_mean_token_sum_norm` | `1 / (B · max_seq_len)` |
//! | `prompt_mean` | `1 / (P · max(Σ mask over the row's prompt, 1))`; rows in no prompt get 0 |
//!
//! [`reduce_loss_ref`] is REF's per-call reduction (`reduce_loss` applied to one batch), kept for
//! REF-compatible single-call losses and the golden cross-checks.

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::ops;

/// `trainer.algorithm.loss_reduction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossReduction {
    #[default]
    TokenMean,
    TokenMeanLegacy,
    SequenceMean,
    SeqMeanTokenSumNorm,
    PromptMean,
}

impl LossReduction {
    pub const NAMES: [&'static str; 5] = [
        "token_mean",
        "token_mean_legacy",
        "sequence_mean",
        "seq_mean_token_sum_norm",
        "prompt_mean",
    ];

    pub fn name(self) -> &'static str {
        match self {
            LossReduction::TokenMean => "token_mean",
            LossReduction::TokenMeanLegacy => "token_mean_legacy",
            LossReduction::SequenceMean => "sequence_mean",
            LossReduction::SeqMeanTokenSumNorm => "seq_mean_token_sum_norm",
            LossReduction::PromptMean => "prompt_mean",
        }
    }
}

impl fmt::Display for LossReduction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LossReduction {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| {
                [
                    LossReduction::TokenMean,
                    LossReduction::TokenMeanLegacy,
                    LossReduction::SequenceMean,
                    LossReduction::SeqMeanTokenSumNorm,
                    LossReduction::PromptMean,
                ][i]
            })
            .ok_or_else(|| {
                Error::invalid(format!(
                    "Invalid loss reduction type: {s} (expected one of: {})",
                    Self::NAMES.join(", ")
                ))
            })
    }
}

/// Per-row advantage scale factors for one mini-batch (see the module table).
///
/// `row_token_counts[i]` is `Σ loss_mask[i, :]`. `prompt_boundaries` are `(start, end)` row ranges
/// relative to this mini-batch (required for `prompt_mean`).
pub fn row_scales(
    reduction: LossReduction,
    row_token_counts: &[f64],
    micro_batch_size: usize,
    max_seq_len: Option<usize>,
    prompt_boundaries: Option<&[(usize, usize)]>,
) -> Result<Vec<f64>> {
    let b = row_token_counts.len();
    let clamp1 = |x: f64| x.max(1.0);
    Ok(match reduction {
        LossReduction::TokenMean => {
            let total: f64 = row_token_counts.iter().sum();
            vec![1.0 / clamp1(total); b]
        }
        LossReduction::TokenMeanLegacy => {
            if micro_batch_size == 0 {
                return Err(Error::invalid("micro_batch_size must be > 0"));
            }
            let num_micro = b / micro_batch_size;
            let mut scales = vec![0.0; b];
            for m in 0..num_micro {
                let rows = m * micro_batch_size..(m + 1) * micro_batch_size;
                let tokens: f64 = row_token_counts[rows.clone()].iter().sum();
                for s in &mut scales[rows] {
                    *s = 1.0 / (clamp1(tokens) * num_micro as f64);
                }
            }
            scales
        }
        LossReduction::SequenceMean => row_token_counts
            .iter()
            .map(|&t| 1.0 / (b as f64 * clamp1(t)))
            .collect(),
        LossReduction::SeqMeanTokenSumNorm => {
            let max_seq_len = max_seq_len.ok_or_else(|| {
                Error::invalid(
                    "max_seq_len must be provided for seq_mean_token_sum_norm loss reduction",
                )
            })?;
            vec![1.0 / (b as f64 * max_seq_len as f64); b]
        }
        LossReduction::PromptMean => {
            let bounds = prompt_boundaries.ok_or_else(|| {
                Error::invalid("`prompt_mean` loss reduction requires `prompt_boundaries`")
            })?;
            let mut scales = vec![0.0; b];
            let num_prompts = bounds.len() as f64;
            for &(start, end) in bounds {
                if start > end || end > b {
                    return Err(Error::invalid(format!(
                        "prompt boundary ({start}, {end}) is outside the mini-batch of {b} rows"
                    )));
                }
                let tokens: f64 = row_token_counts[start..end].iter().sum();
                for s in &mut scales[start..end] {
                    *s = 1.0 / (num_prompts * clamp1(tokens));
                }
            }
            scales
        }
    })
}

/// HEAD's `apply_loss_reduction_to_advantages_minibatch`: the mini-batch's advantages `[B,R]`
/// multiplied by [`row_scales`].
pub fn scale_advantages_minibatch(
    advantages: &Tensor,
    loss_mask: &Tensor,
    reduction: LossReduction,
    micro_batch_size: usize,
    max_seq_len: Option<usize>,
    prompt_boundaries: Option<&[(usize, usize)]>,
) -> Result<Tensor> {
    let counts = ops::to_vec_f64(&loss_mask.to_dtype(candle_core::DType::F64)?.sum(1)?)?;
    let scales = row_scales(
        reduction,
        &counts,
        micro_batch_size,
        max_seq_len,
        prompt_boundaries,
    )?;
    apply_row_scales(advantages, &scales)
}

/// `advantages[i, :] * scales[i]`, computed in f64 and rounded once to the advantages' dtype.
pub fn apply_row_scales(advantages: &Tensor, scales: &[f64]) -> Result<Tensor> {
    let dtype = advantages.dtype();
    let col = Tensor::from_vec(scales.to_vec(), (scales.len(), 1), advantages.device())?;
    Ok(advantages
        .to_dtype(candle_core::DType::F64)?
        .broadcast_mul(&col)?
        .to_dtype(dtype)?)
}

/// Options of [`normalize_advantages`] (HEAD `RayPPOTrainer._normalize_advantages`).
#[derive(Debug, Clone, Copy)]
pub struct NormalizeOptions<'a> {
    pub reduction: LossReduction,
    pub advantage_batch_normalize: bool,
    pub micro_batch_size: usize,
    pub max_seq_len: Option<usize>,
    /// Row ranges of the optimizer mini-batches over the whole training batch.
    pub mini_batch_boundaries: &'a [(usize, usize)],
    /// Row ranges of the prompts over the whole training batch (needed for `prompt_mean`).
    pub prompt_boundaries: Option<&'a [(usize, usize)]>,
}

/// Optional global z-score ([`crate::advantages::advantage_batch_normalize`]), then per-mini-batch
/// pre-scaling. Rows outside every mini-batch become 0.
pub fn normalize_advantages(
    advantages: &Tensor,
    response_mask: &Tensor,
    loss_mask: &Tensor,
    opts: &NormalizeOptions,
) -> Result<Tensor> {
    let advantages = if opts.advantage_batch_normalize {
        crate::advantages::advantage_batch_normalize(advantages, response_mask)?
    } else {
        advantages.clone()
    };
    let counts = ops::to_vec_f64(&loss_mask.to_dtype(candle_core::DType::F64)?.sum(1)?)?;
    let mut scales = vec![0.0; counts.len()];
    for &(start, end) in opts.mini_batch_boundaries {
        if start > end || end > counts.len() {
            return Err(Error::invalid(format!(
                "mini-batch boundary ({start}, {end}) is outside the batch of {} rows",
                counts.len()
            )));
        }
        // Prompts starting inside this mini-batch, rebased to it.
        let pb: Option<Vec<(usize, usize)>> = opts.prompt_boundaries.map(|pb| {
            pb.iter()
                .filter(|(s, _)| start <= *s && *s < end)
                .map(|(s, e)| (s - start, e - start))
                .collect()
        });
        let mb = row_scales(
            opts.reduction,
            &counts[start..end],
            opts.micro_batch_size,
            opts.max_seq_len,
            pb.as_deref(),
        )?;
        scales[start..end].copy_from_slice(&mb);
    }
    apply_row_scales(&advantages, &scales)
}

/// The micro-batch loss under pre-scaled advantages: `Σ loss · mask` (no mask = `Σ loss`).
pub fn masked_sum(loss: &Tensor, loss_mask: Option<&Tensor>) -> Result<Tensor> {
    Ok(match loss_mask {
        None => loss.sum_all()?,
        Some(m) => loss.mul(&m.to_dtype(loss.dtype())?)?.sum_all()?,
    })
}

/// REF's `reduce_loss` on one call's `[B,R]` per-token loss (`token_mean_legacy` reduces like
/// `token_mean` here: per call is what "legacy" means). `prompt_mean` has no per-call form.
pub fn reduce_loss_ref(
    loss: &Tensor,
    loss_mask: Option<&Tensor>,
    reduction: LossReduction,
    max_seq_len: Option<usize>,
) -> Result<Tensor> {
    Ok(match reduction {
        LossReduction::TokenMean | LossReduction::TokenMeanLegacy => {
            ops::masked_mean(loss, loss_mask)?
        }
        LossReduction::SequenceMean => ops::masked_mean_rows(loss, loss_mask)?.mean_all()?,
        LossReduction::SeqMeanTokenSumNorm => {
            let max_seq_len = max_seq_len.ok_or_else(|| {
                Error::invalid(
                    "max_seq_len must be provided for seq_mean_token_sum_norm loss reduction",
                )
            })?;
            let summed = match loss_mask {
                Some(m) => loss.mul(&m.to_dtype(loss.dtype())?)?.sum(1)?,
                None => loss.sum(1)?,
            };
            let denom = ops::scalar_like(max_seq_len as f64, &summed)?;
            summed.broadcast_div(&denom)?.mean_all()?
        }
        LossReduction::PromptMean => {
            return Err(Error::invalid(
                "prompt_mean needs the mini-batch's prompt boundaries: use scale_advantages_minibatch + masked_sum",
            ))
        }
    })
}

/// Row ranges of consecutive equal uids (HEAD `compute_prompt_boundaries`). A uid that reappears
/// after another one is an error.
pub fn prompt_boundaries(uids: &[String]) -> Result<Vec<(usize, usize)>> {
    check_contiguous(uids)?;
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..uids.len() {
        if uids[i] != uids[i - 1] {
            out.push((start, i));
            start = i;
        }
    }
    if !uids.is_empty() {
        out.push((start, uids.len()));
    }
    Ok(out)
}

/// Row ranges of the optimizer mini-batches, each spanning `mini_batch_size` prompts (HEAD
/// `compute_prompt_mini_batch_boundaries`, with its sanity checks as errors).
pub fn mini_batch_boundaries(
    uids: &[String],
    mini_batch_size: usize,
    train_batch_size: usize,
    is_stepwise: bool,
    n_samples_per_prompt: usize,
) -> Result<Vec<(usize, usize)>> {
    let prompts = prompt_boundaries(uids)?;
    if prompts.len() != train_batch_size {
        return Err(Error::invalid(format!(
            "the batch holds {} prompts but train_batch_size is {train_batch_size}",
            prompts.len()
        )));
    }
    if mini_batch_size == 0 || train_batch_size % mini_batch_size != 0 {
        return Err(Error::invalid(format!(
            "train_batch_size ({train_batch_size}) % policy_mini_batch_size ({mini_batch_size}) != 0"
        )));
    }
    let out: Vec<(usize, usize)> = prompts
        .chunks(mini_batch_size)
        .map(|c| (c[0].0, c[c.len() - 1].1))
        .collect();
    if !is_stepwise {
        let expected = n_samples_per_prompt * mini_batch_size;
        for (i, &(s, e)) in out.iter().enumerate() {
            if s != i * expected || e - s != expected {
                return Err(Error::invalid(format!(
                    "mini-batch {i} spans rows {s}..{e}, expected {expected} rows \
                     (n_samples_per_prompt {n_samples_per_prompt} x policy_mini_batch_size {mini_batch_size})"
                )));
            }
        }
    }
    Ok(out)
}

fn check_contiguous(uids: &[String]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for i in 1..uids.len() {
        if uids[i] != uids[i - 1] {
            seen.insert(uids[i - 1].as_str());
            if seen.contains(uids[i].as_str()) {
                let list = uids
                    .iter()
                    .map(|u| format!("'{u}'"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Error::invalid(format!(
                    "uid '{}' appears in non-contiguous positions at index {i}. Full uids: [{list}]",
                    uids[i]
                )));
            }
        }
    }
    Ok(())
}
