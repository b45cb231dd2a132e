//! Per-token log-probs (and entropy) of the response tokens, straight from the final hidden states,
//! without keeping `[rows, vocab]` logits alive.
//!
//! Forward: `lm_head` + temperature + log-softmax run over blocks of logits, each freed before the
//! next (the math per block is `rlvr_algo::logprobs`). Backward: a custom op recomputes each
//! block's logits and pushes the gradient into the hidden states and the `lm_head` weight, so
//! training memory is one block of logits instead of a whole batch (`8 x 384 x 151936` f32 would
//! be 1.9 GB per intermediate). On the CPU the softmax math is
//! [`kernels::vocab`](crate::kernels::vocab), two passes over the logits instead of a dozen, and
//! a block is a slice of the vocabulary for up to [`LogProbOptions::chunk_rows`] rows: the
//! weight's gradient is then written once per slice instead of accumulated once per row chunk,
//! and only a slice of the weight is ever held in the products' packed form.

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
    /// Logits materialised at once: `chunk_rows` rows by `vocab_chunk` columns on the CPU
    /// kernels; whole rows, as many as make the same count, elsewhere.
    pub chunk_rows: usize,
    /// See `chunk_rows`.
    pub vocab_chunk: usize,
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
            // 64 MB of f32 logits.
            chunk_rows: 4096,
            vocab_chunk: 4096,
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
    /// The log-probs (and entropies, if asked for) of [`lm_head_logprobs`]' `[N, 2]` output as
    /// `[rows, columns]`, with the tape of the forward that made them.
    pub(crate) fn from_head(
        out: &Tensor,
        shape: (usize, usize),
        opts: &LogProbOptions,
        tape: Tape,
    ) -> Result<Self> {
        let logprobs = out.narrow(1, 0, 1)?.reshape(shape)?;
        let entropy = match opts.entropy {
            true => Some(out.narrow(1, 1, 1)?.reshape(shape)?),
            false => None,
        };
        Ok(TokenLogProbs {
            logprobs,
            entropy,
            tape,
        })
    }

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
    let (hidden_d, weight_d) = (hidden.detach(), weight.detach());
    let (result, lse) = if fused(&hidden_d, &weight_d) {
        fused_forward(&hidden_d, &weight_d, labels, opts)?
    } else {
        (
            chunked_forward(&hidden_d, &weight_d, labels, opts)?,
            Vec::new(),
        )
    };
    if !opts.grad || !(hidden.track_op() || weight.track_op()) {
        return Ok(result);
    }
    hidden.apply_op2(
        weight,
        LmHeadLogProbs {
            labels: labels.clone(),
            result,
            lse,
            opts: *opts,
        },
    )
}

/// Whether the CPU kernels take the head's products.
fn fused(hidden: &Tensor, weight: &Tensor) -> bool {
    kernels::applies(hidden) && kernels::applies(weight)
}

/// Rows of whole-row logits per chunk on the composite path: as many logits as a CPU block.
fn composite_rows(opts: &LogProbOptions, vocab: usize) -> usize {
    (opts.chunk_rows.max(1) * opts.vocab_chunk.max(1) / vocab.max(1)).max(1)
}

/// `(start, len)` of `total` in pieces of `chunk`.
fn pieces(total: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    let chunk = chunk.max(1);
    (0..total)
        .step_by(chunk)
        .map(move |s| (s, chunk.min(total - s)))
}

