//! Per-token log-probs (and entropy) of the response tokens, straight from the final hidden states,
//! without keeping `[rows, vocab]` logits alive.
//!
//! Forward: `lm_head` + temperature + log-softmax run over chunks of rows, each chunk's logits
//! freed before the next (the math per chunk is `rlvr_algo::logprobs`). Backward: a custom op
//! recomputes each chunk's logits and pushes the gradient into the hidden states and the `lm_head`
//! weight, so training memory is one chunk of logits instead of a whole batch (`8 x 384 x 49152`
//! f32 would be 600 MB per intermediate). On the CPU in f32 the softmax math of a chunk is
//! [`kernels::vocab`](crate::kernels::vocab): two passes over the logits instead of a dozen.

use crate::kernels::gemm::Precision;
use crate::kernels::{self, Lanes};
use crate::model::Tape;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor, D};

/// Options of [`crate::Model::response_logprobs`].
#[derive(Debug, Clone, Copy)]
pub struct LogProbOptions {
    /// Logits are divided by this before the softmax (SkyRL divides by the sampling temperature).
    pub temperature: f64,
    /// Also return the entropy of each position's distribution.
    pub entropy: bool,
    /// Build the autograd graph (policy) or not (reference model, old log-probs).
    pub grad: bool,
    /// Rows of logits materialised at once.
    pub chunk_rows: usize,
    /// Inputs of the output head's products (forward and backward); f32 accumulation either way.
    pub precision: Precision,
    /// With `grad`: cut the forward's graph at the decoder's layer boundaries, so that
    /// [`TokenLogProbs::backward`] frees each layer's activations as soon as its gradients are
    /// out (candle's `backward` keeps the whole graph until it returns). Gradients must then be
    /// taken with [`TokenLogProbs::backward`]: `loss.backward()` would stop at the last layer.
    pub segmented: bool,
}

impl Default for LogProbOptions {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            entropy: false,
            grad: true,
            chunk_rows: 512,
            precision: Precision::F32,
            segmented: false,
        }
    }
}

/// `[B, R]` log-probs of the response tokens, and their entropies when asked for.
///
/// A forward run with [`LogProbOptions::segmented`] is cut at the decoder's layer boundaries:
/// take its gradients with [`TokenLogProbs::backward`] (which also serves an uncut forward).
#[derive(Debug, Clone)]
pub struct TokenLogProbs {
    pub logprobs: Tensor,
    pub entropy: Option<Tensor>,
    pub(crate) tape: Tape,
}

impl TokenLogProbs {
    /// Gradients of `loss`, a function of these log-probs, with respect to the model's weights;
    /// each layer's activations are freed as soon as its gradients are out.
    pub fn backward(self, loss: &Tensor) -> Result<GradStore> {
        let mut grads = GradStore::default();
        self.backward_into(loss, &mut grads)?;
        Ok(grads)
    }

    /// [`TokenLogProbs::backward`], adding the gradients to `grads` (accumulation over
    /// micro-batches without a second set of gradients).
    pub fn backward_into(self, loss: &Tensor, grads: &mut GradStore) -> Result<()> {
        self.tape.backward_into(loss, grads)
    }
}

/// Log-probs (column 0) and entropies (column 1, zero unless asked for) of `labels: [N]` under
/// `softmax(hidden @ weight^T / temperature)`, `hidden: [N, H]`, `weight: [V, H]` → `[N, 2]`.
/// Differentiable in `hidden` and `weight`.
pub fn lm_head_logprobs(
    hidden: &Tensor,
    weight: &Tensor,
    labels: &Tensor,
    opts: &LogProbOptions,
) -> Result<Tensor> {
    let result = chunked_forward(&hidden.detach(), &weight.detach(), labels, opts)?;
    if !opts.grad || !(hidden.track_op() || weight.track_op()) {
        return Ok(result);
    }
    hidden.apply_op2(
        weight,
        LmHeadLogProbs {
            labels: labels.clone(),
            result,
            opts: *opts,
        },
    )
}

