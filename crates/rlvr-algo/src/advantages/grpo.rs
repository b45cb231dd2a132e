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
                // float32 as torch does it: the mean is a float32 sum in torch's order divided
                // in float32 (an all-equal group's mean can be an ulp off, and its advantages
                // then small but nonzero); the std's squares are summed in float64 around it.
                let mean = if prec.is_f32() {
                    let v32: Vec<f32> = vals.iter().map(|&v| v as f32).collect();
                    crate::torch_sum::mean_f32(&v32) as f64
                } else {
                    prec.r(vals.iter().sum::<f64>() / n)
                };
                let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
                // `std + eps` is a float32 add there: eps is rounded to float32 first.
                let eps = if prec.is_f32() {
                    p.epsilon as f32 as f64
                } else {
                    p.epsilon
                };
                (mean, prec.r(prec.r(var.sqrt()) + eps))
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn grpo_f32(scores: &[f32]) -> Vec<f32> {
        let b = scores.len();
        let rewards = Tensor::from_vec(scores.to_vec(), (b, 1), &Device::Cpu).unwrap();
        let mask = Tensor::ones((b, 1), DType::F32, &Device::Cpu).unwrap();
        let uids = vec!["g".to_string(); b];
        let inputs = AdvantageInputs {
            token_level_rewards: &rewards,
            response_mask: &mask,
            uids: &uids,
            values: None,
        };
        let (adv, _) = Grpo.compute(&inputs, &AdvantageParams::default()).unwrap();
        adv.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn float32_all_equal_group_follows_torchs_rounding() {
        // 0.7 x 3: torch's float32 mean is exactly 0.7, so the advantages are exactly 0.
        assert_eq!(grpo_f32(&[0.7; 3]), vec![0.0; 3]);
        // 0.3 x 6: the float32 mean is an ulp off, so SkyRL gives every row the same small
        // nonzero advantage (centred by ~3e-8, divided by std + eps ~ 1e-6).
        let a = grpo_f32(&[0.3; 6]);
        assert!(a[0] != 0.0 && a.iter().all(|&x| x == a[0]), "{a:?}");
        assert!(a[0].abs() < 0.1, "{a:?}");
        let mean = crate::torch_sum::mean_f32(&[0.3; 6]);
        assert_eq!(a[0] > 0.0, 0.3f32 > mean);
    }
}
