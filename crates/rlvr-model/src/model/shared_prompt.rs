//! One prompt pass per group. The samples of a GRPO group share their prompt: its forward runs
//! once, every response of the group attends to its keys and values, and in the backward pass the
//! prompt's gradients gather from all of them (`index_select`'s backward sums). The result equals
//! the `[prompt | response]` rows of [`Model::forward_hidden`] up to summation order, at the cost of
//! the prompt once per group instead of once per sample.

use super::{ops, Model, Tape, MASKED};
use crate::logprobs::{lm_head_logprobs, LogProbOptions, TokenLogProbs};
use crate::Precision;
use candle_core::{DType, Result, Tensor};

/// Rows whose prompts are shared: response row `r` follows prompt row `group[r]`.
pub struct SharedPrompts<'a> {
    /// `[G, P]` u32, left-padded.
    pub prompt_ids: &'a Tensor,
    /// `[G, P]`, 1 on real tokens.
    pub prompt_mask: &'a Tensor,
    /// `[B, R]` u32, right-padded.
    pub response_ids: &'a Tensor,
    /// `[B, R]`, 1 on real tokens.
    pub response_mask: &'a Tensor,
    /// `B` prompt rows, each `< G`.
    pub group: &'a [u32],
}

impl Model {
    /// Final-normed hidden states of the prompts `[G, P, hidden]` and of the responses
    /// `[B, R, hidden]`, positions and attention as if each response row were its prompt
    /// followed by the response.
    pub fn forward_hidden_shared(
        &self,
        batch: &SharedPrompts,
        grad: bool,
        precision: Precision,
    ) -> Result<(Tensor, Tensor)> {
        self.forward_hidden_shared_taped(batch, grad, precision, None)
    }