fn chunked_forward(
    hidden: &Tensor,
    weight: &Tensor,
    labels: &Tensor,
    opts: &LogProbOptions,
) -> Result<Tensor> {
    if kernels::applies(hidden) && kernels::applies(weight) {
        return fused_forward(hidden, weight, labels, opts);
    }
    let n = hidden.dim(0)?;
    let chunk = opts.chunk_rows.max(1);
    let wt = weight.t()?;
    let mut parts = Vec::with_capacity(n.div_ceil(chunk));
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let logits = hidden.narrow(0, start, len)?.matmul(&wt)?;
        let lab = labels.narrow(0, start, len)?;
        let lp = rlvr_algo::logprobs::log_probs_from_logits(&logits, &lab, opts.temperature)?;
        let ent = if opts.entropy {
            rlvr_algo::logprobs::entropy_from_logits(&logits, opts.temperature)?
        } else {
            lp.zeros_like()?
        };
        parts.push(Tensor::stack(&[lp, ent], 1)?);
    }
    if parts.is_empty() {
        return Tensor::zeros((0, 2), hidden.dtype(), hidden.device());
    }
    Tensor::cat(&parts, 0)
}

/// [`chunked_forward`] on the CPU kernels: the weight prepared once for every chunk's logits.
fn fused_forward(
    hidden: &Tensor,
    weight: &Tensor,
    labels: &Tensor,
    opts: &LogProbOptions,
) -> Result<Tensor> {
    use kernels::gemm::{matmul_by, Rhs, View};
    let ((n, h), (v, _)) = (hidden.dims2()?, weight.dims2()?);
    let chunk = opts.chunk_rows.max(1);
    let parts = kernels::with_slice(hidden, |hv| {
        kernels::with_slice(weight, |wv| {
            let wt = Rhs::new(opts.precision, View::transposed(wv, h), h, v);
            (0..n)
                .step_by(chunk)
                .map(|start| {
                    let len = chunk.min(n - start);
                    let hc = View::rows(&hv[start * h..(start + len) * h], h);
                    let logits =
                        Tensor::from_vec(matmul_by(len, hc, &wt), (len, v), hidden.device())?;
                    fused_chunk_forward(&logits, &labels.narrow(0, start, len)?, opts)
                })
                .collect::<Result<Vec<_>>>()
        })
    })???;
    if parts.is_empty() {
        return Tensor::zeros((0, 2), hidden.dtype(), hidden.device());
    }
    Tensor::cat(&parts, 0)
}

/// [`fused_forward`]'s chunk: `[len, 2]` log-probs and entropies.
fn fused_chunk_forward(logits: &Tensor, labels: &Tensor, opts: &LogProbOptions) -> Result<Tensor> {
    let (len, v) = logits.dims2()?;
    let labels = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let inv_t = (1.0 / opts.temperature) as f32;
    let st = kernels::with_slice(logits, |l| {
        kernels::vocab::forward(Lanes::detect(), l, v, &labels, inv_t)
    })?;
    let ent = if opts.entropy {
        st.entropy
    } else {
        vec![0.0; len]
    };
    let out: Vec<f32> = st
        .logprob
        .into_iter()
        .zip(ent)
        .flat_map(|(a, b)| [a, b])
        .collect();
    Tensor::from_vec(out, (len, 2), logits.device())
}

/// The backward's chunk on the CPU kernels: the gradient w.r.t. the raw logits `[len, V]`
/// (row-major), from the forward's `[len, 2]` result and the incoming `[len, 2]` gradient.
fn fused_chunk_grad(
    logits: &Tensor,
    labels: &Tensor,
    result: &Tensor,
    grad: &Tensor,
    opts: &LogProbOptions,
) -> Result<Vec<f32>> {
    let (len, v) = logits.dims2()?;
    let labels = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let inv_t = (1.0 / opts.temperature) as f32;
    let res = result.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let g = grad.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let g_lp: Vec<f32> = g.iter().map(|r| r[0]).collect();
    let g_ent: Option<Vec<f32>> = opts.entropy.then(|| g.iter().map(|r| r[1]).collect());
    let entropy: Vec<f32> = res.iter().map(|r| r[1]).collect();
    let dz = kernels::with_slice(logits, |l| {
        // logprob = z[label] - lse, so the forward's log-sum-exp needs no second store.
        let lse: Vec<f32> = (0..len)
            .map(|r| l[r * v + labels[r] as usize] * inv_t - res[r][0])
            .collect();
        kernels::vocab::backward(
            Lanes::detect(),
            l,
            v,
            &labels,
            inv_t,
            &lse,
            &entropy,
            &g_lp,
            g_ent.as_deref(),
        )
    })?;
    Ok(dz)
}

