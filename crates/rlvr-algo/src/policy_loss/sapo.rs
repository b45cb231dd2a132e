//! SAPO: a soft gate instead of a hard clip. With `r = exp(clamp(logp - logp_old, ±20))` and
//! `τ = tau_pos` where `A > 0` else `tau_neg`: `loss = -sigmoid(τ (r - 1)) · 4/τ · A`.
//! No clipping, so `clip_ratio` is 0.

use super::{sigmoid, PolicyLoss, PolicyLossConfig, PolicyLossInputs, TokenLoss};
use crate::error::Result;
use crate::ops;

/// `sapo`.
pub struct Sapo;

impl PolicyLoss for Sapo {
    fn token_loss(&self, i: &PolicyLossInputs, c: &PolicyLossConfig) -> Result<TokenLoss> {
        let adv = i.advantages;
        let tau_pos = ops::scalar_like(c.sapo.tau_pos, adv)?.broadcast_as(adv.shape())?;
        let tau_neg = ops::scalar_like(c.sapo.tau_neg, adv)?.broadcast_as(adv.shape())?;
        let log_ratio = ops::clamp(&i.log_probs.sub(i.old_log_probs)?, Some(-20.0), Some(20.0))?;
        let ratio = log_ratio.exp()?;
        let taus = adv.gt(0.0)?.where_cond(&tau_pos, &tau_neg)?;
        let four = ops::scalar_like(4.0, adv)?;
        let gates =
            sigmoid(&taus.mul(&ratio.affine(1.0, -1.0)?)?)?.mul(&four.broadcast_div(&taus)?)?;
        let loss = gates.neg()?.mul(adv)?;
        Ok(TokenLoss::unclipped(loss, i))
    }
}
