//! Small tensor helpers whose values *and gradients* follow torch's conventions exactly.
//!
//! candle's built-in `clamp` splits the gradient 50/50 at the bounds and its `abs` has gradient +1
//! at 0; torch passes the full gradient on the closed interval `[lo, hi]` and gives `abs` a zero
//! gradient at 0. The golden gradients depend on these details, so the losses use these helpers.

use candle_core::{DType, Result, Tensor, D};

/// Scalar tensor of `value` in `like`'s dtype and device, broadcastable against it.
pub(crate) fn scalar_like(value: f64, like: &Tensor) -> Result<Tensor> {
    Tensor::new(value, like.device())?.to_dtype(like.dtype())
}

/// `torch.clamp(x, lo, hi)`: gradient 1 where `lo <= x <= hi`, 0 elsewhere; NaN stays NaN.
pub fn clamp(x: &Tensor, lo: Option<f64>, hi: Option<f64>) -> Result<Tensor> {
    let mut clamped = x.clone();
    let mut inside = x.ones_like()?.to_dtype(DType::U8)?;
    if let Some(lo) = lo {
        clamped = clamped.maximum(lo)?;
        inside = inside.mul(&x.ge(lo)?)?;
    }
    if let Some(hi) = hi {
        clamped = clamped.minimum(hi)?;
        inside = inside.mul(&x.le(hi)?)?;
    }
    // candle's max/min drop NaN; torch keeps it.
    let is_nan = x.ne(x)?;
    let constant = is_nan.where_cond(x, &clamped)?.detach();
    inside.where_cond(x, &constant)
}

/// `|x|` with torch's gradient `sign(x)` (0 at 0).
pub fn abs(x: &Tensor) -> Result<Tensor> {
    let sign = x.sign()?.detach();
    x.mul(&sign)
}

/// `exp(clamp(float32(delta), -20, 20))` cast back to `delta`'s dtype: SkyRL's `_safe_exp_delta`,
/// the PPO importance ratio. Always evaluated in f32, gradient included.
pub fn safe_exp_delta(delta: &Tensor) -> Result<Tensor> {
    let out_dtype = delta.dtype();
    clamp(&delta.to_dtype(DType::F32)?, Some(-20.0), Some(20.0))?
        .exp()?
        .to_dtype(out_dtype)
}

/// `sum(x * mask) / max(sum(mask), 1)` over everything (mask `None` = plain mean).
pub fn masked_mean(x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    match mask {
        None => x.mean_all(),
        Some(m) => {
            let m = m.to_dtype(x.dtype())?;
            let denom = m.sum_all()?.maximum(1.0)?;
            x.mul(&m)?.sum_all()?.div(&denom)
        }
    }
}

/// Per-row `sum(x * mask, -1) / max(sum(mask, -1), 1)`; mask `None` = per-row mean. `[B,R] -> [B]`.
pub fn masked_mean_rows(x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    match mask {
        None => x.mean(D::Minus1),
        Some(m) => {
            let m = m.to_dtype(x.dtype())?;
            let denom = m.sum(D::Minus1)?.maximum(1.0)?;
            x.mul(&m)?.sum(D::Minus1)?.div(&denom)
        }
    }
}

/// Row indices grouped by uid, groups in order of first appearance (SkyRL's `index`).
pub fn group_by_uid(uids: &[String]) -> Vec<(&str, Vec<usize>)> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for (i, uid) in uids.iter().enumerate() {
        let g = *index.entry(uid.as_str()).or_insert_with(|| {
            groups.push((uid.as_str(), Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    groups
}

/// A scalar tensor's value as f64.
pub fn scalar_f64(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// A tensor's values, flattened, as f64.
pub fn to_vec_f64(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// A `[B,R]` tensor as rows of f64.
pub fn to_rows_f64(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    t.to_dtype(DType::F64)?.to_vec2::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn clamp_passes_gradient_on_closed_interval_and_keeps_nan() -> Result<()> {
        let x = Var::new(&[-2.0f64, -1.0, 0.0, 1.0, 2.0, f64::NAN], &Device::Cpu)?;
        let y = clamp(x.as_tensor(), Some(-1.0), Some(1.0))?;
        let v = to_vec_f64(&y)?;
        assert_eq!(&v[..5], &[-1.0, -1.0, 0.0, 1.0, 1.0]);
        assert!(v[5].is_nan());
        let g = y.sum_all()?.backward()?;
        let g = to_vec_f64(g.get(x.as_tensor()).unwrap())?;
        assert_eq!(g, vec![0.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        Ok(())
    }

    #[test]
    fn abs_has_zero_gradient_at_zero() -> Result<()> {
        let x = Var::new(&[-2.0f64, 0.0, 3.0], &Device::Cpu)?;
        let y = abs(x.as_tensor())?;
        assert_eq!(to_vec_f64(&y)?, vec![2.0, 0.0, 3.0]);
        let g = y.sum_all()?.backward()?;
        assert_eq!(
            to_vec_f64(g.get(x.as_tensor()).unwrap())?,
            vec![-1.0, 0.0, 1.0]
        );
        Ok(())
    }
}
