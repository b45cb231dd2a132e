//! AdamW with decoupled weight decay, step for step as `torch.optim.AdamW` (non-amsgrad, non-fused):
//! `p -= lr * wd * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;`
//! `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
//! Each parameter keeps its own step count (torch's `state['step']`), and parameters without a
//! gradient are left alone, as in torch.

use candle_core::{backprop::GradStore, Result, Tensor, Var};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// torch's defaults.
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// Moments and step count of one parameter (zeros and 0 before its first update).
#[derive(Debug, Clone)]
pub struct ParamState {
    pub step: u64,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
}

pub struct AdamW {
    params: Vec<(String, Var)>,
    state: Vec<ParamState>,
    cfg: AdamWConfig,
}

impl AdamW {
    pub fn new(params: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let state = params
            .iter()
            .map(|(_, v)| {
                Ok(ParamState {
                    step: 0,
                    exp_avg: v.zeros_like()?,
                    exp_avg_sq: v.zeros_like()?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { params, state, cfg })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }

    /// One update of every parameter that has a gradient in `grads`, at the current `lr`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_scaled(grads, 1.0)
    }

    /// [`AdamW::step`] on the gradients times `scale` (gradient clipping's factor, from
    /// [`clip_scale`](super::clip_scale)), each product rounded as scaling the gradients first
    /// would round it: the same update, without a pass over the gradients of its own.
    pub fn step_scaled(&mut self, grads: &GradStore, scale: f64) -> Result<()> {
        let c = self.cfg;
        for ((_, var), st) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = grads.get(var) else { continue };
            let g = g.to_dtype(var.dtype())?;
            st.step += 1;
            let t = st.step as i32;
            let bc1 = 1.0 - c.beta1.powi(t);
            let bc2 = 1.0 - c.beta2.powi(t);
            if fused::applies(var.as_tensor(), &st.exp_avg, &st.exp_avg_sq) {
                fused::step(
                    var.as_tensor(),
                    &g.contiguous()?,
                    &st.exp_avg,
                    &st.exp_avg_sq,
                    &c,
                    (bc1, bc2),
                    scale as f32,
                )?;
                continue;
            }
            let g = if scale == 1.0 { g } else { (g * scale)? };
            st.exp_avg = ((&st.exp_avg * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            st.exp_avg_sq = ((&st.exp_avg_sq * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((st.exp_avg_sq.sqrt()? / bc2.sqrt())? + c.eps)?;
            let update = (st.exp_avg.div(&denom)? * (c.lr / bc1))?;
            let decayed = if c.weight_decay != 0.0 {
                (var.as_tensor() * (1.0 - c.lr * c.weight_decay))?
            } else {
                var.as_tensor().clone()
            };
            var.set(&(decayed - update)?)?;
        }
        Ok(())
    }

    /// Parameter names, in the order of [`AdamW::state`].
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(n, _)| n.as_str())
    }

    /// Per-parameter state, in parameter order (for checkpoints). The CPU path updates these
    /// tensors in place at the next step: copy them if they must outlive it unchanged.
    pub fn state(&self) -> &[ParamState] {
        &self.state
    }

    /// Restores the state of parameter `name` (from a checkpoint).
    pub fn set_state(&mut self, name: &str, state: ParamState) -> anyhow::Result<()> {
        let i = self
            .params
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| anyhow::anyhow!("optimizer state for unknown parameter `{name}`"))?;
        let shape = self.params[i].1.shape();
        for (what, t) in [
            ("exp_avg", &state.exp_avg),
            ("exp_avg_sq", &state.exp_avg_sq),
        ] {
            if t.shape() != shape {
                anyhow::bail!(
                    "{what} of `{name}` has shape {:?}, expected {:?}",
                    t.dims(),
                    shape.dims()
                );
            }
        }
        let var = &self.params[i].1;
        // Own copies: the CPU path updates the moments in place, and the caller's tensors (e.g.
        // another optimizer's `state()`) must not move with them.
        self.state[i] = ParamState {
            step: state.step,
            exp_avg: state
                .exp_avg
                .to_dtype(var.dtype())?
                .to_device(var.device())?
                .copy()?,
            exp_avg_sq: state
                .exp_avg_sq
                .to_dtype(var.dtype())?
                .to_device(var.device())?
                .copy()?,
        };
        Ok(())
    }
}

/// CPU f32: the same update in one in-place pass over the parameter, its moments and its
/// gradient, no temporaries (the tensor-op version makes a dozen full-size temporaries per
/// parameter; three passes, one per updated tensor, moved 40 % more memory).
mod fused {
    use super::AdamWConfig;
    use crate::kernels;
    use candle_core::{CpuStorage, InplaceOp1, Layout, Result, Tensor};
    use rayon::prelude::*;
    use std::cell::RefCell;

    const CHUNK: usize = 1 << 14;

    pub fn applies(p: &Tensor, m: &Tensor, v: &Tensor) -> bool {
        p.device().is_cpu()
            && p.dtype() == candle_core::DType::F32
            && [p, m, v].iter().all(|t| t.is_contiguous())
    }

    type Body<'a> = dyn FnMut(&mut [f32]) -> Result<()> + 'a;

    /// Runs `f` on `t`'s values, writable (under the storage's write lock, as an in-place op).
    fn with_values_mut(t: &Tensor, f: &mut Body<'_>) -> Result<()> {
        struct Op<'a, 'b>(RefCell<&'a mut Body<'b>>);
        impl InplaceOp1 for Op<'_, '_> {
            fn name(&self) -> &'static str {
                "adamw"
            }
            fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
                let (o, n) = (l.start_offset(), l.shape().elem_count());
                match s {
                    CpuStorage::F32(v) => (self.0.borrow_mut())(&mut v[o..o + n]),
                    _ => candle_core::bail!("adamw: f32 expected"),
                }
            }
        }
        t.inplace_op1(&Op(RefCell::new(f)))
    }