fn chunked_forward(
    hidden: &Tensor,
    weight: &Tensor,
    labels: &Tensor,
    opts: &LogProbOptions,
) -> Result<Tensor> {
    let n = hidden.dim(0)?;
    let chunk = composite_rows(opts, weight.dim(0)?);
    let wt = weight.t()?;
    let mut parts = Vec::with_capacity(n.div_ceil(chunk));
    for (start, len) in pieces(n, chunk) {
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

/// [`chunked_forward`] on the CPU kernels, a block of rows by a slice of the vocabulary at a
/// time: the `[n, 2]` log-probs and entropies, and each row's log-sum-exp for the backward.
fn fused_forward(
    hidden: &Tensor,
    weight: &Tensor,
    labels: &Tensor,
    opts: &LogProbOptions,
) -> Result<(Tensor, Vec<f32>)> {
    use kernels::gemm::{matmul_by, Rhs, View};
    let ((n, h), (v, _)) = (hidden.dims2()?, weight.dims2()?);
    let labels = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    if let Some(l) = labels.iter().find(|&&l| l as usize >= v) {
        candle_core::bail!("lm-head-logprobs: token id {l} is outside the vocabulary ({v} rows)")
    }
    let inv_t = (1.0 / opts.temperature) as f32;
    let (mut out, mut lse) = (Vec::with_capacity(2 * n), Vec::with_capacity(n));
    kernels::with_slice(hidden, |hv| {
        kernels::with_slice(weight, |wv| {
            for (r0, rows) in pieces(n, opts.chunk_rows) {
                let hc = View::rows(&hv[r0 * h..(r0 + rows) * h], h);
                let labels = &labels[r0..r0 + rows];
                let mut sums = kernels::vocab::RowSums::new(rows);
                for (c0, cols) in pieces(v, opts.vocab_chunk) {
                    let w = View::transposed(&wv[c0 * h..(c0 + cols) * h], h);
                    let z = matmul_by(rows, hc, &Rhs::new(opts.precision, w, h, cols));
                    sums.add(Lanes::detect(), &z, cols, c0, labels, inv_t);
                }
                let st = sums.finish();
                let ent = if opts.entropy {
                    st.entropy
                } else {
                    vec![0.0; rows]
                };
                out.extend(st.logprob.into_iter().zip(ent).flat_map(|(a, b)| [a, b]));
                lse.extend(st.lse);
            }
        })
    })??;
    Ok((Tensor::from_vec(out, (n, 2), hidden.device())?, lse))
}

/// [`LmHeadLogProbs`]'s backward on the CPU kernels, block by block as [`fused_forward`]: the
/// logits again, their gradient `dz` in place, then `dh += dz W_s` and `dW_s (+)= dz^T h`.
#[allow(clippy::too_many_arguments)]
fn fused_backward(
    hidden: &Tensor,
    weight: &Tensor,
    labels: &Tensor,
    lse: &[f32],
    result: &Tensor,
    grad: &Tensor,
    opts: &LogProbOptions,
) -> Result<(Tensor, Tensor)> {
    use kernels::gemm::{matmul_acc, matmul_acc_by, matmul_append, matmul_by, Rhs, View};
    let ((n, h), (v, _)) = (hidden.dims2()?, weight.dims2()?);
    if lse.len() != n {
        candle_core::bail!("lm-head-logprobs: {} log-sum-exps for {n} rows", lse.len())
    }
    let (p, inv_t) = (opts.precision, (1.0 / opts.temperature) as f32);
    let labels = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let column = |t: &Tensor, i: usize| {
        t.to_dtype(DType::F32)?
            .narrow(1, i, 1)?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    let (entropy, g_lp) = (column(result, 1)?, column(grad, 0)?);
    let g_ent = if opts.entropy {
        Some(column(grad, 1)?)
    } else {
        None
    };
    let mut dh = vec![0f32; n * h];
    // Written slice by slice by the first block of rows, added to by the others.
    let mut dw: Vec<f32> = Vec::with_capacity(v * h);
    if n == 0 {
        dw.resize(v * h, 0.0);
    }
    kernels::with_slice(hidden, |hv| {
        kernels::with_slice(weight, |wv| {
            for (r0, rows) in pieces(n, opts.chunk_rows) {
                let hc = &hv[r0 * h..(r0 + rows) * h];
                let hx = Rhs::new(p, View::rows(hc, h), rows, h);
                let dh = &mut dh[r0 * h..(r0 + rows) * h];
                fn at(x: &[f32], r0: usize, rows: usize) -> &[f32] {
                    &x[r0..r0 + rows]
                }
                for (c0, cols) in pieces(v, opts.vocab_chunk) {
                    let ws = &wv[c0 * h..(c0 + cols) * h];
                    let wt = Rhs::new(p, View::transposed(ws, h), h, cols);
                    let mut dz = matmul_by(rows, View::rows(hc, h), &wt);
                    kernels::vocab::backward(
                        Lanes::detect(),
                        &mut dz,
                        cols,
                        c0,
                        &labels[r0..r0 + rows],
                        inv_t,
                        at(lse, r0, rows),
                        at(&entropy, r0, rows),
                        at(&g_lp, r0, rows),
                        g_ent.as_deref().map(|g| at(g, r0, rows)),
                    );
                    matmul_acc(
                        p,
                        dh,
                        rows,
                        h,
                        cols,
                        View::rows(&dz, cols),
                        View::rows(ws, h),
                    );
                    let dzt = View::transposed(&dz, cols);
                    if r0 == 0 {
                        matmul_append(&mut dw, cols, dzt, &hx);
                    } else {
                        matmul_acc_by(&mut dw[c0 * h..(c0 + cols) * h], cols, dzt, &hx);
                    }
                }
            }
        })
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
    /// Each row's log-sum-exp on the CPU kernels (empty elsewhere).
    lse: Vec<f32>,
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
        if fused(&hidden, &weight) {
            let (labels, lse) = (&self.labels, &self.lse);
            let (dh, dw) = fused_backward(&hidden, &weight, labels, lse, res, grad, &self.opts)?;
            return Ok((Some(dh), Some(dw)));
        }
        let n = hidden.dim(0)?;
        let t = self.opts.temperature;
        let chunk = composite_rows(&self.opts, weight.dim(0)?);
        let compute = if hidden.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let wt = weight.t()?;
        let mut dh = Vec::with_capacity(n.div_ceil(chunk));
        let mut dw: Option<Tensor> = None;
        for (start, len) in pieces(n, chunk) {
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
        TokenLogProbs::from_head(&out, (b, response_len), opts, tape)
    }
}
