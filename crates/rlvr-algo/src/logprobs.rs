//! Log-probabilities of sampled tokens and per-position entropy, from raw logits.
//!
//! Mirrors SkyRL: the logits are first divided by the sampling temperature (the model wrapper's
//! `logits.div_(temperature)`), then `logprobs = gather(logits, label) - logsumexp(logits)` and
//! `entropy = -sum(softmax * log_softmax)`. Everything is built from differentiable candle ops, so
//! gradients flow back to the raw logits. Half-precision inputs are computed in f32 and rounded back
//! (torch accumulates reduced-precision reductions in f32 too).

use candle_core::{DType, Result, Tensor, D};

/// `logits / temperature` with a true division (not a multiplication by the reciprocal), as
/// torch does, so the scaled logits match bit for bit.
pub fn scale_logits(logits: &Tensor, temperature: f64) -> Result<Tensor> {
    if temperature == 1.0 {
        return Ok(logits.clone());
    }
    match logits.dtype() {
        // torch divides half tensors in f32 by the f32 scalar, then rounds once.
        DType::BF16 | DType::F16 => {
            let t = Tensor::new(temperature as f32, logits.device())?;
            logits
                .to_dtype(DType::F32)?
                .broadcast_div(&t)?
                .to_dtype(logits.dtype())
        }
        dtype => logits.broadcast_div(&Tensor::new(temperature, logits.device())?.to_dtype(dtype)?),
    }
}

/// f32/f64 stay as they are; reduced-precision floats are promoted to f32 for the math.
fn compute_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F64 => DType::F64,
        _ => DType::F32,
    }
}

/// `x - max` with the max detached: the shift cancels mathematically, and detaching it keeps the
/// gradient exactly torch's (`grad - softmax * sum(grad)`) instead of routing terms through argmax.
fn shifted(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    Ok((x.broadcast_sub(&max)?, max))
}

/// Numerically stable `logsumexp` over the last dimension, keeping that dimension.
pub fn logsumexp_keepdim(x: &Tensor) -> Result<Tensor> {
    let (diff, max) = shifted(x)?;
    diff.exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        .broadcast_add(&max)
}

/// `log_softmax` over the last dimension.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let (diff, _) = shifted(x)?;
    let lse = diff.exp()?.sum_keepdim(D::Minus1)?.log()?;
    diff.broadcast_sub(&lse)
}

/// Log-probability of each label under `softmax(logits / temperature)`.
///
/// `logits` is `[.., V]`, `labels` an integer tensor `[..]` (u32 or i64); the result is `[..]` in the
/// dtype of `logits`.
pub fn log_probs_from_logits(logits: &Tensor, labels: &Tensor, temperature: f64) -> Result<Tensor> {
    check_temperature(temperature)?;
    let out_dtype = logits.dtype();
    let scaled = scale_logits(logits, temperature)?.to_dtype(compute_dtype(out_dtype))?;
    let picked = scaled
        .gather(&labels.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?
        .squeeze(D::Minus1)?;
    let lse = logsumexp_keepdim(&scaled)?.squeeze(D::Minus1)?;
    (picked - lse)?.to_dtype(out_dtype)
}

/// Entropy of `softmax(logits / temperature)` at every position: `[.., V] -> [..]`.
pub fn entropy_from_logits(logits: &Tensor, temperature: f64) -> Result<Tensor> {
    check_temperature(temperature)?;
    let out_dtype = logits.dtype();
    let scaled = scale_logits(logits, temperature)?.to_dtype(compute_dtype(out_dtype))?;
    entropy_from_log_probs_f(&log_softmax(&scaled)?)?.to_dtype(out_dtype)
}

/// Entropy with positions outside `attention_mask` (0/1, shape `[..]`) set to 0, like SkyRL's
/// `chunked_entropy_from_logits(.., attention_mask)`.
pub fn masked_entropy_from_logits(
    logits: &Tensor,
    temperature: f64,
    attention_mask: &Tensor,
) -> Result<Tensor> {
    let entropy = entropy_from_logits(logits, temperature)?;
    entropy.mul(&attention_mask.to_dtype(entropy.dtype())?)
}

/// Entropy from full-vocabulary log-probabilities `[.., V]`: `-sum(exp(lp) * lp)`.
pub fn entropy_from_log_probs(log_probs: &Tensor) -> Result<Tensor> {
    let out_dtype = log_probs.dtype();
    entropy_from_log_probs_f(&log_probs.to_dtype(compute_dtype(out_dtype))?)?.to_dtype(out_dtype)
}

fn entropy_from_log_probs_f(log_probs: &Tensor) -> Result<Tensor> {
    log_probs.exp()?.mul(log_probs)?.sum(D::Minus1)?.neg()
}

fn check_temperature(temperature: f64) -> Result<()> {
    if !(temperature.is_finite() && temperature > 0.0) {
        candle_core::bail!("temperature must be a finite number > 0, got {temperature}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn uniform_logits_give_log_v_entropy_and_minus_log_v_logprob() -> Result<()> {
        let logits = Tensor::zeros((2, 3, 8), DType::F64, &Device::Cpu)?;
        let labels = Tensor::new(&[[0u32, 1, 7], [3, 3, 3]], &Device::Cpu)?;
        let lp = log_probs_from_logits(&logits, &labels, 0.7)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let ent = entropy_from_logits(&logits, 1.0)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        for v in lp {
            assert!((v + 8f64.ln()).abs() < 1e-12);
        }
        for v in ent {
            assert!((v - 8f64.ln()).abs() < 1e-12);
        }
        Ok(())
    }

    #[test]
    fn logprob_gradient_is_onehot_minus_softmax_over_temperature() -> Result<()> {
        let data = [1.0f64, -2.0, 0.5, 3.0];
        let logits = Var::from_tensor(&Tensor::new(&[data], &Device::Cpu)?)?;
        let labels = Tensor::new(&[2u32], &Device::Cpu)?;
        let t = 0.5;
        let lp = log_probs_from_logits(logits.as_tensor(), &labels, t)?;
        let grads = lp.sum_all()?.backward()?;
        let g = grads
            .get(logits.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f64>()?;
        let z: f64 = data.iter().map(|x| (x / t).exp()).sum();
        for (i, x) in data.iter().enumerate() {
            let p = (x / t).exp() / z;
            let onehot = if i == 2 { 1.0 } else { 0.0 };
            assert!((g[i] - (onehot - p) / t).abs() < 1e-12);
        }
        Ok(())
    }

    #[test]
    fn rejects_non_positive_temperature() {
        let logits = Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(entropy_from_logits(&logits, 0.0).is_err());
    }
}