    /// [`Model::forward_hidden_shared`], cut at every layer boundary into `tape` when one is
    /// given.
    fn forward_hidden_shared_taped(
        &self,
        batch: &SharedPrompts,
        grad: bool,
        precision: Precision,
        mut tape: Option<&mut Tape>,
    ) -> Result<(Tensor, Tensor)> {
        let (g, p) = batch.prompt_ids.dims2()?;
        let (rows, r) = batch.response_ids.dims2()?;
        if batch.prompt_mask.dims() != [g, p]
            || batch.response_mask.dims() != [rows, r]
            || batch.group.len() != rows
        {
            candle_core::bail!(
                "shared prompts: prompt ids {:?} and mask {:?}, response ids {:?} and mask {:?}, \
                 {} group indices: shapes disagree",
                batch.prompt_ids.dims(),
                batch.prompt_mask.dims(),
                batch.response_ids.dims(),
                batch.response_mask.dims(),
                batch.group.len()
            )
        }
        if let Some(bad) = batch.group.iter().find(|&&i| i as usize >= g) {
            candle_core::bail!("shared prompts: group index {bad} for {g} prompts")
        }
        let pm = batch.prompt_mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let rm = batch.response_mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;

        // The prompts: causal over themselves, as in `forward_hidden`.
        let (pos_p, add_p) = super::causal_layout(&pm);
        // The responses: keys are the group's prompt (its real tokens) and then the response
        // causally; positions continue from the prompt's length.
        let t = p + r;
        let mut pos_r = Vec::with_capacity(rows * r);
        let mut add_r = vec![0f32; rows * r * t];
        for (row, m) in rm.iter().enumerate() {
            let prompt = &pm[batch.group[row] as usize];
            let mut c = prompt.iter().filter(|&&x| x != 0.0).count() as u32;
            for &x in m {
                c += (x != 0.0) as u32;
                pos_r.push(c.saturating_sub(1));
            }
            for i in 0..r {
                let base = (row * r + i) * t;
                for j in 0..p {
                    if prompt[j] == 0.0 {
                        add_r[base + j] = MASKED;
                    }
                }
                for j in 0..r {
                    if j > i || m[j] == 0.0 {
                        add_r[base + p + j] = MASKED;
                    }
                }
            }
        }
        let dev = &self.device;
        let mask_p = Tensor::from_vec(add_p, (g, 1, 1, p, p), dev)?.to_dtype(self.dtype)?;
        let mask_r = Tensor::from_vec(add_r, (rows, 1, 1, r, t), dev)?.to_dtype(self.dtype)?;
        let (cos_p, sin_p) = self.rope.gather(&Tensor::from_vec(pos_p, (g, p), dev)?)?;
        let (cos_r, sin_r) = self
            .rope
            .gather(&Tensor::from_vec(pos_r, (rows, r), dev)?)?;
        let group = Tensor::from_vec(batch.group.to_vec(), rows, dev)?;
        let dims = self.dims();

        let mut xp = self.embed_tokens(batch.prompt_ids, tape.as_deref_mut())?;
        let mut xr = self.embed_tokens(batch.response_ids, tape.as_deref_mut())?;
        for layer in &self.layers {
            if let Some(t) = tape.as_deref_mut() {
                [xp, xr] = t.cut([xp, xr]);
            }
            let mut prompt_kv = None;
            xp = self.layer_forward(layer, &xp, &cos_p, &sin_p, grad, precision, |q, k, v| {
                // The group's copies of the prompt's bf16 keys and values are f32: candle's
                // `index_select` sums its gradient into zeros of its input's dtype.
                prompt_kv = Some((ops::widened(k, grad)?, ops::widened(v, grad)?));
                ops::attention(q, k, v, &mask_p, dims, grad, precision)
            })?;
            let (kp, vp) = prompt_kv.expect("the layer ran its attention");
            let (kp, vp) = (
                kp.contiguous()?.index_select(&group, 0)?,
                vp.contiguous()?.index_select(&group, 0)?,
            );
            xr = self.layer_forward(layer, &xr, &cos_r, &sin_r, grad, precision, |q, k, v| {
                let k = Tensor::cat(&[&kp, &ops::widened(k, grad)?], 2)?;
                let v = Tensor::cat(&[&vp, &ops::widened(v, grad)?], 2)?;
                ops::attention(q, &k, &v, &mask_r, dims, grad, precision)
            })?;
        }
        if let Some(t) = tape {
            [xp, xr] = t.cut([xp, xr]);
        }
        let eps = self.cfg.rms_norm_eps;
        Ok((
            ops::rms_norm(&xp, self.norm.as_tensor(), eps, grad, DType::F32)?,
            ops::rms_norm(&xr, self.norm.as_tensor(), eps, grad, DType::F32)?,
        ))
    }

