//! PPO's critic: the decoder with a linear value head on its final-normed hidden states, as
//! SkyRL builds it (the base model, no LM head, plus `nn.Linear(hidden_size, 1, bias=False)`
//! named `{value_head_prefix}.weight`). The value of response token `t` is read at the position
//! before it, where the log-prob of `t` is read too.

use crate::{Model, ModelConfig, Precision};
use anyhow::{bail, Context};
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;

#[derive(Debug)]
pub struct ValueModel {
    decoder: Model,
    head: Var,
    head_name: String,
}

/// How to start a value head the checkpoint does not hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadInit {
    /// Standard deviation of the normal draw.
    pub std: f64,
    pub seed: u64,
}

impl HeadInit {
    /// SkyRL's rule. A critic started from the policy's own checkpoint gets
    /// `N(0, 1/(hidden_size + 1))` (its `init_value_head`); any other checkpoint without a head
    /// gets what `from_pretrained` gives a missing linear, `N(0, initializer_range)`.
    pub fn skyrl(cfg: &ModelConfig, same_checkpoint_as_policy: bool, seed: u64) -> Self {
        let std = if same_checkpoint_as_policy {
            1.0 / (cfg.hidden_size as f64 + 1.0)
        } else {
            cfg.initializer_range.unwrap_or(0.02)
        };
        Self { std, seed }
    }
}

impl ValueModel {
    /// Builds the critic from HF-named tensors. `{head_prefix}.weight` (`[1, hidden]`) is taken
    /// from `tensors` when present, else drawn per `init`. An `lm_head.weight` is ignored: the
    /// critic has no LM head.
    pub fn from_tensors(
        cfg: &ModelConfig,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
        head_prefix: &str,
        init: HeadInit,
    ) -> anyhow::Result<Self> {
        Self::from_tensors_with_dtype(cfg, tensors, device, DType::F32, head_prefix, init)
    }

    /// As [`ValueModel::from_tensors`] with parameters stored in `dtype` (f64 for gradient checks).
    pub fn from_tensors_with_dtype(
        cfg: &ModelConfig,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
        head_prefix: &str,
        init: HeadInit,
    ) -> anyhow::Result<Self> {
        // Tied, the decoder asks for no `lm_head.weight` and never uses its head.
        let mut base = cfg.clone();
        base.tie_word_embeddings = true;
        let decoder = Model::from_tensors_with_dtype(&base, tensors, device, dtype)?;
        let head_name = format!("{head_prefix}.weight");
        let h = cfg.hidden_size;
        let head = match tensors.get(&head_name) {
            Some(t) => {
                if t.dims() != [1, h] {
                    bail!(
                        "tensor `{head_name}` has shape {:?}, expected [1, {h}]",
                        t.dims()
                    );
                }
                t.to_dtype(dtype)?.to_device(device)?.detach()
            }
            None => {
                if !(init.std.is_finite() && init.std > 0.0) {
                    bail!("value head init std must be positive, got {}", init.std);
                }
                let normal = Normal::new(0.0, init.std).context("value head init")?;
                let mut rng = rand::rngs::StdRng::seed_from_u64(init.seed);
                let w: Vec<f32> = (0..h).map(|_| normal.sample(&mut rng) as f32).collect();
                Tensor::from_vec(w, (1, h), device)?.to_dtype(dtype)?
            }
        };
        Ok(Self {
            decoder,
            head: Var::from_tensor(&head)?,
            head_name,
        })
    }

    pub fn decoder(&self) -> &Model {
        &self.decoder
    }

    pub fn device(&self) -> &Device {
        self.decoder.device()
    }

