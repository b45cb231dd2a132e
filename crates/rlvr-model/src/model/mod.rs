//! The Llama-family decoder (Llama, SmolLM/SmolLM2, Qwen2 with q/k/v bias, GQA) as Hugging Face
//! defines it, built from differentiable candle ops so the trainer can backpropagate through it.
//!
//! Parameters are [`Var`]s under their HF names. The same `Var`s serve training (full-sequence
//! forward with an attention mask) and generation (KV-cached forward): an optimizer step is seen by
//! the next generation without any copy.

mod autograd;
pub mod ops;
pub mod rope;
mod shared_prompt;
mod tape;

pub use shared_prompt::SharedPrompts;
pub(crate) use tape::Tape;

use crate::config::ModelConfig;
use crate::kernels::gemm::Precision;
use crate::kernels::packed::{self, Packed};
use crate::kernels::skinny;
use crate::kv_cache::KvCache;
use anyhow::{bail, Context};
use candle_core::{DType, Device, Result, Tensor, Var};
use rope::RopeTables;
use std::collections::HashMap;
use std::sync::Arc;

/// Whether [`Model::decode_copy`] with bf16 weights can run here (the packed bf16 kernel
/// needs AVX-512F).
pub fn bf16_decode_supported() -> bool {
    packed::available()
}

/// Additive mask value for disallowed keys. Finite, so fully masked (padding) query rows give a
/// uniform softmax instead of NaN, which would otherwise leak into gradients as NaN * 0.
const MASKED: f32 = -1e30;

#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Var,
    pub bias: Option<Var>,
    /// A decoding copy's weights packed for the CPU kernel (`weight` then holds the source it
    /// was packed from); used when no gradient is wanted.
    pub packed: Option<Arc<Packed>>,
}

impl Linear {
    /// `x: [N, in]` → `[N, out]`, the product's inputs in `precision`. Without `grad`, few-row
    /// inputs take the decoding kernel.
    pub fn forward(&self, x: &Tensor, grad: bool, precision: Precision) -> Result<Tensor> {
        self.forward_to(x, grad, precision, DType::F32)
    }

    /// [`Linear::forward`] with a bf16 output (`out`) where the CPU kernels run the product in
    /// bf16: an activation that only feeds other bf16 products; f32 otherwise.
    pub fn forward_to(
        &self,
        x: &Tensor,
        grad: bool,
        precision: Precision,
        out: DType,
    ) -> Result<Tensor> {
        let w = self.weight.as_tensor();
        let y = if let (false, Some(p)) = (grad, &self.packed) {
            p.matmul_t(x)?
        } else if !grad && precision == Precision::F32 {
            matmul_t(x, w)?
        } else if let Some(y) = ops::linear(x, w, grad, precision, out)? {
            y
        } else if precision == Precision::Bf16 && x.dtype() == DType::F32 {
            // Other devices: their bf16 matmul (cuBLAS on CUDA), differentiable through the casts.
            let bf = DType::BF16;
            x.to_dtype(bf)?
                .matmul(&w.to_dtype(bf)?.t()?)?
                .to_dtype(DType::F32)?
        } else {
            x.matmul(&w.t()?)?
        };
        self.add_bias(y, grad)
    }

    /// `res + self.forward(x)` for `res: [B, L, out]` and `x: [B * L, in]`: one op on the CPU
    /// kernels where the layer has no bias and a gradient is wanted (the product accumulates
    /// into the residual), else the two steps.
    pub fn forward_residual(
        &self,
        res: &Tensor,
        x: &Tensor,
        grad: bool,
        precision: Precision,
    ) -> Result<Tensor> {
        if grad && self.bias.is_none() && self.packed.is_none() {
            let w = self.weight.as_tensor();
            if let Some(y) = ops::linear_residual(res, x, w, grad, precision)? {
                return Ok(y);
            }
        }
        res + self.forward(x, grad, precision)?.reshape(res.shape())?
    }

