//! The few kernels the decoder needs, each in a differentiable form (for training) and a fused
//! inference form (no backward). The two agree to float rounding; tests check that.

use candle_core::{Result, Tensor, D};

/// RMSNorm over the last dim: `x / sqrt(mean(x^2) + eps) * w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, grad: bool) -> Result<Tensor> {
    if !grad {
        return candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32);
    }
    let h = x.dim(D::Minus1)? as f64;
    let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / h)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(w)
}

/// RoPE on `x: [B, H, S, D]` with `cos, sin: [B, S, D/2]` (HF `rotate_half` layout).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, grad: bool) -> Result<Tensor> {
    if !grad {
        return candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin);
    }
    let half = x.dim(D::Minus1)? / 2;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?
}

/// Softmax over the last dim.
pub fn softmax_last(x: &Tensor, grad: bool) -> Result<Tensor> {
    if !grad {
        return candle_nn::ops::softmax_last_dim(&x.contiguous()?);
    }
    // The max only keeps exp() in range; softmax does not depend on it, so no gradient is needed.
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn fused_and_differentiable_forms_agree() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 8), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, 8, &dev).unwrap();
        let a = rms_norm(&x, &w, 1e-5, true).unwrap();
        let b = rms_norm(&x, &w, 1e-5, false).unwrap();
        assert!(max_diff(&a, &b) < 1e-5);
        let a = softmax_last(&x, true).unwrap();
        let b = softmax_last(&x, false).unwrap();
        assert!(max_diff(&a, &b) < 1e-6);
        let cos = Tensor::randn(0f32, 1.0, (2, 5, 4), &dev).unwrap();
        let sin = Tensor::randn(0f32, 1.0, (2, 5, 4), &dev).unwrap();
        let a = rope(&x, &cos, &sin, true).unwrap();
        let b = rope(&x, &cos, &sin, false).unwrap();
        assert!(max_diff(&a, &b) < 1e-5);
    }
}
