//! PPO's value loss, SkyRL's `ppo_critic_loss`: half the squared error to the returns, each row's
//! masked token mean, then the mean over rows. With `value_clip` the new values may move at most
//! that far from the old ones before the error stops shrinking (the max of the clipped and the
//! unclipped error), as the policy's ratio is clipped.

use crate::ops::{masked_mean, masked_mean_rows, scalar_f64};
use crate::{Error, Result};
use candle_core::{DType, Tensor};

/// The loss and, with clipping, the fraction of (masked) tokens whose clipped error was larger.
pub struct CriticLoss {
    pub loss: Tensor,
    pub clipfrac: Option<f64>,
}

/// `values`, `old_values`, `returns`: `[B, R]`; `loss_mask` `[B, R]` or `None` (all tokens).
pub fn ppo_critic_loss(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    value_clip: Option<f64>,
    loss_mask: Option<&Tensor>,
) -> Result<CriticLoss> {
    if values.dims() != old_values.dims() || values.dims() != returns.dims() {
        return Err(Error::invalid(format!(
            "ppo_critic_loss: values {:?}, old_values {:?} and returns {:?} must have one shape",
            values.dims(),
            old_values.dims(),
            returns.dims()
        )));
    }
    let unclipped = (values - returns)?.sqr()?;
    let (loss, clipfrac) = match value_clip {
        Some(clip) => {
            if !(clip.is_finite() && clip >= 0.0) {
                return Err(Error::invalid(format!(
                    "trainer.algorithm.value_clip must be a non-negative number or null, got {clip}"
                )));
            }
            let clipped = (old_values + (values - old_values)?.clamp(-clip, clip)?)?;
            let clipped = (clipped - returns)?.sqr()?;
            let clipped_more = clipped.gt(&unclipped)?;
            // SkyRL takes `.float()` of the comparison: a float32 mean (one rounded division),
            // widened only by a float64 mask.
            let frac = match loss_mask {
                Some(m) if m.dtype() == DType::F64 => {
                    scalar_f64(&masked_mean(&clipped_more.to_dtype(DType::F64)?, Some(m))?)?
                }
                Some(m) => scalar_f64(&masked_mean(&clipped_more.to_dtype(DType::F32)?, Some(m))?)?,
                None => {
                    let count = scalar_f64(&clipped_more.to_dtype(DType::F64)?.sum_all()?)?;
                    f64::from((count / clipped_more.elem_count() as f64) as f32)
                }
            };
            (clipped.maximum(&unclipped)?, Some(frac))
        }
        None => (unclipped, None),
    };
    let loss = (masked_mean_rows(&loss, loss_mask)?.mean_all()? * 0.5)?;
    Ok(CriticLoss { loss, clipfrac })
}

/// `values_mean` as SkyRL's critic worker logs it: the masked mean over all tokens.
pub fn values_mean(values: &Tensor, loss_mask: Option<&Tensor>) -> Result<f64> {
    Ok(scalar_f64(&masked_mean(
        &values.to_dtype(DType::F64)?,
        loss_mask,
    )?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(rows: &[&[f64]]) -> Tensor {
        let v: Vec<Vec<f64>> = rows.iter().map(|r| r.to_vec()).collect();
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    /// Worked by hand: row 0 moves by 0.5 with clip 0.2, so its clipped error is the larger.
    #[test]
    fn clipped_loss_by_hand() {
        let values = t(&[&[1.5, 0.0], &[0.1, 9.0]]);
        let old = t(&[&[1.0, 0.0], &[0.0, 0.0]]);
        let returns = t(&[&[2.0, 1.0], &[0.0, 0.0]]);
        let mask = t(&[&[1.0, 1.0], &[1.0, 0.0]]);
        let out = ppo_critic_loss(&values, &old, &returns, Some(0.2), Some(&mask)).unwrap();
        // Row 0: token 0 clipped to 1.2 -> (0.8)^2 = 0.64 > 0.25; token 1: 1 vs 1 -> 1.
        // Row 1: token 0: 0.1 in range -> 0.01 both; token 1 masked.
        let want = 0.5 * (((0.64 + 1.0) / 2.0) + 0.01) / 2.0;
        let got = out.loss.to_scalar::<f64>().unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert_eq!(out.clipfrac, Some(1.0 / 3.0));

        let plain = ppo_critic_loss(&values, &old, &returns, None, Some(&mask)).unwrap();
        let want = 0.5 * (((0.25 + 1.0) / 2.0) + 0.01) / 2.0;
        let got = plain.loss.to_scalar::<f64>().unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert_eq!(plain.clipfrac, None);
        assert!(ppo_critic_loss(&values, &old, &returns, Some(f64::NAN), None).is_err());
        assert!(ppo_critic_loss(&values, &old, &t(&[&[1.0]]), None, None).is_err());
    }
}
