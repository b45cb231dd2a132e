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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// The KL and entropy settings of the policy loss (`use_kl_loss`, `use_entropy_loss`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlEntropySettings {
    /// The estimator and `kl_loss_coef`, when the KL loss is on.
    pub kl: Option<(crate::kl::KlEstimator, f64)>,
    /// `entropy_loss_coef`, when the entropy bonus is on.
    pub entropy_coef: Option<f64>,
}

/// One micro-batch's KL and entropy terms as SkyRL's policy worker forms them.
pub struct KlEntropyTerms {
    /// `(kl_loss_coef · kl − entropy_loss_coef · entropy) · micro_weight`, to add to the
    /// micro-batch's policy loss (0 where both are off).
    pub loss: Tensor,
    /// `policy_kl`: the mean over rows of each row's masked token mean of the KL.
    pub kl: Option<Tensor>,
    /// `policy_entropy`: the masked token mean of the entropy (logged even when not in the loss).
    pub entropy: Tensor,
}

/// SkyRL's worker terms beside the pre-scaled policy loss. Unlike the policy loss they are not
/// pre-scaled over the mini-batch: each micro-batch reduces its own (KL per row then over rows,
/// entropy over tokens) and is weighted by its share of the mini-batch's rows, `micro_weight`.
/// `[B, R]` inputs; `base_log_probs` is needed when the KL loss is on.
pub fn kl_entropy_terms(
    log_probs: &Tensor,
    base_log_probs: Option<&Tensor>,
    entropy: &Tensor,
    loss_mask: &Tensor,
    settings: &KlEntropySettings,
    micro_weight: f64,
) -> Result<KlEntropyTerms> {
    let entropy_mean = ops::masked_mean(entropy, Some(loss_mask))?;
    let mut loss = log_probs.zeros_like()?.sum_all()?;
    let kl = match settings.kl {
        None => None,
        Some((estimator, coef)) => {
            let base = base_log_probs.ok_or_else(|| {
                Error::invalid("the KL loss needs the reference model's log-probs")
            })?;
            let kl = crate::kl::approx_kl(log_probs, base, Some(loss_mask), estimator)?;
            let kl = crate::kl::kl_loss_sequence_mean(&kl, Some(loss_mask))?;
            loss = (loss + (&kl * (coef * micro_weight))?)?;
            Some(kl)
        }
    };
    if let Some(coef) = settings.entropy_coef {
        loss = (loss - (&entropy_mean * (coef * micro_weight))?)?;
    }
    Ok(KlEntropyTerms {
        loss,
        kl,
        entropy: entropy_mean,
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
    if mini_batch_size == 0 || !train_batch_size.is_multiple_of(mini_batch_size) {
        return Err(Error::invalid(format!(
            "train_batch_size ({train_batch_size}) % mini_batch_size ({mini_batch_size}) != 0"
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
                     (n_samples_per_prompt {n_samples_per_prompt} x mini_batch_size {mini_batch_size})"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy_loss::{compute_token_loss, PolicyLossConfig, PolicyLossInputs};
    use candle_core::{Device, Var};
    use proptest::prelude::*;

    /// Cuts `0..b` into consecutive chunks of the given sizes (the last one takes the rest).
    fn chunks(b: usize, sizes: &[usize]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = 0;
        for &s in sizes.iter().cycle() {
            if start >= b {
                break;
            }
            let end = (start + s).min(b);
            out.push((start, end));
            start = end;
        }
        out
    }

    struct Batch {
        lp: Vec<f64>,
        old: Vec<f64>,
        adv: Vec<f64>,
        mask: Vec<f64>,
        b: usize,
        r: usize,
    }

    fn t(v: &[f64], b: usize, r: usize) -> Tensor {
        Tensor::from_vec(v.to_vec(), (b, r), &Device::Cpu).unwrap()
    }

    /// `(loss, d loss / d log_probs)` of the mini-batch, accumulated over the micro-batch split
    /// with pre-scaled advantages and masked sums.
    fn split_loss(x: &Batch, scales: &[f64], split: &[(usize, usize)]) -> (f64, Vec<f64>) {
        let lp = Var::from_tensor(&t(&x.lp, x.b, x.r)).unwrap();
        let adv = apply_row_scales(&t(&x.adv, x.b, x.r), scales).unwrap();
        let (old, mask) = (t(&x.old, x.b, x.r), t(&x.mask, x.b, x.r));
        let mut total = 0.0;
        let mut grad = vec![0.0; x.b * x.r];
        for &(s, e) in split {
            let n = e - s;
            let lp_m = lp.as_tensor().narrow(0, s, n).unwrap();
            let (old_m, adv_m, mask_m) = (
                old.narrow(0, s, n).unwrap(),
                adv.narrow(0, s, n).unwrap(),
                mask.narrow(0, s, n).unwrap(),
            );
            let inputs = PolicyLossInputs {
                log_probs: &lp_m,
                old_log_probs: &old_m,
                advantages: &adv_m,
                loss_mask: Some(&mask_m),
                rollout_log_probs: None,
            };
            let tl = compute_token_loss("regular", &inputs, &PolicyLossConfig::default()).unwrap();
            let loss = masked_sum(&tl.loss, tl.loss_mask.as_ref()).unwrap();
            total += ops::scalar_f64(&loss).unwrap();
            let g = loss.backward().unwrap();
            for (acc, v) in grad
                .iter_mut()
                .zip(ops::to_vec_f64(g.get(lp.as_tensor()).unwrap()).unwrap())
            {
                *acc += v;
            }
        }
        (total, grad)
    }

    /// The reduction computed directly from its definition on per-token losses (with raw
    /// advantages), one call over the whole mini-batch.
    fn direct_loss(
        x: &Batch,
        reduction: LossReduction,
        prompts: &[(usize, usize)],
        max_seq_len: usize,
    ) -> (f64, Vec<f64>) {
        let lp = Var::from_tensor(&t(&x.lp, x.b, x.r)).unwrap();
        let (old, adv, mask) = (
            t(&x.old, x.b, x.r),
            t(&x.adv, x.b, x.r),
            t(&x.mask, x.b, x.r),
        );
        let inputs = PolicyLossInputs {
            log_probs: lp.as_tensor(),
            old_log_probs: &old,
            advantages: &adv,
            loss_mask: Some(&mask),
            rollout_log_probs: None,
        };
        let tl = compute_token_loss("regular", &inputs, &PolicyLossConfig::default()).unwrap();
        let loss = match reduction {
            LossReduction::PromptMean => {
                // Mean over prompts of each prompt's token mean.
                let mut acc: Option<Tensor> = None;
                for &(s, e) in prompts {
                    let l = tl.loss.narrow(0, s, e - s).unwrap();
                    let m = mask.narrow(0, s, e - s).unwrap();
                    let pm = ops::masked_mean(&l, Some(&m)).unwrap();
                    acc = Some(match acc {
                        None => pm,
                        Some(a) => a.add(&pm).unwrap(),
                    });
                }
                acc.unwrap()
                    .affine(1.0 / prompts.len() as f64, 0.0)
                    .unwrap()
            }
            r => reduce_loss_ref(&tl.loss, Some(&mask), r, Some(max_seq_len)).unwrap(),
        };
        let g = loss.backward().unwrap();
        (
            ops::scalar_f64(&loss).unwrap(),
            ops::to_vec_f64(g.get(lp.as_tensor()).unwrap()).unwrap(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Every reduction except `token_mean_legacy` (split-dependent by definition) gives the same
        /// loss and gradient for every micro-batch split as its direct definition.
        #[test]
        fn reductions_do_not_depend_on_the_micro_batch_split(
            b in 1usize..8,
            r in 1usize..6,
            data in proptest::collection::vec(-2.0f64..2.0, 4 * 48),
            mask_bits in proptest::collection::vec(any::<bool>(), 48),
            split_a in proptest::collection::vec(1usize..5, 1..4),
            split_b in proptest::collection::vec(1usize..5, 1..4),
            prompt_sizes in proptest::collection::vec(1usize..4, 1..8),
        ) {
            let n = b * r;
            let x = Batch {
                lp: data[..n].iter().map(|v| v - 2.5).collect(),
                old: data[48..48 + n].iter().map(|v| v * 0.2 - 2.5).collect(),
                adv: data[96..96 + n].to_vec(),
                mask: mask_bits[..n].iter().map(|&m| if m { 1.0 } else { 0.0 }).collect(),
                b,
                r,
            };
            let counts: Vec<f64> = (0..b).map(|i| x.mask[i * r..(i + 1) * r].iter().sum()).collect();
            let prompts = chunks(b, &prompt_sizes);
            let max_seq_len = 7;
            for reduction in [
                LossReduction::TokenMean,
                LossReduction::SequenceMean,
                LossReduction::SeqMeanTokenSumNorm,
                LossReduction::PromptMean,
            ] {
                let scales = row_scales(reduction, &counts, 1, Some(max_seq_len), Some(&prompts)).unwrap();
                let (want, want_g) = direct_loss(&x, reduction, &prompts, max_seq_len);
                for split in [chunks(b, &split_a), chunks(b, &split_b), vec![(0, b)]] {
                    let (got, got_g) = split_loss(&x, &scales, &split);
                    prop_assert!((got - want).abs() <= 1e-9 * (1.0 + want.abs()),
                        "{reduction} split {split:?}: {got} vs {want}");
                    for (a, e) in got_g.iter().zip(&want_g) {
                        prop_assert!((a - e).abs() <= 1e-9 * (1.0 + e.abs()),
                            "{reduction} split {split:?}: grad {a} vs {e}");
                    }
                }
            }
        }
    }

    /// `token_mean_legacy` with its own micro-batch size is REF's mean of per-micro-batch means.
    #[test]
    fn token_mean_legacy_is_the_mean_of_micro_batch_token_means() {
        let counts = [2.0, 1.0, 3.0, 0.0, 4.0];
        let s = row_scales(LossReduction::TokenMeanLegacy, &counts, 2, None, None).unwrap();
        assert_eq!(s, vec![1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0, 0.0]);
    }

    #[test]
    fn parse_error_names_the_valid_values() {
        let err = "sum".parse::<LossReduction>().unwrap_err().to_string();
        assert!(err.starts_with("Invalid loss reduction type: sum"), "{err}");
        assert!(
            err.contains("token_mean_legacy") && err.contains("prompt_mean"),
            "{err}"
        );
        assert_eq!(
            "prompt_mean".parse::<LossReduction>().unwrap(),
            LossReduction::PromptMean
        );
    }

    #[test]
    fn boundaries_follow_contiguous_uids() {
        let uids: Vec<String> = ["a", "a", "b", "c", "c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            prompt_boundaries(&uids).unwrap(),
            vec![(0, 2), (2, 3), (3, 5)]
        );
        let bad: Vec<String> = ["a", "b", "a"].iter().map(|s| s.to_string()).collect();
        assert!(prompt_boundaries(&bad)
            .unwrap_err()
            .to_string()
            .contains("index 2"));
    }
}