/// [`LmHeadLogProbs`]'s backward on the CPU kernels: per chunk, the logits again, their
/// gradient, then `dh = dz W` and `dW += dz^T h` accumulated in place by gemm.
fn fused_backward(
    hidden: &Tensor,
    weight: &Tensor,
    labels: &Tensor,
    result: &Tensor,
    grad: &Tensor,
    opts: &LogProbOptions,
) -> Result<(Tensor, Tensor)> {
    use kernels::gemm::{matmul_acc, matmul_by, Rhs, View};
    let ((n, h), (v, _)) = (hidden.dims2()?, weight.dims2()?);
    let chunk = opts.chunk_rows.max(1);
    let p = opts.precision;
    let mut dh = Vec::with_capacity(n * h);
    let mut dw = vec![0f32; v * h];
    kernels::with_slice(hidden, |hv| {
        kernels::with_slice(weight, |wv| {
            let (wt, w) = (
                Rhs::new(p, View::transposed(wv, h), h, v),
                Rhs::new(p, View::rows(wv, h), v, h),
            );
            for start in (0..n).step_by(chunk) {
                let len = chunk.min(n - start);
                let hc = &hv[start * h..(start + len) * h];
                let raw = matmul_by(len, View::rows(hc, h), &wt);
                let raw = Tensor::from_vec(raw, (len, v), hidden.device())?;
                let dz = fused_chunk_grad(
                    &raw,
                    &labels.narrow(0, start, len)?,
                    &result.narrow(0, start, len)?,
                    &grad.narrow(0, start, len)?,
                    opts,
                )?;
                drop(raw);
                dh.extend(matmul_by(len, View::rows(&dz, v), &w));
                matmul_acc(
                    p,
                    &mut dw,
                    v,
                    h,
                    len,
                    View::transposed(&dz, v),
                    View::rows(hc, h),
                );
            }
            Ok::<_, candle_core::Error>(())
        })?
    })??;
    Ok((
        Tensor::from_vec(dh, (n, h), hidden.device())?,
        Tensor::from_vec(dw, (v, h), weight.device())?,
    ))
}

/// Gradient of `g_lp * logp(label) + g_ent * entropy` w.r.t. the scaled logits `z` of one chunk:
/// `g_lp (onehot - p) - g_ent p (z - sum(p z))`.
fn chunk_logit_grad(
    z: &Tensor,
    labels: &Tensor,
    g_lp: &Tensor,
    g_ent: Option<&Tensor>,
) -> Result<Tensor> {
    let lse = rlvr_algo::logprobs::logsumexp_keepdim(z)?;
    let p = z.broadcast_sub(&lse)?.exp()?;
    let mut g = p.broadcast_mul(&g_lp.neg()?)?;
    g = g.scatter_add(&labels.unsqueeze(1)?.contiguous()?, g_lp, 1)?;
    if let Some(ge) = g_ent {
        let mean_z = (&p * z)?.sum_keepdim(D::Minus1)?;
        let t = (p * z.broadcast_sub(&mean_z)?)?.broadcast_mul(ge)?;
        g = (g - t)?;
    }
    Ok(g)
}

struct LmHeadLogProbs {
    labels: Tensor,
    /// The forward result, computed chunk by chunk before the op is applied.
    result: Tensor,
    opts: LogProbOptions,
}