    /// Trainable parameters under their HF names: the decoder's and the value head.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut v = self.decoder.named_vars().to_vec();
        v.push((self.head_name.clone(), self.head.clone()));
        v
    }

    /// The parameters as tensors (detached aliases), for checkpoints.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.named_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().detach()))
            .collect()
    }

    /// Values `[B, response_len]` of the last `response_len` tokens of each row (same layout as
    /// [`Model::response_logprobs`]: prompts left-padded, responses right-padded). `grad = false`
    /// returns a detached tensor.
    pub fn values(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        response_len: usize,
        grad: bool,
        precision: Precision,
    ) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        if response_len == 0 || response_len >= s {
            candle_core::bail!("response_len {response_len} must be in 1..{s} (sequence length)")
        }
        let hs = self
            .decoder
            .forward_hidden(input_ids, attention_mask, grad, precision)?;
        let h = hs.dim(2)?;
        let rows = hs
            .narrow(1, s - response_len - 1, response_len)?
            .reshape((b * response_len, h))?;
        let v = rows
            .matmul(&self.head.as_tensor().t()?)?
            .reshape((b, response_len))?;
        Ok(if grad { v } else { v.detach() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{random_tensors, tiny_config};

    fn batch() -> (Tensor, Tensor) {
        let ids: Vec<u32> = vec![0, 0, 5, 9, 17, 3, 44, 0, 8, 1, 2, 60, 31, 7, 12, 50];
        let mask: Vec<u32> = vec![0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1];
        (
            Tensor::from_vec(ids, (2, 8), &Device::Cpu).unwrap(),
            Tensor::from_vec(mask, (2, 8), &Device::Cpu).unwrap(),
        )
    }

    fn critic(seed: u64) -> ValueModel {
        let cfg = tiny_config(true, false);
        let tensors = random_tensors(&cfg, seed, DType::F32);
        let init = HeadInit::skyrl(&cfg, true, 9);
        ValueModel::from_tensors(&cfg, &tensors, &Device::Cpu, "value_head", init).unwrap()
    }

    /// The value of each response token is the head applied to the hidden state one position
    /// before it, the same position the token's log-prob is read at.
    #[test]
    fn values_are_the_head_on_the_hidden_state_before_each_response_token() {
        let c = critic(1);
        let (ids, mask) = batch();
        let v = c.values(&ids, &mask, 3, false, Precision::F32).unwrap();
        assert_eq!(v.dims(), [2, 3]);
        let hs = c
            .decoder()
            .forward_hidden(&ids, &mask, false, Precision::F32)
            .unwrap();
        let head = c.named_vars().last().unwrap().1.as_tensor().clone();
        let want = hs
            .narrow(1, 4, 3)
            .unwrap()
            .broadcast_mul(&head.unsqueeze(0).unwrap())
            .unwrap()
            .sum(2)
            .unwrap();
        let diff = (v - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn the_head_is_drawn_as_skyrl_draws_it_or_taken_from_the_checkpoint() {
        let cfg = tiny_config(true, false);
        let c = critic(1);
        let names: Vec<String> = c.named_vars().into_iter().map(|(n, _)| n).collect();
        assert!(!names.iter().any(|n| n == "lm_head.weight"), "no LM head");
        assert_eq!(names.last().unwrap(), "value_head.weight");
        let w = c.tensors()["value_head.weight"].clone();
        let std = w
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        // 32 draws of N(0, 1/33): the sample std is within a factor 2 of 0.0303.
        assert!((0.015..0.06).contains(&std), "std {std}");
        assert_eq!(HeadInit::skyrl(&cfg, false, 0).std, 0.02);

        // A saved critic comes back with its head.
        let saved = c.tensors();
        let back = ValueModel::from_tensors(
            &cfg,
            &saved,
            &Device::Cpu,
            "value_head",
            HeadInit::skyrl(&cfg, true, 5),
        )
        .unwrap();
        let again = back.tensors()["value_head.weight"]
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(again, w.to_vec2::<f32>().unwrap());
        let mut bad = saved;
        bad.insert(
            "value_head.weight".into(),
            Tensor::zeros((2, 32), DType::F32, &Device::Cpu).unwrap(),
        );
        let err = ValueModel::from_tensors(
            &cfg,
            &bad,
            &Device::Cpu,
            "value_head",
            HeadInit::skyrl(&cfg, true, 5),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("value_head.weight") && err.contains("[1, 32]"),
            "{err}"
        );
    }

    /// Gradients of a weighted sum of values reach the head and the decoder, and match finite
    /// differences (f64 decoder).
    #[test]
    fn value_gradients_match_finite_differences() {
        let cfg = tiny_config(false, true);
        let mut tensors = random_tensors(&cfg, 2, DType::F64);
        let head: Vec<f64> = (0..32).map(|i| ((i as f64) * 0.37).sin() * 0.2).collect();
        tensors.insert(
            "value_head.weight".into(),
            Tensor::from_vec(head, (1, 32), &Device::Cpu).unwrap(),
        );
        let c = ValueModel::from_tensors_with_dtype(
            &cfg,
            &tensors,
            &Device::Cpu,
            DType::F64,
            "value_head",
            HeadInit::skyrl(&cfg, true, 0),
        )
        .unwrap();
        let (ids, mask) = batch();
        let w = Tensor::new(&[[0.5f64, -1.0, 2.0], [1.5, 0.25, -0.75]], &Device::Cpu).unwrap();
        let loss = |c: &ValueModel| -> Tensor {
            let v = c.values(&ids, &mask, 3, true, Precision::F32).unwrap();
            (v * &w).unwrap().sum_all().unwrap()
        };
        let grads = loss(&c).backward().unwrap();
        for name in [
            "value_head.weight",
            "model.norm.weight",
            "model.layers.1.mlp.down_proj.weight",
            "model.layers.0.self_attn.q_proj.weight",
        ] {
            let var = c
                .named_vars()
                .into_iter()
                .find(|(n, _)| n == name)
                .unwrap()
                .1;
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} has no gradient"))
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let value = |c: &ValueModel| loss(c).to_scalar::<f64>().unwrap();
            for i in [0, base.len() / 2, base.len() - 1] {
                let eps = 1e-5;
                let set = |x: &[f64]| {
                    var.set(&Tensor::from_vec(x.to_vec(), var.shape(), var.device()).unwrap())
                        .unwrap()
                };
                let mut p = base.clone();
                p[i] += eps;
                set(&p);
                let lp = value(&c);
                p[i] -= 2.0 * eps;
                set(&p);
                let lm = value(&c);
                set(&base);
                let fd = (lp - lm) / (2.0 * eps);
                assert!(
                    (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{name}[{i}]: autograd {} vs finite difference {fd}",
                    g[i]
                );
            }
        }
    }
}
