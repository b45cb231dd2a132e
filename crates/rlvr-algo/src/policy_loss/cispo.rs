//! CISPO: `loss = -A · sg[clip(r, 1-low, 1+high)] · logp` with its own bounds
//! (`cispo_eps_clip_low` 0 by default, so every ratio below 1 is raised to 1). `clip_ratio` is the
//! masked fraction of tokens whose ratio lies outside the bounds.

use std::collections::BTreeMap;

use super::{fraction, PolicyLoss, PolicyLossConfig, PolicyLossInputs, TokenLoss};
use crate::error::Result;
use crate::ops;

/// `cispo`.
pub struct Cispo;

impl PolicyLoss for Cispo {
    fn token_loss(&self, i: &PolicyLossInputs, c: &PolicyLossConfig) -> Result<TokenLoss> {
        let lo = 1.0 - c.cispo.cispo_eps_clip_low;
        let hi = 1.0 + c.cispo.cispo_eps_clip_high;
        let ratio = ops::safe_exp_delta(&i.log_probs.sub(i.old_log_probs)?)?;
        let clamped = ops::clamp(&ratio, Some(lo), Some(hi))?.detach();
        let loss = i.advantages.neg()?.mul(&clamped)?.mul(i.log_probs)?;
        let below = ratio.lt(lo)?;
        let above = ratio.gt(hi)?;
        let clipped = below.maximum(&above)?;
        let mut metrics = BTreeMap::new();
        metrics.insert(
            "clip_ratio".into(),
            fraction(&clipped, i.loss_mask, &ratio)?,
        );
        metrics.insert(
            "clip_ratio_low".into(),
            fraction(&below, i.loss_mask, &ratio)?,
        );
        metrics.insert(
            "clip_ratio_high".into(),
            fraction(&above, i.loss_mask, &ratio)?,
        );
        Ok(TokenLoss {
            loss,
            loss_mask: i.loss_mask.cloned(),
            metrics,
        })
    }
}
