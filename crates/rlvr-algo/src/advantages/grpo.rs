//! GRPO: `A = (score - mean_g) / (std_g + eps)` (unbiased std), or `score - mean_g` without std
//! normalisation. A group of one uses mean 0 and std 1, so its advantage is `score / (1 + eps)`.

use candle_core::Tensor;

use super::{
    from_rows, group_rows, scores, AdvantageEstimator, AdvantageInputs, AdvantageParams, Precision,
};
use crate::error::Result;
use crate::ops;

/// The `grpo` estimator.
pub struct Grpo;

impl AdvantageEstimator for Grpo {
    fn compute(&self, i: &AdvantageInputs, p: &AdvantageParams) -> Result<(Tensor, Tensor)> {
        let rewards = ops::to_rows_f64(i.token_level_rewards)?;
        let prec = Precision::of(i.token_level_rewards);
        let mut s = scores(&rewards, prec);
        for (_, rows) in group_rows(i.uids, s.len()) {
            let vals: Vec<f64> = rows.iter().map(|&r| s[r]).collect();
            let n = vals.len() as f64;
            let (mean, denom) = if vals.len() == 1 {
                // SkyRL's singleton std is a float32 `torch.tensor(1.0)`: `1 + eps` rounds in f32
                // whatever the rewards' dtype.
                (0.0, (1.0f32 + p.epsilon as f32) as f64)
            } else {
                let mean = vals.iter().sum::<f64>() / n;
                let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
                (prec.r(mean), prec.r(prec.r(var.sqrt()) + p.epsilon))
            };
            for &r in &rows {
                let centered = prec.r(s[r] - mean);
                s[r] = if p.grpo_norm_by_std {
                    prec.r(centered / denom)
                } else {
                    centered
                };
            }
        }
        let adv = broadcast_scores(&s, i.response_mask)?;
        Ok((adv.clone(), adv))
    }
}

/// `scores.unsqueeze(-1) * response_mask`.
pub(crate) fn broadcast_scores(s: &[f64], response_mask: &Tensor) -> Result<Tensor> {
    let col: Vec<Vec<f64>> = s.iter().map(|&x| vec![x]).collect();
    let col = from_rows(&col, response_mask)?;
    Ok(col.broadcast_mul(response_mask)?)
}
