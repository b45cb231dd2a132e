//! Off-policy correction between the generation engine's log-probs and the trainer's old log-probs
//! (SkyRL `apply_off_policy_correction`): an outlier-token sequence mask, optional truncated
//! importance sampling (token or sequence level) and an optional sequence mask (geometric mean or
//! product of ratios). Off unless `tis_ratio_type` or `sequence_mask_metric` is set and rollout
//! log-probs are given.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use super::{OffPolicyCorrectionConfig, SequenceMaskMetric, TisRatioType};
use crate::error::Result;
use crate::ops;

/// Returns `(loss · tis_ratio, narrowed loss mask, metrics)`.
pub fn apply_off_policy_correction(
    loss: &Tensor,
    old_log_probs: &Tensor,
    rollout_log_probs: Option<&Tensor>,
    loss_mask: Option<&Tensor>,
    cfg: &OffPolicyCorrectionConfig,
) -> Result<(Tensor, Option<Tensor>, BTreeMap<String, f64>)> {
    let mut metrics = BTreeMap::new();
    let rollout = match rollout_log_probs {
        Some(r) if cfg.tis_ratio_type.is_some() || cfg.sequence_mask_metric.is_some() => r,
        _ => return Ok((loss.clone(), loss_mask.cloned(), metrics)),
    };
    let old = old_log_probs.detach();
    let rollout = rollout.detach();
    let mut mask = match loss_mask {
        Some(m) => m.to_dtype(old.dtype())?,
        None => old.ones_like()?,
    };
    let b = old.dim(0)? as f64;
    let log_ratio = old.sub(&rollout)?;
    let is_ratio = ops::safe_exp_delta(&log_ratio)?;
    let masked_ratio = is_ratio.mul(&mask)?;
    metrics.insert(
        "is_ratio_mean".into(),
        ops::scalar_f64(&ops::masked_mean(&is_ratio, Some(&mask))?)?,
    );
    metrics.insert("is_ratio_std".into(), unbiased_std(&masked_ratio)?);
    metrics.insert(
        "is_ratio_max".into(),
        ops::scalar_f64(&masked_ratio.flatten_all()?.max(0)?)?,
    );
    metrics.insert(
        "is_ratio_min".into(),
        ops::scalar_f64(&masked_ratio.flatten_all()?.min(0)?)?,
    );

    // Outlier tokens reject their whole sequence.
    let valid = mask.gt(0.0)?;
    let over = match cfg.outlier_token_is_threshold_high {
        Some(h) => is_ratio.gt(h)?.mul(&valid)?,
        None => valid.zeros_like()?,
    };
    let under = match cfg.outlier_token_is_threshold_low {
        Some(l) => is_ratio.lt(l)?.mul(&valid)?,
        None => valid.zeros_like()?,
    };
    let seq_over = over.to_dtype(DType::F64)?.sum_keepdim(1)?.gt(0.0)?;
    let seq_under = under.to_dtype(DType::F64)?.sum_keepdim(1)?.gt(0.0)?;
    let bad = over
        .maximum(&under)?
        .to_dtype(DType::F64)?
        .sum_keepdim(1)?
        .gt(0.0)?;
    metrics.insert("outlier_seq_masked_ratio".into(), count(&bad)? / b);
    metrics.insert("outlier_seq_over_high_ratio".into(), count(&seq_over)? / b);
    metrics.insert("outlier_seq_under_low_ratio".into(), count(&seq_under)? / b);
    let keep = bad.eq(0u8)?.to_dtype(mask.dtype())?;
    mask = mask.broadcast_mul(&keep)?;

    let mut loss = loss.clone();
    if let Some(kind) = cfg.tis_ratio_type {
        let tis = match kind {
            TisRatioType::Token => {
                let cap = cfg.token_tis_ratio_clip_high;
                let valid = mask.gt(0.0)?;
                let capped = count(&is_ratio.gt(cap)?.mul(&valid)?)?;
                let total = count(&valid)?.max(1.0);
                metrics.insert("tis_token_clip_high_ratio".into(), f32_ratio(capped, total));
                is_ratio.minimum(cap)?
            }
            TisRatioType::Sequence => {
                let cap = cfg.sequence_tis_ratio_clip_high;
                let seq_log = log_ratio.mul(&mask)?.sum_keepdim(1)?;
                let seq_ratio = ops::safe_exp_delta(&seq_log)?;
                let capped = count(&seq_ratio.gt(cap)?)?;
                metrics.insert("tis_seq_clip_high_ratio".into(), f32_ratio(capped, b));
                seq_ratio.minimum(cap)?
            }
        };
        loss = loss.broadcast_mul(&tis.detach().to_dtype(loss.dtype())?)?;
    }

    if let Some(metric) = cfg.sequence_mask_metric {
        let seq_log = log_ratio.mul(&mask)?.sum_keepdim(1)?;
        let (ratio, high, low, prefix) = match metric {
            SequenceMaskMetric::Geometric => {
                let n = mask.sum_keepdim(1)?.maximum(1.0)?;
                (
                    ops::safe_exp_delta(&seq_log.div(&n)?)?,
                    cfg.geo_mask_high,
                    cfg.geo_mask_low,
                    "geo_sequence_mask",
                )
            }
            SequenceMaskMetric::Product => (
                ops::safe_exp_delta(&seq_log)?,
                cfg.product_mask_high,
                cfg.product_mask_low,
                "product_sequence_mask",
            ),
        };
        let over = ratio.gt(high)?;
        let under = ratio.lt(low)?;
        let outside = over.maximum(&under)?;
        metrics.insert(format!("{prefix}_masked_ratio"), count(&outside)? / b);
        metrics.insert(format!("{prefix}_over_high_ratio"), count(&over)? / b);
        metrics.insert(format!("{prefix}_under_low_ratio"), count(&under)? / b);
        mask = mask.broadcast_mul(&outside.eq(0u8)?.to_dtype(mask.dtype())?)?;
    }
    Ok((loss, Some(mask), metrics))
}

fn count(t: &Tensor) -> Result<f64> {
    Ok(ops::scalar_f64(&t.to_dtype(DType::F64)?.sum_all()?)?)
}

/// torch divides integer counts into a float32.
fn f32_ratio(num: f64, den: f64) -> f64 {
    (num as f32 / den as f32) as f64
}

/// `tensor.std()` over all elements (unbiased).
fn unbiased_std(t: &Tensor) -> Result<f64> {
    let v = ops::to_vec_f64(t)?;
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    Ok((v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
}
