//! RLOO: `A = (score - mean_g) * n / (n - 1)`; a group of one gets 0.

use candle_core::Tensor;

use super::grpo::broadcast_scores;
use super::{group_rows, scores, AdvantageEstimator, AdvantageInputs, AdvantageParams, Precision};
use crate::error::Result;
use crate::ops;

/// The `rloo` estimator.
pub struct Rloo;

impl AdvantageEstimator for Rloo {
    fn compute(&self, i: &AdvantageInputs, _p: &AdvantageParams) -> Result<(Tensor, Tensor)> {
        let rewards = ops::to_rows_f64(i.token_level_rewards)?;
        let prec = Precision::of(i.token_level_rewards);
        let mut s = scores(&rewards, prec);
        for (_, rows) in group_rows(i.uids, s.len()) {
            let n = rows.len();
            if n == 1 {
                s[rows[0]] = 0.0;
                continue;
            }
            let mean = prec.r(rows.iter().map(|&r| s[r]).sum::<f64>() / n as f64);
            let factor = prec.r(n as f64 / (n as f64 - 1.0));
            for &r in &rows {
                s[r] = prec.r(prec.r(s[r] - mean) * factor);
            }
        }
        let adv = broadcast_scores(&s, i.response_mask)?;
        Ok((adv.clone(), adv))
    }
}
