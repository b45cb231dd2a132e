//! PPO clipped surrogate (`regular`) and dual clip (`dual_clip`).
//!
//! `loss = max(-r·A, -clip(r, 1-low, 1+high)·A)`; dual clip additionally takes
//! `min(loss, c·|A|)` = `min(loss, -A·c)` where `A < 0`. `clip_ratio` is the masked fraction of
//! tokens where the clipped branch is strictly active (dual clip not counted); `clip_ratio_low` /
//! `clip_ratio_high` split it by side (ratio below `1-low` with `A<0`, above `1+high` with `A>0`).

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::{fraction, off_policy, PolicyLoss, PolicyLossConfig, PolicyLossInputs, TokenLoss};
use crate::error::Result;
use crate::ops;

/// `regular`.
pub struct Regular;
/// `dual_clip`.
pub struct DualClip;

impl PolicyLoss for Regular {
    fn token_loss(&self, i: &PolicyLossInputs, c: &PolicyLossConfig) -> Result<TokenLoss> {
        ppo_token_loss(i, c, false)
    }
}

impl PolicyLoss for DualClip {
    fn token_loss(&self, i: &PolicyLossInputs, c: &PolicyLossConfig) -> Result<TokenLoss> {
        ppo_token_loss(i, c, true)
    }
}

/// The clipped surrogate given a ratio tensor; returns `(loss, metrics)`.
pub(crate) fn clipped_surrogate(
    ratio: &Tensor,
    advantages: &Tensor,
    mask: Option<&Tensor>,
    c: &PolicyLossConfig,
) -> Result<(Tensor, BTreeMap<String, f64>)> {
    let lo = 1.0 - c.eps_clip_low;
    let hi = 1.0 + c.eps_clip_high;
    let surr1 = ratio.mul(advantages)?;
    let surr2 = ops::clamp(ratio, Some(lo), Some(hi))?.mul(advantages)?;
    let loss = surr1.minimum(&surr2)?.neg()?;
    // `-surr2 > -surr1`, i.e. the clipped branch is the smaller surrogate.
    let clipped = surr2.lt(&surr1)?;
    let neg_adv = advantages.lt(0.0)?;
    let pos_adv = advantages.gt(0.0)?;
    let mut metrics = BTreeMap::new();
    metrics.insert("clip_ratio".into(), fraction(&clipped, mask, ratio)?);
    metrics.insert(
        "clip_ratio_low".into(),
        fraction(&clipped.mul(&neg_adv)?, mask, ratio)?,
    );
    metrics.insert(
        "clip_ratio_high".into(),
        fraction(&clipped.mul(&pos_adv)?, mask, ratio)?,
    );
    Ok((loss, metrics))
}

fn ppo_token_loss(i: &PolicyLossInputs, c: &PolicyLossConfig, dual: bool) -> Result<TokenLoss> {
    let ratio = ops::safe_exp_delta(&i.log_probs.sub(i.old_log_probs)?)?;
    let (mut loss, mut metrics) = clipped_surrogate(&ratio, i.advantages, i.loss_mask, c)?;
    if dual {
        let pg3 = i.advantages.neg()?.affine(c.clip_ratio_c, 0.0)?;
        let capped = pg3.minimum(&loss)?;
        loss = i.advantages.lt(0.0)?.where_cond(&capped, &loss)?;
    }
    let (loss, loss_mask, off_metrics) = off_policy::apply_off_policy_correction(
        &loss,
        i.old_log_probs,
        i.rollout_log_probs,
        i.loss_mask,
        &c.off_policy_correction,
    )?;
    metrics.extend(off_metrics);
    Ok(TokenLoss {
        loss,
        loss_mask,
        metrics,
    })
}
