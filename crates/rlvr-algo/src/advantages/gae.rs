//! GAE (needs critic values). As in SkyRL the backward recursion ignores the response mask, the
//! returns are `advantages + values` before whitening, and the whitened advantages are not
//! re-masked.

use candle_core::Tensor;

use super::{
    from_rows, masked_whiten, AdvantageEstimator, AdvantageInputs, AdvantageParams, Precision,
};
use crate::error::{Error, Result};
use crate::ops;

/// The `gae` estimator.
pub struct Gae;

impl AdvantageEstimator for Gae {
    fn compute(&self, i: &AdvantageInputs, p: &AdvantageParams) -> Result<(Tensor, Tensor)> {
        let values_t = i
            .values
            .ok_or_else(|| Error::invalid("the gae advantage estimator needs critic values"))?;
        let rewards = ops::to_rows_f64(i.token_level_rewards)?;
        let values = ops::to_rows_f64(&values_t.to_dtype(i.token_level_rewards.dtype())?)?;
        let prec = Precision::of(i.token_level_rewards);
        let gamma = prec.r(p.gamma);
        let gamma_lambda = prec.r(p.gamma * p.lambd);
        let mut adv = rewards.clone();
        let mut rets = rewards.clone();
        for (b, (rew, val)) in rewards.iter().zip(&values).enumerate() {
            let len = rew.len();
            let mut last = 0.0;
            for t in (0..len).rev() {
                let next = if t + 1 < len { val[t + 1] } else { 0.0 };
                let delta = prec.r(prec.r(rew[t] + prec.r(gamma * next)) - val[t]);
                last = prec.r(delta + prec.r(gamma_lambda * last));
                adv[b][t] = last;
                rets[b][t] = prec.r(last + val[t]);
            }
        }
        let adv = from_rows(&adv, i.token_level_rewards)?;
        let mask = i.response_mask.to_dtype(adv.dtype())?;
        Ok((
            masked_whiten(&adv, &mask)?,
            from_rows(&rets, i.token_level_rewards)?,
        ))
    }
}