    /// `m = b1 m + (1 - b1) g'`, `v = b2 v + (1 - b2) g'^2`, then
    /// `p = p (1 - lr wd) - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)`, with `g' = g * scale`.
    pub fn step(
        p: &Tensor,
        g: &Tensor,
        m: &Tensor,
        v: &Tensor,
        c: &AdamWConfig,
        (bc1, bc2): (f64, f64),
        scale: f32,
    ) -> Result<()> {
        let (b1, a1) = (c.beta1 as f32, (1.0 - c.beta1) as f32);
        let (b2, a2) = (c.beta2 as f32, (1.0 - c.beta2) as f32);
        let decay = (1.0 - c.lr * c.weight_decay) as f32;
        let step_size = (c.lr / bc1) as f32;
        let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
        let eps = c.eps as f32;
        kernels::with_slice(g, |g| {
            with_values_mut(p, &mut |p| {
                with_values_mut(m, &mut |m| {
                    with_values_mut(v, &mut |v| {
                        p.par_chunks_mut(CHUNK)
                            .zip(m.par_chunks_mut(CHUNK))
                            .zip(v.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)))
                            .for_each(|((p, m), (v, g))| {
                                for i in 0..p.len() {
                                    let g = g[i] * scale;
                                    m[i] = m[i] * b1 + g * a1;
                                    v[i] = v[i] * b2 + g * g * a2;
                                    let denom = v[i].sqrt() * inv_sqrt_bc2 + eps;
                                    p[i] = p[i] * decay - step_size * (m[i] / denom);
                                }
                            });
                        Ok(())
                    })
                })
            })
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn two_steps_match_a_hand_computation() {
        let dev = Device::Cpu;
        let p0 = [0.5f64, -1.0, 2.0];
        let var = Var::from_tensor(&Tensor::new(&p0, &dev).unwrap()).unwrap();
        let other = Var::from_tensor(&Tensor::new(&[1.0f64], &dev).unwrap()).unwrap();
        let cfg = AdamWConfig {
            lr: 0.1,
            beta1: 0.8,
            beta2: 0.95,
            eps: 1e-3,
            weight_decay: 0.5,
        };
        let mut opt = AdamW::new(
            vec![("w".into(), var.clone()), ("u".into(), other.clone())],
            cfg,
        )
        .unwrap();
        let grads_seq = [[0.3f64, -0.2, 1.5], [-0.1, 0.4, 0.0]];
        let (mut p, mut m, mut v) = (p0.to_vec(), [0.0; 3], [0.0; 3]);
        for (k, g) in grads_seq.iter().enumerate() {
            // Gradient for `w` only: `u` has none and must not move.
            let loss = var
                .as_tensor()
                .mul(&Tensor::new(g, &dev).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            let t = (k + 1) as i32;
            for i in 0..3 {
                p[i] *= 1.0 - 0.1 * 0.5;
                m[i] = 0.8 * m[i] + 0.2 * g[i];
                v[i] = 0.95 * v[i] + 0.05 * g[i] * g[i];
                let denom = v[i].sqrt() / (1.0 - 0.95f64.powi(t)).sqrt() + 1e-3;
                p[i] -= 0.1 / (1.0 - 0.8f64.powi(t)) * m[i] / denom;
            }
        }
        let got = var.as_tensor().to_vec1::<f64>().unwrap();
        for i in 0..3 {
            assert!((got[i] - p[i]).abs() < 1e-12, "{got:?} vs {p:?}");
        }
        assert_eq!(other.as_tensor().to_vec1::<f64>().unwrap(), vec![1.0]);
        assert_eq!((opt.state()[0].step, opt.state()[1].step), (2, 0));
        let got_m = opt.state()[0].exp_avg.to_vec1::<f64>().unwrap();
        assert!(got_m.iter().zip(&m).all(|(a, b)| (a - b).abs() < 1e-15));
    }

    /// The fused f32 path agrees with the f64 tensor-op path.
    /// Clipping's factor applied inside the step gives the very values of clipping the
    /// gradients first, on the fused f32 pass and the tensor-op path (f64) alike.
    #[test]
    fn scaled_step_equals_clipping_first() {
        use crate::optim::{clip_grad_norm, clip_scale};
        let dev = Device::Cpu;
        let p0 = Tensor::randn(0f64, 1.0, 5000, &dev).unwrap();
        let g0 = (Tensor::randn(0f64, 1.0, 5000, &dev).unwrap() * 3.0).unwrap();
        for dt in [DType::F32, DType::F64] {
            let run = |scaled_in_step: bool| {
                let var = Var::from_tensor(&p0.to_dtype(dt).unwrap()).unwrap();
                let cfg = AdamWConfig {
                    lr: 0.01,
                    ..Default::default()
                };
                let mut opt = AdamW::new(vec![("p".into(), var.clone())], cfg).unwrap();
                for _ in 0..2 {
                    let loss = (var.as_tensor() * g0.to_dtype(dt).unwrap())
                        .unwrap()
                        .sum_all()
                        .unwrap();
                    let mut grads = loss.backward().unwrap();
                    let vars = [var.clone()];
                    if scaled_in_step {
                        let clip = clip_scale(&grads, &vars, 1.0).unwrap();
                        assert!(clip.scale < 0.01, "the gradients are clipped");
                        opt.step_scaled(&grads, clip.scale).unwrap();
                    } else {
                        clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
                        opt.step(&grads).unwrap();
                    }
                }
                var.as_tensor()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            };
            assert_eq!(run(true), run(false), "{dt:?}");
        }
    }

    #[test]
    fn fused_f32_step_matches_f64() {
        let dev = Device::Cpu;
        let p0 = Tensor::randn(0f64, 1.0, 3000, &dev).unwrap();
        let gs: Vec<Tensor> = (0..3)
            .map(|_| Tensor::randn(0f64, 1.0, 3000, &dev).unwrap())
            .collect();
        let cfg = AdamWConfig {
            lr: 0.01,
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut out = Vec::new();
        for dt in [DType::F64, DType::F32] {
            let var = Var::from_tensor(&p0.to_dtype(dt).unwrap()).unwrap();
            let mut opt = AdamW::new(vec![("p".into(), var.clone())], cfg).unwrap();
            for g in &gs {
                let loss = var
                    .as_tensor()
                    .mul(&g.to_dtype(dt).unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap();
                opt.step(&loss.backward().unwrap()).unwrap();
            }
            out.push(var.as_tensor().to_dtype(DType::F64).unwrap());
        }
        let max_abs_diff = |a: &Tensor, b: &Tensor| {
            let d = (a - b).unwrap().abs().unwrap().max(0).unwrap();
            d.to_scalar::<f64>().unwrap()
        };
        let d = max_abs_diff(&out[0], &out[1]);
        assert!(d < 1e-5, "{d}");
        assert!(max_abs_diff(&out[0], &p0) > 1e-3);
    }

    #[test]
    fn state_round_trips_and_checks_shapes() {
        let dev = Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[1f32, 2.0], &dev).unwrap()).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), var)], AdamWConfig::default()).unwrap();
        let st = ParamState {
            step: 7,
            exp_avg: Tensor::new(&[0.1f32, 0.2], &dev).unwrap(),
            exp_avg_sq: Tensor::new(&[0.3f32, 0.4], &dev).unwrap(),
        };
        opt.set_state("w", st).unwrap();
        assert_eq!(opt.state()[0].step, 7);
        assert_eq!(
            opt.state()[0].exp_avg_sq.to_vec1::<f32>().unwrap(),
            vec![0.3, 0.4]
        );
        let bad = ParamState {
            step: 1,
            exp_avg: Tensor::new(&[0.1f32], &dev).unwrap(),
            exp_avg_sq: Tensor::new(&[0.3f32], &dev).unwrap(),
        };
        assert!(opt
            .set_state("w", bad)
            .unwrap_err()
            .to_string()
            .contains("exp_avg"));
        let st = opt.state()[0].clone();
        assert!(opt
            .set_state("nope", st)
            .unwrap_err()
            .to_string()
            .contains("nope"));
    }
}