impl CustomOp2 for LmHeadLogProbs {
    fn name(&self) -> &'static str {
        "lm-head-logprobs"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (storage, layout) = self.result.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) if layout.is_contiguous() && layout.start_offset() == 0 => {
                Ok((s.clone(), layout.shape().clone()))
            }
            _ => candle_core::bail!("lm-head-logprobs: result is not a contiguous CPU tensor"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (storage, layout) = self.result.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("lm-head-logprobs: result is not a CUDA tensor"),
        }
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (hidden, weight) = (hidden.detach(), weight.detach());
        if kernels::applies(&hidden) && kernels::applies(&weight) {
            let (dh, dw) = fused_backward(&hidden, &weight, &self.labels, res, grad, &self.opts)?;
            return Ok((Some(dh), Some(dw)));
        }
        let n = hidden.dim(0)?;
        let t = self.opts.temperature;
        let chunk = self.opts.chunk_rows.max(1);
        let compute = if hidden.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let wt = weight.t()?;
        let mut dh = Vec::with_capacity(n.div_ceil(chunk));
        let mut dw: Option<Tensor> = None;
        for start in (0..n).step_by(chunk) {
            let len = chunk.min(n - start);
            let h = hidden.narrow(0, start, len)?;
            let raw = h.matmul(&wt)?;
            let lab = self.labels.narrow(0, start, len)?;
            let g = grad.narrow(0, start, len)?;
            let z = (raw.to_dtype(compute)? / t)?;
            let g = g.to_dtype(compute)?;
            let g_lp = g.narrow(1, 0, 1)?.contiguous()?;
            let g_ent = if self.opts.entropy {
                Some(g.narrow(1, 1, 1)?.contiguous()?)
            } else {
                None
            };
            // d/d(raw logits) = d/dz / temperature.
            let dz = (chunk_logit_grad(&z, &lab, &g_lp, g_ent.as_ref())? / t)?
                .to_dtype(hidden.dtype())?;
            dh.push(dz.matmul(&weight)?);
            let dw_c = dz.t()?.matmul(&h)?;
            dw = Some(match dw {
                None => dw_c,
                Some(acc) => (acc + dw_c)?,
            });
        }
        let dh = if dh.is_empty() {
            hidden.zeros_like()?
        } else {
            Tensor::cat(&dh, 0)?
        };
        let dw = match dw {
            Some(d) => d,
            None => weight.zeros_like()?,
        };
        Ok((Some(dh), Some(dw)))
    }
}

impl crate::Model {
    /// Training entry: log-probs (and optionally entropies) of the last `response_len` tokens of
    /// each row, under `softmax(logits / temperature)` of the position before each.
    ///
    /// `input_ids: [B, S]` u32 holds `[prompt | response]` (prompts left-padded, responses
    /// right-padded), `attention_mask: [B, S]` marks real tokens. Returns `[B, response_len]`
    /// tensors; padded response positions hold finite values the caller masks out.
    pub fn response_logprobs(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        response_len: usize,
        opts: &LogProbOptions,
    ) -> Result<TokenLogProbs> {
        let (b, s) = input_ids.dims2()?;
        if response_len == 0 || response_len >= s {
            candle_core::bail!("response_len {response_len} must be in 1..{s} (sequence length)")
        }
        let mut tape = Tape::default();
        let hs = self.forward_hidden_taped(
            input_ids,
            attention_mask,
            opts.grad,
            opts.precision,
            (opts.grad && opts.segmented).then_some(&mut tape),
        )?;
        let h = hs.dim(2)?;
        // Position t predicts token t + 1.
        let rows = hs
            .narrow(1, s - response_len - 1, response_len)?
            .reshape((b * response_len, h))?;
        let labels = input_ids
            .narrow(1, s - response_len, response_len)?
            .flatten_all()?
            .to_dtype(DType::U32)?;
        let out = lm_head_logprobs(&rows, self.lm_head_weight(), &labels, opts)?;
        let logprobs = out.narrow(1, 0, 1)?.reshape((b, response_len))?;
        let entropy = if opts.entropy {
            Some(out.narrow(1, 1, 1)?.reshape((b, response_len))?)
        } else {
            None
        };
        Ok(TokenLogProbs {
            logprobs,
            entropy,
            tape,
        })
    }
}
