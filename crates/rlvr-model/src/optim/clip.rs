//! Global-norm gradient clipping as `torch.nn.utils.clip_grad_norm_`: the L2 norm over all
//! gradients, and a scale `min(1, max_norm / (norm + 1e-6))` applied to each; `max_norm <= 0`
//! does not clip (SkyRL).

use crate::kernels;
use candle_core::{backprop::GradStore, DType, Result, Tensor, Var};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipOutcome {
    /// The global norm before clipping.
    pub norm: f64,
    /// False when the norm is NaN or infinite: gradients are left as they are and the caller
    /// should skip the optimizer step.
    pub finite: bool,
    /// The factor clipping multiplies the gradients by: `min(1, max_norm / (norm + 1e-6))`, 1
    /// when it does not clip.
    pub scale: f64,
}

/// Clips the gradients of `vars` found in `grads` in place; returns the pre-clip norm.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<ClipOutcome> {
    let out = clip_scale(grads, vars, max_norm)?;
    if out.scale < 1.0 {
        for v in vars {
            if let Some(g) = grads.get(v) {
                let scaled = if kernels::applies(g) {
                    // As candle's `g * scale` (the factor rounded to f32), on every core.
                    let c = out.scale as f32;
                    let s = kernels::with_slice(g, |x| x.par_iter().map(|x| x * c).collect())?;
                    Tensor::from_vec(s, g.shape(), g.device())?
                } else {
                    (g * out.scale)?
                };
                grads.insert(v, scaled);
            }
        }
    }
    Ok(out)
}

/// [`clip_grad_norm`]'s norm and factor, the gradients left as they are: for an optimizer that
/// applies the factor in its own pass ([`AdamW::step_scaled`](super::AdamW::step_scaled)).
pub fn clip_scale(grads: &GradStore, vars: &[Var], max_norm: f64) -> Result<ClipOutcome> {
    let mut sq = 0.0f64;
    for v in vars {
        if let Some(g) = grads.get(v) {
            sq += if kernels::applies(g) {
                kernels::with_slice(g, sum_of_squares)?
            } else {
                g.to_dtype(DType::F64)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f64>()?
            };
        }
    }
    let norm = sq.sqrt();
    // `max_norm <= 0` turns clipping off (SkyRL); the norm is still reported and checked.
    let scale = if norm.is_finite() && max_norm > 0.0 {
        (max_norm / (norm + 1e-6)).min(1.0)
    } else {
        1.0
    };
    Ok(ClipOutcome {
        norm,
        finite: norm.is_finite(),
        scale,
    })
}

/// `sum(x^2)` in f64, over fixed chunks in parallel and then in order: the same value on any
/// number of threads.
fn sum_of_squares(x: &[f32]) -> f64 {
    const CHUNK: usize = 1 << 16;
    let partial: Vec<f64> = x
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum())
        .collect();
    partial.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn setup(g1: &[f32], g2: &[f32]) -> (GradStore, Vec<Var>) {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::zeros(g1.len(), DType::F32, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::zeros(g2.len(), DType::F32, &dev).unwrap()).unwrap();
        let loss = (a
            .as_tensor()
            .mul(&Tensor::new(g1, &dev).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            + b.as_tensor()
                .mul(&Tensor::new(g2, &dev).unwrap())
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap();
        (loss.backward().unwrap(), vec![a, b])
    }

    #[test]
    fn clips_to_max_norm_and_reports_the_pre_clip_norm() {
        let (mut grads, vars) = setup(&[3.0, 0.0], &[4.0]);
        let out = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
        assert_eq!(
            out,
            ClipOutcome {
                norm: 5.0,
                finite: true,
                scale: 1.0 / (5.0 + 1e-6)
            }
        );
        let a = grads.get(&vars[0]).unwrap().to_vec1::<f32>().unwrap();
        let coef = 1.0 / (5.0 + 1e-6);
        assert!((a[0] as f64 - 3.0 * coef).abs() < 1e-6);
        // Below the limit nothing changes.
        let (mut grads, vars) = setup(&[0.3], &[0.4]);
        clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
        assert_eq!(
            grads.get(&vars[1]).unwrap().to_vec1::<f32>().unwrap(),
            vec![0.4]
        );
    }

    #[test]
    fn max_norm_zero_or_below_does_not_clip() {
        for max_norm in [0.0, -1.0] {
            let (mut grads, vars) = setup(&[3.0, 0.0], &[4.0]);
            let out = clip_grad_norm(&mut grads, &vars, max_norm).unwrap();
            assert_eq!(out.norm, 5.0);
            assert_eq!(
                grads.get(&vars[1]).unwrap().to_vec1::<f32>().unwrap(),
                vec![4.0]
            );
        }
    }

    #[test]
    fn non_finite_norm_is_flagged_and_left_alone() {
        let (mut grads, vars) = setup(&[f32::NAN], &[1.0]);
        let out = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
        assert!(!out.finite && out.norm.is_nan());
        let (mut grads, vars) = setup(&[f32::INFINITY], &[1.0]);
        assert!(!clip_grad_norm(&mut grads, &vars, 1.0).unwrap().finite);
    }
}
