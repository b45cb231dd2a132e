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
                    bc1,
                    bc2,
                )?;
                continue;
            }
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

/// CPU f32: the same update in three in-place passes, no temporaries (the tensor-op version makes
/// a dozen full-size temporaries per parameter, 135M floats each step for SmolLM2).
mod fused {
    use super::AdamWConfig;
    use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
    use rayon::prelude::*;

    const CHUNK: usize = 1 << 14;

    pub fn applies(p: &Tensor, m: &Tensor, v: &Tensor) -> bool {
        p.device().is_cpu()
            && p.dtype() == candle_core::DType::F32
            && [p, m, v].iter().all(|t| t.is_contiguous())
    }

    fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
        let o = l.start_offset();
        Ok(&s.as_slice::<f32>()?[o..o + l.shape().elem_count()])
    }

    fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
        let o = l.start_offset();
        let n = l.shape().elem_count();
        match s {
            CpuStorage::F32(v) => Ok(&mut v[o..o + n]),
            _ => candle_core::bail!("adamw: f32 expected"),
        }
    }

    /// `dst = beta * dst + (1 - beta) * f(src)`.
    struct Ema {
        beta: f64,
        square: bool,
    }

    impl InplaceOp2 for Ema {
        fn name(&self) -> &'static str {
            "adamw-ema"
        }
        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<()> {
            let g = slice(s2, l2)?;
            let m = slice_mut(s1, l1)?;
            let (b, a) = (self.beta as f32, (1.0 - self.beta) as f32);
            let sq = self.square;
            m.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .for_each(|(m, g)| {
                    for (m, &g) in m.iter_mut().zip(g) {
                        let x = if sq { g * g } else { g };
                        *m = *m * b + x * a;
                    }
                });
            Ok(())
        }
    }

    struct Update {
        decay: f32,
        step_size: f32,
        inv_sqrt_bc2: f32,
        eps: f32,
    }

    impl InplaceOp3 for Update {
        fn name(&self) -> &'static str {
            "adamw-update"
        }
        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<()> {
            let (m, v) = (slice(s2, l2)?, slice(s3, l3)?);
            let p = slice_mut(s1, l1)?;
            p.par_chunks_mut(CHUNK)
                .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
                .for_each(|(p, (m, v))| {
                    for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                        let denom = v.sqrt() * self.inv_sqrt_bc2 + self.eps;
                        *p = *p * self.decay - self.step_size * (m / denom);
                    }
                });
            Ok(())
        }
    }

    pub fn step(
        p: &Tensor,
        g: &Tensor,
        m: &Tensor,
        v: &Tensor,
        c: &AdamWConfig,
        bc1: f64,
        bc2: f64,
    ) -> Result<()> {
        m.inplace_op2(
            g,
            &Ema {
                beta: c.beta1,
                square: false,
            },
        )?;
        v.inplace_op2(
            g,
            &Ema {
                beta: c.beta2,
                square: true,
            },
        )?;
        p.inplace_op3(
            m,
            v,
            &Update {
                decay: (1.0 - c.lr * c.weight_decay) as f32,
                step_size: (c.lr / bc1) as f32,
                inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
                eps: c.eps as f32,
            },
        )
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
        let d = (&out[0] - &out[1])
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-5, "{d}");
        let moved = (&out[0] - &p0)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(moved > 1e-3);
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
