//! Masked whitening (SkyRL `masked_mean`/`masked_var`/`masked_whiten`) and batch normalisation
//! (`normalize_advantages_dict`).

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::ops;

/// Unbiased masked variance; errors exactly like SkyRL when the mask sums to 0 or 1.
pub fn masked_var(values: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mean = ops::masked_mean(values, Some(mask))?;
    let centered = values.broadcast_sub(&mean)?;
    let variance = ops::masked_mean(&centered.sqr()?, Some(mask))?;
    let mask_sum = ops::scalar_f64(&mask.sum_all()?)?;
    if mask_sum == 0.0 {
        return Err(Error::invalid(
            "At least one element in the mask has to be 1.",
        ));
    }
    if mask_sum == 1.0 {
        return Err(Error::invalid(
            "The sum of the mask is one, which can cause a division by zero.",
        ));
    }
    let bessel = mask_sum / (mask_sum - 1.0);
    Ok(variance.affine(bessel, 0.0)?)
}

/// `(values - masked_mean) * rsqrt(masked_var + 1e-8)` over all masked tokens; the result is not
/// re-masked (callers multiply by the mask where SkyRL does).
pub fn masked_whiten(values: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mean = ops::masked_mean(values, Some(mask))?;
    let var = masked_var(values, mask)?;
    let rstd = var.affine(1.0, 1e-8)?.sqrt()?.recip()?;
    Ok(values.broadcast_sub(&mean)?.broadcast_mul(&rstd)?)
}

/// `advantage_batch_normalize`: global z-score with the mean over ALL elements (padding included)
/// and the variance over masked tokens only, `rstd = rsqrt(max(var, 1e-8))` — SkyRL's exact recipe.
pub fn advantage_batch_normalize(advantages: &Tensor, response_mask: &Tensor) -> Result<Tensor> {
    let mask = response_mask.to_dtype(advantages.dtype())?;
    let num_actions = mask.sum_all()?;
    let mean = advantages.mean_all()?;
    let centered = advantages.broadcast_sub(&mean)?;
    let ss = centered.sqr()?.mul(&mask)?.sum_all()?;
    let rstd = ss.div(&num_actions)?.maximum(1e-8)?.sqrt()?.recip()?;
    Ok(centered.broadcast_mul(&rstd)?)
}