    /// No bias and no packed decoding weights: the weight tensor is the whole layer.
    fn plain(&self) -> bool {
        self.bias.is_none() && self.packed.is_none()
    }

    fn add_bias(&self, y: Tensor, grad: bool) -> Result<Tensor> {
        let Some(b) = &self.bias else { return Ok(y) };
        if let Some(sum) = ops::add_bias_bf16(&y, b.as_tensor(), grad)? {
            return Ok(sum);
        }
        // A bf16 output takes the bias in bf16, as autocast's linear does.
        y.broadcast_add(&b.as_tensor().to_dtype(y.dtype())?)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    input_norm: Var,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Var,
    gate: Linear,
    up: Linear,
    down: Linear,
    /// A decoding copy's packed `[q; k; v]` and `[gate; up]`: one pass over the input and one
    /// parallel section each instead of three and two.
    fused: Option<Fused>,
}

#[derive(Debug, Clone)]
struct Fused {
    qkv: Arc<Packed>,
    gate_up: Arc<Packed>,
}

use ops::AttnDims as Dims;

#[derive(Debug)]
pub struct Model {
    cfg: ModelConfig,
    embed: Var,
    layers: Vec<Layer>,
    norm: Var,
    /// `None` when tied to the embedding.
    lm_head: Option<Var>,
    /// A decoding copy's packed output head (see [`Linear::packed`]).
    lm_head_packed: Option<Arc<Packed>>,
    rope: RopeTables,
    named: Vec<(String, Var)>,
    device: Device,
    dtype: DType,
    /// For a [`Model::decode_copy`], the dtype its matrix weights are stored in.
    decoding: Option<DType>,
}

/// Takes HF-named tensors out of the map, checking presence and shape.
struct Params<'a> {
    tensors: &'a HashMap<String, Tensor>,
    device: &'a Device,
    dtype: DType,
    named: Vec<(String, Var)>,
}