    /// [`Model::response_logprobs`] for rows that share prompts: `[B, R]` log-probs (and
    /// entropies) of the response tokens, the first read at the prompt's last position.
    pub fn response_logprobs_shared(
        &self,
        batch: &SharedPrompts,
        opts: &LogProbOptions,
    ) -> Result<TokenLogProbs> {
        let mut tape = Tape::default();
        let (hp, hr) = self.forward_hidden_shared_taped(
            batch,
            opts.grad,
            opts.precision,
            (opts.grad && opts.segmented).then_some(&mut tape),
        )?;
        let (rows, r, h) = hr.dims3()?;
        let p = hp.dim(1)?;
        if p == 0 || r == 0 {
            candle_core::bail!("shared prompts: prompts of {p} and responses of {r} tokens")
        }
        let group = Tensor::from_vec(batch.group.to_vec(), rows, hp.device())?;
        // Position t predicts token t + 1: the prompt's last state predicts the first token.
        let first = hp
            .narrow(1, p - 1, 1)?
            .contiguous()?
            .index_select(&group, 0)?;
        let states = if r > 1 {
            Tensor::cat(&[&first, &hr.narrow(1, 0, r - 1)?], 1)?
        } else {
            first
        }
        .reshape((rows * r, h))?;
        let labels = batch.response_ids.flatten_all()?.to_dtype(DType::U32)?;
        let out = lm_head_logprobs(&states, self.lm_head_weight(), &labels, opts)?;
        TokenLogProbs::from_head(&out, (rows, r), opts, tape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{max_abs_diff, random_tensors, tiny_config};
    use candle_core::Device;

    fn t(v: Vec<u32>, shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The same batch as `[prompt | response]` rows: ids and mask.
    fn whole_rows(s: &SharedPrompts) -> (Tensor, Tensor) {
        let group = Tensor::new(s.group, &Device::Cpu).unwrap();
        let row = |prompt: &Tensor, response: &Tensor| {
            let prompt = prompt.index_select(&group, 0).unwrap();
            Tensor::cat(&[&prompt, response], 1).unwrap()
        };
        (
            row(s.prompt_ids, s.response_ids),
            row(s.prompt_mask, s.response_mask),
        )
    }

    /// Two prompts (3 and 5 tokens, left-padded) with 3 and 2 responses of ragged lengths: the
    /// shared computation equals the `[prompt | response]` rows in log-probs, entropies and
    /// every parameter's gradient (f64, so only summation order differs), for f32 and bf16
    /// products alike.
    #[test]
    fn shared_prompts_equal_the_unshared_rows_in_values_and_gradients() {
        let cfg = tiny_config(true, false);
        let tensors = random_tensors(&cfg, 11, DType::F64);
        let model =
            Model::from_tensors_with_dtype(&cfg, &tensors, &Device::Cpu, DType::F64).unwrap();
        let (p, r) = (5, 4);
        let prompt_ids = vec![0, 0, 7, 3, 9, 12, 40, 5, 33, 2];
        let prompt_mask = vec![0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
        let response_ids = vec![
            4, 8, 15, 16, 23, 42, 0, 0, 61, 0, 0, 0, 10, 20, 30, 0, 11, 0, 0, 0,
        ];
        let response_mask = vec![1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0];
        let group = [0u32, 0, 0, 1, 1];
        let rows = group.len();
        let shared = SharedPrompts {
            prompt_ids: &t(prompt_ids.clone(), (2, p)),
            prompt_mask: &t(prompt_mask.clone(), (2, p)),
            response_ids: &t(response_ids.clone(), (rows, r)),
            response_mask: &t(response_mask.clone(), (rows, r)),
            group: &group,
        };
        let (ids, mask) = whole_rows(&shared);
        let w = Tensor::arange(0f64, (rows * r) as f64, &Device::Cpu)
            .unwrap()
            .reshape((rows, r))
            .unwrap()
            .affine(0.1, -0.9)
            .unwrap();
        for precision in [Precision::F32, Precision::Bf16] {
            let opts = LogProbOptions {
                entropy: true,
                grad: true,
                temperature: 0.8,
                precision,
                ..Default::default()
            };
            let loss = |o: &TokenLogProbs| {
                ((&o.logprobs * &w).unwrap().sum_all().unwrap()
                    + (o.entropy.as_ref().unwrap() * 0.3)
                        .unwrap()
                        .sum_all()
                        .unwrap())
                .unwrap()
            };
            let a = model.response_logprobs_shared(&shared, &opts).unwrap();
            let b = model.response_logprobs(&ids, &mask, r, &opts).unwrap();
            let diff = max_abs_diff;
            assert!(
                diff(&a.logprobs, &b.logprobs) < 1e-12,
                "{precision:?} log-probs"
            );
            assert!(
                diff(a.entropy.as_ref().unwrap(), b.entropy.as_ref().unwrap()) < 1e-12,
                "{precision:?} entropies"
            );
            let (ga, gb) = (loss(&a).backward().unwrap(), loss(&b).backward().unwrap());
            for (name, var) in model.named_vars() {
                let (x, y) = (ga.get(var.as_tensor()), gb.get(var.as_tensor()));
                let (x, y) = (
                    x.unwrap(),
                    y.unwrap_or_else(|| panic!("{name}: no gradient")),
                );
                let scale = 1.0 + diff(y, &y.zeros_like().unwrap());
                assert!(
                    diff(x, y) < 1e-10 * scale,
                    "{precision:?} {name}: {}",
                    diff(x, y)
                );
            }
        }
    }

    /// The f32 model takes the fused kernels (masked softmax, AMX or gemm products), which the
    /// f64 check above does not reach: the same comparison within f32 (and bf16) rounding, for
    /// scoring (no grad) and training (grad) alike, repeated so that a kernel's state between calls
    /// would show.
    #[test]
    fn shared_prompts_equal_the_unshared_rows_on_the_f32_kernels() {
        let cfg = tiny_config(true, false);
        let tensors = random_tensors(&cfg, 5, DType::F32);
        let model = Model::from_tensors(&cfg, &tensors, &Device::Cpu).unwrap();
        let (g, n, p, r) = (2, 4, 6, 9);
        let mut rng = 7u32;
        let mut next = |m: u32| {
            rng = rng.wrapping_mul(1664525).wrapping_add(1013904223);
            (rng >> 8) % m
        };
        let mut prompt_ids = vec![0u32; g * p];
        let mut prompt_mask = vec![0u32; g * p];
        for k in 0..g {
            let len = p - k * 2;
            for j in p - len..p {
                prompt_ids[k * p + j] = 1 + next(63);
                prompt_mask[k * p + j] = 1;
            }
        }
        let rows = g * n;
        let mut response_ids = vec![0u32; rows * r];
        let mut response_mask = vec![0u32; rows * r];
        for row in 0..rows {
            let len = 1 + (row * 3) % r;
            for j in 0..len {
                response_ids[row * r + j] = 1 + next(63);
                response_mask[row * r + j] = 1;
            }
        }
        let group: Vec<u32> = (0..rows).map(|i| (i / n) as u32).collect();
        let shared = SharedPrompts {
            prompt_ids: &t(prompt_ids.clone(), (g, p)),
            prompt_mask: &t(prompt_mask.clone(), (g, p)),
            response_ids: &t(response_ids.clone(), (rows, r)),
            response_mask: &t(response_mask.clone(), (rows, r)),
            group: &group,
        };
        let (ids, mask) = whole_rows(&shared);
        let valid = t(response_mask.clone(), (rows, r))
            .to_dtype(DType::F32)
            .unwrap();
        for precision in [Precision::F32, Precision::Bf16] {
            for grad in [false, true, false, true] {
                let opts = LogProbOptions {
                    grad,
                    precision,
                    ..Default::default()
                };
                let a = model
                    .response_logprobs_shared(&shared, &opts)
                    .unwrap()
                    .logprobs;
                let b = model
                    .response_logprobs(&ids, &mask, r, &opts)
                    .unwrap()
                    .logprobs;
                let d = ((a - b).unwrap().abs().unwrap() * &valid)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let tol = if precision == Precision::F32 {
                    1e-4
                } else {
                    5e-2
                };
                assert!(
                    d < tol,
                    "{precision:?} grad={grad}: log-probs differ by {d}"
                );
            }
        }
    }

    #[test]
    fn bad_shapes_and_groups_are_errors() {
        let cfg = tiny_config(false, true);
        let tensors = random_tensors(&cfg, 1, DType::F32);
        let model = Model::from_tensors(&cfg, &tensors, &Device::Cpu).unwrap();
        let ids = t(vec![1, 2, 3, 4], (2, 2));
        let ones = t(vec![1; 4], (2, 2));
        let batch = |group: &'static [u32]| SharedPrompts {
            prompt_ids: &ids,
            prompt_mask: &ones,
            response_ids: &ids,
            response_mask: &ones,
            group,
        };
        let opts = LogProbOptions::default();
        let err = model.response_logprobs_shared(&batch(&[0, 2]), &opts);
        assert!(err.unwrap_err().to_string().contains("group index 2"));
        let err = model.response_logprobs_shared(&batch(&[0]), &opts);
        assert!(err.unwrap_err().to_string().contains("shapes disagree"));
        assert!(model
            .response_logprobs_shared(&batch(&[1, 1]), &opts)
            .is_ok());
    }
}
