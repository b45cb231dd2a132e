//! REINFORCE++: discounted returns that restart after the response mask ends, whitened over all
//! masked tokens of the batch, then masked.

use candle_core::Tensor;

use super::{
    from_rows, masked_whiten, AdvantageEstimator, AdvantageInputs, AdvantageParams, Precision,
};
use crate::error::Result;
use crate::ops;

/// The `reinforce++` estimator.
pub struct ReinforcePlusPlus;

impl AdvantageEstimator for ReinforcePlusPlus {
    fn compute(&self, i: &AdvantageInputs, p: &AdvantageParams) -> Result<(Tensor, Tensor)> {
        let rewards = ops::to_rows_f64(i.token_level_rewards)?;
        let mask = ops::to_rows_f64(i.response_mask)?;
        let prec = Precision::of(i.token_level_rewards);
        let gamma = prec.r(p.gamma);
        let mut returns = rewards.clone();
        for (row, (rew, m)) in returns.iter_mut().zip(rewards.iter().zip(&mask)) {
            let mut running = 0.0;
            for t in (0..rew.len()).rev() {
                running = prec.r(rew[t] + prec.r(gamma * running));
                row[t] = running;
                running = prec.r(running * m[t]);
            }
        }
        let returns = from_rows(&returns, i.token_level_rewards)?;
        let mask_t = i.response_mask.to_dtype(returns.dtype())?;
        let adv = masked_whiten(&returns, &mask_t)?.mul(&mask_t)?;
        Ok((adv, returns))
    }
}