impl Params<'_> {
    fn var(&mut self, name: &str, shape: &[usize]) -> anyhow::Result<Var> {
        let t = self.tensors.get(name).with_context(|| {
            format!("checkpoint is missing tensor `{name}` (expected shape {shape:?})")
        })?;
        if t.dims() != shape {
            bail!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                t.dims()
            );
        }
        let t = t.to_dtype(self.dtype)?.to_device(self.device)?;
        // `detach` makes `from_tensor` copy: a Var built from another model's Var would otherwise
        // share its storage, and a reference model would silently follow the policy's updates.
        let v = Var::from_tensor(&t.detach())?;
        self.named.push((name.to_string(), v.clone()));
        Ok(v)
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize, bias: bool) -> anyhow::Result<Linear> {
        let weight = self.var(&format!("{name}.weight"), &[out, inp])?;
        let bias = if bias {
            Some(self.var(&format!("{name}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            packed: None,
        })
    }
}

impl Model {
    /// Builds the decoder from HF-named tensors (any float dtype; stored as f32 `Var`s on `device`).
    pub fn from_tensors(
        cfg: &ModelConfig,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
    ) -> anyhow::Result<Self> {
        Self::from_tensors_with_dtype(cfg, tensors, device, DType::F32)
    }

    /// As [`Model::from_tensors`] with parameters stored in `dtype` (f64 for gradient checks).
    pub fn from_tensors_with_dtype(
        cfg: &ModelConfig,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
    ) -> anyhow::Result<Self> {
        if cfg.hidden_act != "silu" {
            bail!("unsupported hidden_act `{}` (only silu)", cfg.hidden_act);
        }
        let (h, ffn, nh, nkv, hd) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_attention_heads,
            cfg.num_kv_heads(),
            cfg.head_dim(),
        );
        if nh == 0 || nkv == 0 || nh % nkv != 0 {
            bail!(
                "num_attention_heads {nh} must be a positive multiple of num_key_value_heads {nkv}"
            );
        }
        if hd % 2 != 0 {
            bail!("head_dim {hd} must be even for RoPE");
        }
        let bias = cfg.qkv_bias();
        let mut p = Params {
            tensors,
            device,
            dtype,
            named: Vec::new(),
        };
        let embed = p.var("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let pre = format!("model.layers.{i}");
            layers.push(Layer {
                input_norm: p.var(&format!("{pre}.input_layernorm.weight"), &[h])?,
                q: p.linear(&format!("{pre}.self_attn.q_proj"), nh * hd, h, bias)?,
                k: p.linear(&format!("{pre}.self_attn.k_proj"), nkv * hd, h, bias)?,
                v: p.linear(&format!("{pre}.self_attn.v_proj"), nkv * hd, h, bias)?,
                o: p.linear(&format!("{pre}.self_attn.o_proj"), h, nh * hd, false)?,
                post_norm: p.var(&format!("{pre}.post_attention_layernorm.weight"), &[h])?,
                gate: p.linear(&format!("{pre}.mlp.gate_proj"), ffn, h, false)?,
                up: p.linear(&format!("{pre}.mlp.up_proj"), ffn, h, false)?,
                down: p.linear(&format!("{pre}.mlp.down_proj"), h, ffn, false)?,
                fused: None,
            });
        }
        let norm = p.var("model.norm.weight", &[h])?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(
                p.var("lm_head.weight", &[cfg.vocab_size, h])
                    .context("untied model (tie_word_embeddings = false) needs `lm_head.weight`")?,
            )
        };
        let rope = RopeTables::new(cfg, cfg.max_position_embeddings, device)?;
        let rope = RopeTables {
            cos: rope.cos.to_dtype(dtype)?,
            sin: rope.sin.to_dtype(dtype)?,
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            lm_head,
            lm_head_packed: None,
            rope,
            named: p.named,
            device: device.clone(),
            dtype,
            decoding: None,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Trainable parameters under their HF names (a tied `lm_head` is not listed separately).
    pub fn named_vars(&self) -> &[(String, Var)] {
        &self.named
    }

    pub fn vars(&self) -> Vec<Var> {
        self.named.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The parameters under their HF names (`lm_head.weight` only if untied), for export or to
    /// build a reference model. These alias the live parameters (optimizer steps update them in
    /// place); [`Model::from_tensors`] copies, so a model built from them is frozen.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.named
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect()
    }

    /// A copy for decoding whose matrix weights (attention, MLP and output head) are stored in
    /// `weights`, bf16 or f32 (bf16 halves the bytes streamed per generated token; activations,
    /// norms and the embedding lookup stay f32, except that products of 16 rows or more take
    /// AMX tiles on bf16 activations where the CPU has them). Not trainable: it has no named
    /// parameters.
    /// bf16 needs [`bf16_decode_supported`].
    ///
    /// On an AVX-512 CPU the weights are packed for the decoding kernel (see [`packed`]), q/k/v
    /// and gate/up stacked, and for bf16 the KV cache is bf16 too. Elsewhere an f32 copy shares
    /// the weights, and a bf16 one (on a GPU) holds bf16 tensors.
    pub fn decode_copy(&self, weights: DType) -> Result<Model> {
        if !matches!(weights, DType::BF16 | DType::F32) {
            candle_core::bail!("decoding weights must be f32 or bf16, not {weights:?}")
        }
        let pack = self.device.is_cpu() && self.dtype == DType::F32 && packed::available();
        let packed = |w: &Tensor| -> Result<Option<Arc<Packed>>> {
            Ok(if pack {
                Some(Arc::new(Packed::pack(w, weights)?))
            } else {
                None
            })
        };
        let conv = |l: &Linear| -> Result<Linear> {
            let w = l.weight.as_tensor();
            Ok(Linear {
                weight: if pack {
                    l.weight.clone()
                } else {
                    Var::from_tensor(&w.to_dtype(weights)?)?
                },
                bias: l.bias.clone(),
                packed: packed(w)?,
            })
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let stacked = |ls: &[&Linear]| -> Result<Arc<Packed>> {
                    let ws: Vec<&Tensor> = ls.iter().map(|l| l.weight.as_tensor()).collect();
                    Ok(Arc::new(Packed::pack_stacked(&ws, weights)?))
                };
                let fused = if pack {
                    Some(Fused {
                        qkv: stacked(&[&l.q, &l.k, &l.v])?,
                        gate_up: stacked(&[&l.gate, &l.up])?,
                    })
                } else {
                    None
                };
                // With `fused`, q, k, v, gate and up keep only their source weights and biases.
                let part = |lin: &Linear| -> Result<Linear> {
                    if pack {
                        Ok(Linear {
                            weight: lin.weight.clone(),
                            bias: lin.bias.clone(),
                            packed: None,
                        })
                    } else {
                        conv(lin)
                    }
                };
                Ok(Layer {
                    input_norm: l.input_norm.clone(),
                    q: part(&l.q)?,
                    k: part(&l.k)?,
                    v: part(&l.v)?,
                    o: conv(&l.o)?,
                    post_norm: l.post_norm.clone(),
                    gate: part(&l.gate)?,
                    up: part(&l.up)?,
                    down: conv(&l.down)?,
                    fused,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Model {
            cfg: self.cfg.clone(),
            embed: self.embed.clone(),
            layers,
            norm: self.norm.clone(),
            lm_head: if pack {
                self.lm_head.clone()
            } else {
                Some(Var::from_tensor(&self.lm_head_weight().to_dtype(weights)?)?)
            },
            lm_head_packed: packed(self.lm_head_weight())?,
            rope: self.rope.clone(),
            named: Vec::new(),
            device: self.device.clone(),
            dtype: self.dtype,
            decoding: Some(weights),
        })
    }

    /// For a [`Model::decode_copy`], the dtype its matrix weights are stored in; `None` for a
    /// trainable model.
    pub fn decoding_weights(&self) -> Option<DType> {
        self.decoding
    }

    /// The output projection `[vocab, hidden]` (the embedding when tied).
    pub fn lm_head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed).as_tensor()
    }

    /// An empty KV cache for `slots` sequences of up to `capacity` tokens each.
    pub fn new_cache(&self, slots: usize, capacity: usize) -> Result<KvCache> {
        // A packed bf16 decoding copy keeps its keys and values in bf16 too, as bf16 engines do:
        // at batch 32 the cache is read at ~400 MB per step, more than the weights. The decoding
        // attention kernel reads bf16 on its AVX-512 path, which needs whole 16-lane vectors.
        use crate::kernels::Lanes;
        let dtype = if self.lm_head_packed.is_some()
            && self.decoding == Some(DType::BF16)
            && Lanes::detect() == Lanes::AVX512
            && self.cfg.head_dim().is_multiple_of(16)
        {
            DType::BF16
        } else {
            self.dtype
        };
        KvCache::new(&self.cfg, slots, capacity, dtype, &self.device)
    }

    fn dims(&self) -> Dims {
        Dims {
            heads: self.cfg.num_attention_heads,
            kv_heads: self.cfg.num_kv_heads(),
            head_dim: self.cfg.head_dim(),
        }
    }

    /// The embeddings of `ids: [B, S]`, `[B, S, hidden]`. With a tape the lookup is taken off
    /// the graph ([`Tape::lookup`]).
    fn embed_tokens(&self, ids: &Tensor, tape: Option<&mut Tape>) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let (table, flat) = (self.embed.as_tensor(), ids.flatten_all()?);
        let rows = match tape {
            Some(t) if table.is_variable() => t.lookup(table, flat)?,
            _ => table.index_select(&flat, 0)?,
        };
        rows.reshape((b, s, self.cfg.hidden_size))
    }

    /// Full-sequence forward over a padded batch. `input_ids: [B, S]` (u32), `attention_mask: [B, S]`
    /// (1 = token, 0 = padding; prompts left-padded, responses right-padded). Position ids are
    /// `cumsum(mask) - 1` as HF computes them. Returns the final-normed hidden states `[B, S, hidden]`.
    /// `grad = false` uses fused kernels without backward (reference model, scoring). The linear
    /// layers' products take their inputs in `precision` (bf16 for mixed-precision training).
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        grad: bool,
        precision: Precision,
    ) -> Result<Tensor> {
        self.forward_hidden_taped(input_ids, attention_mask, grad, precision, None)
    }

    /// [`Model::forward_hidden`], cut at every layer boundary into `tape` when one is given.
    pub(crate) fn forward_hidden_taped(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        grad: bool,
        precision: Precision,
        mut tape: Option<&mut Tape>,
    ) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        if attention_mask.dims() != [b, s] {
            candle_core::bail!(
                "attention_mask has shape {:?}, expected {:?} like input_ids",
                attention_mask.dims(),
                [b, s]
            )
        }
        let mask_rows = attention_mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let (positions, additive) = causal_layout(&mask_rows);
        let positions = Tensor::from_vec(positions, (b, s), &self.device)?;
        let mask =
            Tensor::from_vec(additive, (b, 1, 1, s, s), &self.device)?.to_dtype(self.dtype)?;
        let (cos, sin) = self.rope.gather(&positions)?;
        let mut x = self.embed_tokens(input_ids, tape.as_deref_mut())?;
        let dims = self.dims();
        for layer in &self.layers {
            if let Some(t) = tape.as_deref_mut() {
                [x] = t.cut([x]);
            }
            x = self.layer_forward(layer, &x, &cos, &sin, grad, precision, |q, k, v| {
                ops::attention(q, k, v, &mask, dims, grad, precision)
            })?;
        }
        if let Some(t) = tape {
            [x] = t.cut([x]);
        }
        ops::rms_norm(
            &x,
            self.norm.as_tensor(),
            self.cfg.rms_norm_eps,
            grad,
            DType::F32,
        )
    }

    /// Full logits `[B, S, vocab]` (tests and small inputs; training uses chunked log-probs).
    pub fn forward_logits(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        grad: bool,
    ) -> Result<Tensor> {
        let hs = self.forward_hidden(input_ids, attention_mask, grad, Precision::F32)?;
        let (b, s, h) = hs.dims3()?;
        let logits = hs
            .reshape((b * s, h))?
            .matmul(&self.lm_head_weight().t()?)?;
        logits.reshape((b, s, ()))
    }

    /// One decoder layer; `attn` maps rotated `q [B,nh,L,hd]`, `k, v [B,nkv,L,hd]` to
    /// `[B,L,nh*hd]` (heads merged).
    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        grad: bool,
        precision: Precision,
        attn: impl FnOnce(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (b, l, h) = x.dims3()?;
        let Dims {
            heads,
            kv_heads,
            head_dim,
        } = self.dims();
        let eps = self.cfg.rms_norm_eps;
        // Mixed-precision training on the CPU kernels keeps the activations that only feed
        // products (normed inputs, q, k, v and attention's output, gate and up, the SwiGLU
        // output) in bf16, as autocast does: half their memory, and products read them without
        // converting. The residual stream, the softmax and every gradient stay f32.
        let act = if grad && precision == Precision::Bf16 && crate::kernels::applies(x) {
            DType::BF16
        } else {
            DType::F32
        };
        let hn =
            ops::rms_norm(x, layer.input_norm.as_tensor(), eps, grad, act)?.reshape((b * l, h))?;
        let split = |t: Tensor, n: usize| -> Result<Tensor> {
            t.reshape((b, l, n, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = match (&layer.fused, grad) {
            (Some(f), false) => {
                let y = f.qkv.matmul_t(&hn)?;
                let (qd, kd) = (heads * head_dim, kv_heads * head_dim);
                (
                    layer.q.add_bias(y.narrow(1, 0, qd)?, false)?,
                    layer.k.add_bias(y.narrow(1, qd, kd)?, false)?,
                    layer.v.add_bias(y.narrow(1, qd + kd, kd)?, false)?,
                )
            }
            _ => (
                layer.q.forward_to(&hn, grad, precision, act)?,
                layer.k.forward_to(&hn, grad, precision, act)?,
                layer.v.forward_to(&hn, grad, precision, act)?,
            ),
        };
        let q = ops::split_rope(&q, (b, l, heads), cos, sin, grad)?;
        let k = ops::split_rope(&k, (b, l, kv_heads), cos, sin, grad)?;
        let v = split(v, kv_heads)?;
        let a = attn(&q, &k, &v)?;
        let a = a.reshape((b * l, heads * head_dim))?;
        let x = layer.o.forward_residual(x, &a, grad, precision)?;
        let hn =
            ops::rms_norm(&x, layer.post_norm.as_tensor(), eps, grad, act)?.reshape((b * l, h))?;
        // Training on the CPU kernels: gate and up as one op, and the SwiGLU output recomputed
        // inside the down projection's op instead of kept.
        if grad
            && [&layer.gate, &layer.up, &layer.down]
                .iter()
                .all(|l| l.plain())
        {
            let (wg, wu) = (layer.gate.weight.as_tensor(), layer.up.weight.as_tensor());
            if let Some(gu) = ops::linear_pair(&hn, (wg, wu), precision, act)? {
                let wd = layer.down.weight.as_tensor();
                if let Some(y) = ops::swiglu_linear_residual(&x, &gu, wd, precision)? {
                    return Ok(y);
                }
            }
        }
        let m = match (&layer.fused, grad) {
            (Some(f), false) => {
                let y = f.gate_up.matmul_t(&hn)?;
                let i = self.cfg.intermediate_size;
                ops::swiglu(&y.narrow(1, 0, i)?, &y.narrow(1, i, i)?, false)?
            }
            _ => ops::swiglu(
                &layer.gate.forward_to(&hn, grad, precision, act)?,
                &layer.up.forward_to(&hn, grad, precision, act)?,
                grad,
            )?,
        };
        let y = layer.down.forward_residual(&x, &m, grad, precision)?;
        // Ops on the weights (`Var`s) record a graph even without gradients; cut it at every
        // layer, or a scoring pass (reference model, old log-probs, prefill) would keep every
        // layer's activations alive until its end, as a training forward does. (The early
        // return above is taken with gradients only.)
        Ok(if grad { y } else { y.detach() })
    }

    /// KV-cached forward of `tokens` (row-major `[n, L]`) for the cache slots
    /// `first_slot..first_slot + n`, each continuing at its own cached length. Appends to the cache
    /// and returns the logits of each row's last token, `[n, vocab]`. Inference only (no grad).
    pub fn forward_cached(
        &self,
        cache: &mut KvCache,
        first_slot: usize,
        tokens: &[u32],
        n: usize,
    ) -> Result<Tensor> {
        if n == 0 || !tokens.len().is_multiple_of(n) || tokens.is_empty() {
            candle_core::bail!(
                "forward_cached: {} tokens do not split into {n} rows",
                tokens.len()
            )
        }
        let l = tokens.len() / n;
        let starts: Vec<usize> = (first_slot..first_slot + n).map(|s| cache.len(s)).collect();
        let total = starts.iter().max().copied().unwrap_or(0) + l;
        if total > cache.capacity() {
            candle_core::bail!(
                "KV cache capacity {} exceeded ({total} positions)",
                cache.capacity()
            )
        }
        let positions: Vec<u32> = starts
            .iter()
            .flat_map(|&s0| (s0..s0 + l).map(|p| p as u32))
            .collect();
        let positions = Tensor::from_vec(positions, (n, l), &self.device)?;
        let (cos, sin) = self.rope.gather(&positions)?;
        // Row b, query t sits at absolute position starts[b] + t and sees keys 0..=that.
        let mut additive = vec![0f32; n * l * total];
        for (b, &s0) in starts.iter().enumerate() {
            for t in 0..l {
                let row = &mut additive[(b * l + t) * total..(b * l + t + 1) * total];
                row[s0 + t + 1..].fill(MASKED);
            }
        }
        let mask =
            Tensor::from_vec(additive, (n, 1, 1, l, total), &self.device)?.to_dtype(self.dtype)?;
        let ids = Tensor::from_slice(tokens, (n, l), &self.device)?;
        let mut x = self.embed_tokens(&ids, None)?;
        let dims = self.dims();
        for (li, layer) in self.layers.iter().enumerate() {
            x = self.layer_forward(layer, &x, &cos, &sin, false, Precision::F32, |q, k, v| {
                cache.write(li, first_slot, &starts, k, v)?;
                if l <= DECODE_KERNEL_MAX_L && crate::kernels::applies(q) {
                    return decode_attention(q, cache, li, first_slot, total, &mask, dims);
                }
                let (kc, vc) = cache.view(li, first_slot, n, total)?;
                let (kc, vc) = (kc.to_dtype(q.dtype())?, vc.to_dtype(q.dtype())?);
                ops::attention(q, &kc, &vc, &mask, dims, false, Precision::F32)
            })?;
        }
        cache.advance(first_slot, n, l);
        let last = x.narrow(1, l - 1, 1)?.squeeze(1)?;
        let hn = ops::rms_norm(
            &last,
            self.norm.as_tensor(),
            self.cfg.rms_norm_eps,
            false,
            DType::F32,
        )?;
        match &self.lm_head_packed {
            Some(p) => p.matmul_t(&hn),
            None => matmul_t(&hn, self.lm_head_weight()),
        }
    }
}

/// Query positions per sequence up to which KV-cached attention runs on the decoding kernel
/// (beyond, a prefill, gemm does the work).
const DECODE_KERNEL_MAX_L: usize = 8;

/// Attention of `q: [n, heads, l, head_dim]` over cache slots `first..first + n` on the CPU
/// decoding kernel, reading the cache's storage in place.
fn decode_attention(
    q: &Tensor,
    cache: &KvCache,
    layer: usize,
    first: usize,
    total: usize,
    mask: &Tensor,
    dims: Dims,
) -> Result<Tensor> {
    use crate::kernels::{attention, with_slice, with_slice_of, Lanes};
    let (n, heads, l, head_dim) = q.dims4()?;
    let (kc, vc) = cache.layer(layer);
    let shape = attention::DecodeShape {
        n,
        heads,
        kv_heads: dims.kv_heads,
        head_dim,
        l,
        first,
        capacity: cache.capacity(),
        total,
    };
    let scale = 1.0 / (head_dim as f32).sqrt();
    // The cache holds f32, or bf16 for a bf16 decoding copy.
    fn run<T: crate::kernels::Elem>(
        q: &Tensor,
        kc: &Tensor,
        vc: &Tensor,
        mask: &Tensor,
        shape: attention::DecodeShape,
        scale: f32,
    ) -> Result<Vec<f32>> {
        with_slice(q, |qv| {
            with_slice_of::<T, _>(kc, |ks| {
                with_slice_of::<T, _>(vc, |vs| {
                    with_slice(mask, |ms| {
                        attention::decode(Lanes::detect(), qv, ks, vs, ms, shape, scale)
                    })
                })
            })
        })???
    }
    let out = match kc.dtype() {
        DType::BF16 => run::<half::bf16>(q, kc, vc, mask, shape, scale)?,
        _ => run::<f32>(q, kc, vc, mask, shape, scale)?,
    };
    ops::merge_heads(&Tensor::from_vec(out, (n, heads, l, head_dim), q.device())?)
}

/// `x @ w^T` without grad: the CPU decoding kernel for few rows, else gemm. Weights stored in
/// another dtype than `x` (a bf16 decoding copy on a GPU) are multiplied in the weights' dtype.
fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if let Some(y) = skinny::try_matmul_t(x, w)? {
        return Ok(y);
    }
    if let Some(y) = ops::linear(x, w, false, Precision::F32, DType::F32)? {
        return Ok(y);
    }
    if x.dtype() == w.dtype() {
        x.matmul(&w.t()?)
    } else {
        x.to_dtype(w.dtype())?.matmul(&w.t()?)?.to_dtype(x.dtype())
    }
}

#[cfg(test)]
mod tests;

/// Position ids (`cumsum(mask) - 1`, as HF computes them) and the additive causal mask
/// `[B, S, S]` of rows whose real tokens `mask_rows` marks: no key after the query, no padding key.
fn causal_layout(mask_rows: &[Vec<f32>]) -> (Vec<u32>, Vec<f32>) {
    let s = mask_rows.first().map_or(0, Vec::len);
    let mut positions = Vec::with_capacity(mask_rows.len() * s);
    let mut additive = vec![0f32; mask_rows.len() * s * s];
    for (r, row) in mask_rows.iter().enumerate() {
        let mut c = 0u32;
        for &m in row {
            c += (m != 0.0) as u32;
            positions.push(c.saturating_sub(1));
        }
        for i in 0..s {
            for j in 0..s {
                if j > i || row[j] == 0.0 {
                    additive[(r * s + i) * s + j] = MASKED;
                }
            }
        }
    }
    (positions, additive)
}

/// Tiny random models for tests (here and in other modules).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The largest |element|, as f64.
    pub fn max_abs(t: &Tensor) -> f64 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// The largest |a - b|, computed in f64 (so `a` and `b` may differ in dtype).
    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        let f64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        max_abs(&(f64(a) - f64(b)).unwrap())
    }

    pub fn tiny_config(qkv_bias: bool, tied: bool) -> ModelConfig {
        serde_json::from_value(serde_json::json!({
            "model_type": if qkv_bias { "qwen2" } else { "llama" },
            "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 128,
            "tie_word_embeddings": tied,
        }))
        .unwrap()
    }

    /// HF-named random tensors for `cfg` (norm weights around 1, so they matter but stay sane).
    pub fn random_tensors(cfg: &ModelConfig, seed: u64, dtype: DType) -> HashMap<String, Tensor> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut out = HashMap::new();
        let mut put = |name: String, shape: Vec<usize>, center: f32, scale: f32| {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|_| center + scale * (rng.gen::<f32>() * 2.0 - 1.0))
                .collect();
            let t = Tensor::from_vec(data, shape, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            out.insert(name, t);
        };
        let (h, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (q, kv) = (
            cfg.num_attention_heads * cfg.head_dim(),
            cfg.num_kv_heads() * cfg.head_dim(),
        );
        put("model.embed_tokens.weight".into(), vec![v, h], 0.0, 0.5);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            put(format!("{p}.input_layernorm.weight"), vec![h], 1.0, 0.2);
            put(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                1.0,
                0.2,
            );
            for (n, o, i_) in [("q", q, h), ("k", kv, h), ("v", kv, h), ("o", h, q)] {
                put(
                    format!("{p}.self_attn.{n}_proj.weight"),
                    vec![o, i_],
                    0.0,
                    0.3,
                );
                if cfg.qkv_bias() && n != "o" {
                    put(format!("{p}.self_attn.{n}_proj.bias"), vec![o], 0.0, 0.1);
                }
            }
            put(format!("{p}.mlp.gate_proj.weight"), vec![f, h], 0.0, 0.3);
            put(format!("{p}.mlp.up_proj.weight"), vec![f, h], 0.0, 0.3);
            put(format!("{p}.mlp.down_proj.weight"), vec![h, f], 0.0, 0.3);
        }
        put("model.norm.weight".into(), vec![h], 1.0, 0.2);
        if !cfg.tie_word_embeddings {
            put("lm_head.weight".into(), vec![v, h], 0.0, 0.5);
        }
        out
    }

    pub fn tiny_model(qkv_bias: bool, tied: bool, seed: u64) -> Model {
        let cfg = tiny_config(qkv_bias, tied);
        Model::from_tensors(&cfg, &random_tensors(&cfg, seed, DType::F32), &Device::Cpu).unwrap()
    }
}
