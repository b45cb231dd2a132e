//! The decoder's kernels. Inference uses candle's fused kernels (no backward). Training uses the
//! same forward plus a hand-written backward ([`autograd`](super::autograd)), so the graph keeps
//! only each op's inputs; f64 (gradient checks) goes through composite ops for full precision.

use super::autograd::{op1, op2, op3, Output};
use crate::kernels::gemm::Precision;
use crate::kernels::{self, Lanes};
use candle_core::{DType, Result, Tensor, D};
use half::bf16;
use kernels::Elem;

fn fused(x: &Tensor) -> bool {
    x.dtype() == DType::F32
}

/// `x @ w^T` for `x: [N, in]` and `w: [out, in]` (a linear layer without bias), on the CPU
/// gemm kernels with `dx = g w` and `dw = g^T x` as backward, all three products in
/// `precision`. The output is f32, or bf16 (`out`) for an activation that only feeds other bf16
/// products; in bf16 `x` may be bf16 too (the gradients stay f32). `None` where those do not
/// apply (other devices and dtypes): the caller uses `matmul`.
pub fn linear(
    x: &Tensor,
    w: &Tensor,
    grad: bool,
    precision: Precision,
    out: DType,
) -> Result<Option<Tensor>> {
    if !linear_applies(x, w, precision, out)? {
        return Ok(None);
    }
    Ok(Some(match out {
        DType::BF16 => linear_to::<bf16>(x, w, grad, precision)?,
        _ => linear_to::<f32>(x, w, grad, precision)?,
    }))
}

/// Whether [`linear`]'s kernels take `x`, `w` and `out`; an error where the shapes disagree.
fn linear_applies(x: &Tensor, w: &Tensor, precision: Precision, out: DType) -> Result<bool> {
    let bf16_ok = precision == Precision::Bf16;
    let x_ok = x.dtype() == DType::F32 || (bf16_ok && x.dtype() == DType::BF16);
    let out_ok = out == DType::F32 || (bf16_ok && out == DType::BF16);
    if !(x.device().is_cpu() && x_ok && out_ok && kernels::applies(w) && x.rank() == 2) {
        return Ok(false);
    }
    let (k, k2) = (x.dim(1)?, w.dim(1)?);
    if k != k2 {
        candle_core::bail!(
            "linear: x is [{}, {k}] but the weight is [{}, {k2}]",
            x.dim(0)?,
            w.dim(0)?
        )
    }
    Ok(true)
}

/// [`linear`] with its output in `O`.
fn linear_to<O: Elem>(x: &Tensor, w: &Tensor, grad: bool, precision: Precision) -> Result<Tensor> {
    let ((n, _), out) = (x.dims2()?, w.dim(0)?);
    let y: Vec<O> = product(x, w, precision)?;
    if !grad {
        return Tensor::from_vec(y, (n, out), x.device());
    }
    op2("linear", x, w, Output::cpu(y, (n, out)), move |x, w, g| {
        let (dx, dw) = linear_grads(x, w, g, precision)?;
        Ok((Some(dx), Some(dw)))
    })
}

/// The values of `x @ w^T` (`x` f32 or bf16), row-major, in `O`.
fn product<O: Elem>(x: &Tensor, w: &Tensor, precision: Precision) -> Result<Vec<O>> {
    let mut y = Vec::new();
    product_append(&mut y, x, w, precision)?;
    Ok(y)
}

/// [`product`]'s values written after `y`'s.
fn product_append<O: Elem>(
    y: &mut Vec<O>,
    x: &Tensor,
    w: &Tensor,
    precision: Precision,
) -> Result<()> {
    use kernels::gemm::{matmul_append, Rhs, View};
    let ((n, k), out) = (x.dims2()?, w.dim(0)?);
    let xd = x.detach().contiguous()?;
    kernels::with_slice(&w.detach(), |wv| {
        let rhs = Rhs::new(precision, View::transposed(wv, k), k, out);
        match xd.dtype() {
            DType::BF16 => kernels::with_slice_of::<bf16, _>(&xd, |xv| {
                matmul_append(y, n, View::rows(xv, k), &rhs)
            }),
            _ => kernels::with_slice_of::<f32, _>(&xd, |xv| {
                matmul_append(y, n, View::rows(xv, k), &rhs)
            }),
        }
    })?
}

/// `x @ w^T`'s gradients from the output's `g` (f32, or bf16 for a bf16 output): `dx = g w`
/// and `dw = g^T x` (f32), in `precision`.
fn linear_grads(
    x: &Tensor,
    w: &Tensor,
    g: &Tensor,
    precision: Precision,
) -> Result<(Tensor, Tensor)> {
    let ((n, k), out) = (x.dims2()?, w.dim(0)?);
    let (g, x) = (g.contiguous()?, x.contiguous()?);
    /// `dx` and `dw`, row-major.
    type Grads = (Vec<f32>, Vec<f32>);
    fn products<G: Elem, X: Elem>(
        (g, x, w): (&Tensor, &Tensor, &Tensor),
        (n, k, out): (usize, usize, usize),
        precision: Precision,
    ) -> Result<Grads> {
        use kernels::gemm::{matmul, View};
        kernels::with_slice_of::<G, _>(g, |gv| {
            let dx = kernels::with_slice(w, |wv| {
                matmul(precision, n, k, out, View::rows(gv, out), View::rows(wv, k))
            })?;
            let dw = kernels::with_slice_of::<X, _>(x, |xv| {
                matmul(
                    precision,
                    out,
                    k,
                    n,
                    View::transposed(gv, out),
                    View::rows(xv, k),
                )
            })?;
            Ok((dx, dw))
        })?
    }
    type Products =
        fn((&Tensor, &Tensor, &Tensor), (usize, usize, usize), Precision) -> Result<Grads>;
    let products: Products = match (g.dtype(), x.dtype()) {
        (DType::BF16, DType::BF16) => products::<bf16, bf16>,
        (DType::BF16, _) => products::<bf16, f32>,
        (_, DType::BF16) => products::<f32, bf16>,
        _ => products::<f32, f32>,
    };
    let (dx, dw) = products((&g, &x, w), (n, k, out), precision)?;
    Ok((
        Tensor::from_vec(dx, (n, k), x.device())?,
        Tensor::from_vec(dw, (out, k), w.device())?,
    ))
}

/// `res + x @ w^T` (a residual connection after a linear layer without bias) as one op on the
/// CPU kernels: the product accumulates into a copy of `res`, so its own output is never
/// materialised nor kept for backward (an f32 `[N, hidden]` per layer, twice). `res: [.., out]`
/// holds `N` rows; `x: [N, in]` is f32 or, in bf16, bf16. `None` where the kernels do not
/// apply: the caller adds.
pub fn linear_residual(
    res: &Tensor,
    x: &Tensor,
    w: &Tensor,
    grad: bool,
    precision: Precision,
) -> Result<Option<Tensor>> {
    let Some(y) = residual_product(res, x, w, precision)? else {
        return Ok(None);
    };
    if !grad {
        return Ok(Some(Tensor::from_vec(y, res.shape(), res.device())?));
    }
    let (n, out) = (x.dim(0)?, w.dim(0)?);
    let y = Output::cpu(y, res.shape());
    let r = op3("linear-residual", res, x, w, y, move |_, x, w, g| {
        let (dx, dw) = linear_grads(x, w, &g.reshape((n, out))?, precision)?;
        Ok((Some(g.clone()), Some(dx), Some(dw)))
    })?;
    Ok(Some(r))
}

/// The values of `res + x @ w^T`, row-major; `None` where the kernels do not apply.
fn residual_product(
    res: &Tensor,
    x: &Tensor,
    w: &Tensor,
    precision: Precision,
) -> Result<Option<Vec<f32>>> {
    use kernels::gemm::{matmul_acc_by, Rhs, View};
    if !(kernels::applies(res) && linear_applies(x, w, precision, DType::F32)?) {
        return Ok(None);
    }
    let ((n, k), out) = (x.dims2()?, w.dim(0)?);
    if res.elem_count() != n * out {
        candle_core::bail!(
            "linear_residual: x is [{n}, {k}], the weight [{out}, {k}], the residual {:?}",
            res.dims()
        )
    }
    let mut y = res.detach().flatten_all()?.to_vec1::<f32>()?;
    let xd = x.detach().contiguous()?;
    kernels::with_slice(&w.detach(), |wv| {
        let rhs = Rhs::new(precision, View::transposed(wv, k), k, out);
        match xd.dtype() {
            DType::BF16 => kernels::with_slice_of::<bf16, _>(&xd, |xv| {
                matmul_acc_by(&mut y, n, View::rows(xv, k), &rhs)
            }),
            _ => kernels::with_slice_of::<f32, _>(&xd, |xv| {
                matmul_acc_by(&mut y, n, View::rows(xv, k), &rhs)
            }),
        }
    })??;
    Ok(Some(y))
}

/// `[x @ w1^T ; x @ w2^T]` stacked as `[2, N, out]` (the MLP's gate and up projections, in bf16
/// where `out` asks for it), as one op on the CPU kernels for [`swiglu_linear_residual`]. `None`
/// where the kernels do not apply.
pub fn linear_pair(
    x: &Tensor,
    (w1, w2): (&Tensor, &Tensor),
    precision: Precision,
    out: DType,
) -> Result<Option<Tensor>> {
    if !(linear_applies(x, w1, precision, out)? && linear_applies(x, w2, precision, out)?) {
        return Ok(None);
    }
    fn stacked<O: Elem>(x: &Tensor, w: (&Tensor, &Tensor), p: Precision) -> Result<Output> {
        // Both products straight into the stacked buffer.
        let mut y: Vec<O> = Vec::with_capacity(2 * x.dim(0)? * w.0.dim(0)?);
        product_append(&mut y, x, w.0, p)?;
        product_append(&mut y, x, w.1, p)?;
        Ok(Output::cpu(y, (2, x.dim(0)?, w.0.dim(0)?)))
    }
    let y = match out {
        DType::BF16 => stacked::<bf16>(x, (w1, w2), precision)?,
        _ => stacked::<f32>(x, (w1, w2), precision)?,
    };
    let r = op3("linear-pair", x, w1, w2, y, move |x, w1, w2, g| {
        let (dx1, dw1) = linear_grads(x, w1, &g.get(0)?, precision)?;
        let (dx2, dw2) = linear_grads(x, w2, &g.get(1)?, precision)?;
        Ok((Some((dx1 + dx2)?), Some(dw1), Some(dw2)))
    })?;
    Ok(Some(r))
}

/// `res + swiglu(gu[0], gu[1]) @ w^T` for the stacked gate and up `gu: [2, N, ffn]` (from
/// [`linear_pair`]) as one op: the SwiGLU output lives only inside the op and is recomputed for
/// backward (cheap next to the product) instead of being kept, `N x ffn` per layer. `None` where
/// the kernels do not apply.
pub fn swiglu_linear_residual(
    res: &Tensor,
    gu: &Tensor,
    w: &Tensor,
    precision: Precision,
) -> Result<Option<Tensor>> {
    let m = |gu: &Tensor| swiglu(&gu.get(0)?, &gu.get(1)?, false);
    let Some(y) = residual_product(res, &m(&gu.detach())?, &w.detach(), precision)? else {
        return Ok(None);
    };
    let y = Output::cpu(y, res.shape());
    let r = op3(
        "swiglu-linear-residual",
        res,
        gu,
        w,
        y,
        move |_, gu, w, g| {
            let (_, n, f) = gu.dims3()?;
            let g2 = g.reshape((n, w.dim(0)?))?;
            let mv = m(gu)?;
            let (dm, dw) = linear_grads(&mv, w, &g2, precision)?;
            drop(mv);
            let dgu = swiglu_grads(&gu.get(0)?, &gu.get(1)?, &dm)?;
            debug_assert_eq!(dgu.dims(), [2, n, f]);
            Ok((Some(g.clone()), Some(dgu), Some(dw)))
        },
    )?;
    Ok(Some(r))
}

/// `y + b` for a bf16 `y: [.., out]` and an f32 bias `b: [out]` on the CPU, as autocast's linear
/// adds its bias: `b` rounded to bf16, each sum in f32 rounded once to bf16 (what candle's bf16
/// add of `b.to_dtype(bf16)` gives, but in parallel, 16 lanes at a time: candle's converted
/// element by element on one thread, 1.3-1.5 s of a 5 s Qwen training forward). The gradient
/// passes to `y`
/// as it is and sums over the rows for `b`. `None` where this does not apply: the caller adds.
pub fn add_bias_bf16(y: &Tensor, b: &Tensor, grad: bool) -> Result<Option<Tensor>> {
    use rayon::prelude::*;
    let out = b.dim(D::Minus1)?;
    if !(y.device().is_cpu()
        && y.dtype() == DType::BF16
        && b.dtype() == DType::F32
        && b.rank() == 1
        && y.rank() >= 1
        && y.dim(D::Minus1)? == out
        && out > 0)
    {
        return Ok(None);
    }
    let bias: Vec<f32> = b
        .to_vec1::<f32>()?
        .into_iter()
        .map(|x| bf16::from_f32(x).to_f32())
        .collect();
    let yc = y.detach().contiguous()?;
    let mut sum = kernels::zeroed::<bf16>(y.elem_count());
    // Rows in tasks of 64, each widened into one f32 scratch row.
    kernels::with_slice_of::<bf16, _>(&yc, |ys| {
        sum.par_chunks_mut(64 * out)
            .zip(ys.par_chunks(64 * out))
            .for_each(|(dst, src)| {
                let mut row = vec![0f32; out];
                for (d, s) in dst.chunks_mut(out).zip(src.chunks(out)) {
                    for ((r, y), b) in row.iter_mut().zip(s).zip(&bias) {
                        *r = y.to_f32() + b;
                    }
                    kernels::elem::store_f32(&row, d);
                }
            })
    })?;
    if !grad {
        return Tensor::from_vec(sum, y.shape(), y.device()).map(Some);
    }
    op2("add-bias", y, b, Output::cpu(sum, y.shape()), |_, b, g| {
        let db = g.to_dtype(DType::F32)?.reshape(((), b.dim(0)?))?.sum(0)?;
        Ok((Some(g.clone()), Some(db)))
    })
    .map(Some)
}

/// A bf16 `x` as f32, its gradient passed through as f32 (candle's `to_dtype` rounds the
/// gradient to `x`'s dtype, which a bf16 activation's other, f32 gradients could not be summed
/// with); other dtypes as they are.
pub fn widened(x: &Tensor, grad: bool) -> Result<Tensor> {
    if x.dtype() != DType::BF16 {
        return Ok(x.clone());
    }
    let y = x.detach().to_dtype(DType::F32)?;
    if !grad {
        return Ok(y);
    }
    op1("widen", x, y, |_, g| Ok(Some(g.clone())))
}

/// RMSNorm over the last dim: `x / sqrt(mean(x^2) + eps) * w`, computed in f32; the output is
/// rounded to bf16 when `out` is bf16 (mixed precision's input to the next products) and the
/// CPU kernels apply.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, grad: bool, out: DType) -> Result<Tensor> {
    let y = if fused(x) {
        candle_nn::ops::rms_norm(&x.detach().contiguous()?, &w.detach(), eps as f32)?
    } else {
        let inv = inv_rms(&x.detach(), eps)?;
        x.detach().broadcast_mul(&inv)?.broadcast_mul(&w.detach())?
    };
    let y: Output = if out == DType::BF16 && kernels::applies(&y) {
        let v = kernels::with_slice(&y, kernels::elem::narrowed)?;
        if !grad {
            return Tensor::from_vec(v, y.shape(), y.device());
        }
        Output::cpu(v, y.shape())
    } else {
        if !grad {
            return Ok(y);
        }
        y.into()
    };
    op2("rms-norm", x, w, y, move |x, w, g| {
        let g = &g.to_dtype(x.dtype())?;
        if kernels::applies(x) && kernels::applies(w) {
            let (dx, dw) = kernels::with_slice(x, |xv| {
                kernels::with_slice(w, |wv| {
                    kernels::with_slice(g, |gv| {
                        kernels::rms_norm::backward(Lanes::detect(), xv, wv, gv, eps as f32)
                    })
                })
            })???;
            return Ok((
                Some(Tensor::from_vec(dx, x.shape(), x.device())?),
                Some(Tensor::from_vec(dw, w.shape(), w.device())?),
            ));
        }
        let h = x.dim(D::Minus1)? as f64;
        let r = inv_rms(x, eps)?;
        let gw = g.broadcast_mul(w)?;
        let dot = (&gw * x)?.sum_keepdim(D::Minus1)?;
        let coef = (r.powf(3.0)? * dot)? / h;
        let dx = (gw.broadcast_mul(&r)? - x.broadcast_mul(&coef?)?)?;
        let xr = x.broadcast_mul(&r)?;
        let n = xr.elem_count() / xr.dim(D::Minus1)?;
        let dw = (g * xr)?.reshape((n, ()))?.sum(0)?;
        Ok((Some(dx), Some(dw)))
    })
}

fn inv_rms(x: &Tensor, eps: f64) -> Result<Tensor> {
    let h = x.dim(D::Minus1)? as f64;
    ((x.sqr()?.sum_keepdim(D::Minus1)? / h)? + eps)?
        .sqrt()?
        .recip()
}

/// RoPE on `x: [B, H, S, D]` with `cos, sin: [B, S, D/2]` (HF `rotate_half` layout).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, grad: bool) -> Result<Tensor> {
    let y = rope_nograd(&x.detach(), cos, sin)?;
    if !grad {
        return Ok(y);
    }
    // RoPE is a rotation: its transpose is the rotation by the opposite angle.
    let (cos, neg_sin) = (cos.clone(), sin.neg()?);
    op1("rope", x, y, move |_, g| {
        Ok(Some(rope_nograd(g, &cos, &neg_sin)?))
    })
}

/// [`rope`] on the heads of a projection's output `x: [B * L, heads * hd]`: `[B, heads, L, hd]`
/// rotated, as one op, so the head-major copy in between is never kept for backward.
pub fn split_rope(
    x: &Tensor,
    (b, l, heads): (usize, usize, usize),
    cos: &Tensor,
    sin: &Tensor,
    grad: bool,
) -> Result<Tensor> {
    let hd = x.dim(1)? / heads;
    let heads_first = |t: &Tensor| t.reshape((b, l, heads, hd))?.transpose(1, 2)?.contiguous();
    let y = rope_nograd(&heads_first(&x.detach())?, cos, sin)?;
    if !grad {
        return Ok(y);
    }
    let (cos, neg_sin) = (cos.clone(), sin.neg()?);
    op1("split-rope", x, y, move |_, g| {
        let g = rope_nograd(g, &cos, &neg_sin)?;
        Ok(Some(g.transpose(1, 2)?.reshape((b * l, heads * hd))?))
    })
}

fn rope_nograd(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    // A bf16 `x` (mixed precision's q and k) takes the tables in bf16, as HF's `apply_rotary_pos_emb`
    // casts them to q's dtype.
    let (cos, sin) = (&cos.to_dtype(x.dtype())?, &sin.to_dtype(x.dtype())?);
    if fused(x) || (x.device().is_cpu() && x.dtype() == DType::BF16) {
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

/// Softmax over the last dim (no backward; attention's backward is written out below).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        return candle_nn::ops::softmax_last_dim(&x.contiguous()?);
    }
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// `silu(gate) * up`, in the inputs' dtype (f32, or bf16 from bf16 products); gradients f32.
pub fn swiglu(gate: &Tensor, up: &Tensor, grad: bool) -> Result<Tensor> {
    let bf16_in = gate.dtype() == DType::BF16 && up.dtype() == DType::BF16;
    let y: Output = if gate.device().is_cpu() && (kernels::applies(gate) || bf16_in) {
        let (g, u) = (gate.detach().contiguous()?, up.detach().contiguous()?);
        let lanes = Lanes::detect();
        let y = if bf16_in {
            let y: Vec<bf16> = kernels::with_slice_of::<bf16, _>(&g, |g| {
                kernels::with_slice_of::<bf16, _>(&u, |u| kernels::swiglu::forward(lanes, g, u))
            })??;
            Output::cpu(y, gate.shape())
        } else {
            let y: Vec<f32> = kernels::with_slice(&g, |g| {
                kernels::with_slice(&u, |u| kernels::swiglu::forward(lanes, g, u))
            })??;
            Output::cpu(y, gate.shape())
        };
        if !grad {
            return y.into_tensor(gate.device());
        }
        y
    } else {
        let y = (gate.detach().silu()? * up.detach())?;
        if !grad {
            return Ok(y);
        }
        y.into()
    };
    op2("swiglu", gate, up, y, |gate, up, g| {
        let bf16_in = gate.dtype() == DType::BF16 && up.dtype() == DType::BF16;
        if gate.device().is_cpu() && (kernels::applies(gate) || bf16_in) {
            let d = swiglu_grads(gate, up, g)?;
            return Ok((Some(d.get(0)?), Some(d.get(1)?)));
        }
        let s = (gate.neg()?.exp()? + 1.0)?.recip()?;
        let silu = (gate * &s)?;
        let d_up = (g * &silu)?;
        // silu'(x) = s (1 + x (1 - s))
        let dsilu = (&s * ((gate * (1.0 - &s)?)? + 1.0)?)?;
        let d_gate = ((g * up)? * dsilu)?;
        Ok((Some(d_gate), Some(d_up)))
    })
}

/// [`swiglu`]'s gradients w.r.t. `gate` and `up` (f32 or both bf16) from the output's `g`, on
/// the CPU kernel: `[2, ..]`, gate's then up's, in the inputs' dtype (a bf16 activation's
/// gradient is bf16, as under autocast; the products that take it would round it anyway).
fn swiglu_grads(gate: &Tensor, up: &Tensor, g: &Tensor) -> Result<Tensor> {
    let g = g.to_dtype(DType::F32)?;
    let (gate, up) = (gate.contiguous()?, up.contiguous()?);
    let shape: Vec<usize> = [2].into_iter().chain(gate.dims().iter().copied()).collect();
    fn run<T: Elem>(gate: &Tensor, up: &Tensor, dy: &[f32], shape: Vec<usize>) -> Result<Tensor> {
        let d: Vec<T> = kernels::with_slice_of::<T, _>(gate, |gv| {
            kernels::with_slice_of::<T, _>(up, |uv| {
                kernels::swiglu::backward(Lanes::detect(), gv, uv, dy)
            })
        })??;
        Tensor::from_vec(d, shape, gate.device())
    }
    kernels::with_slice(&g, |dy| match gate.dtype() {
        DType::BF16 => run::<bf16>(&gate, &up, dy, shape),
        _ => run::<f32>(&gate, &up, dy, shape),
    })?
}

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Scaled dot-product attention with GQA (query head `h` reads kv head `h / group`, as HF's
/// `repeat_kv`) without materialising repeated keys. `q: [B,nh,L,hd]`, `k, v: [B,nkv,T,hd]`,
/// additive `mask: [B,1,1,L,T]` → `[B,L,nh*hd]` (heads merged inside the op, so the head-major
/// result is not kept for backward). With `grad`, the backward recomputes the
/// probabilities instead of keeping them (`B x nh x L x T` per layer). The products take their
/// inputs in `precision` (bf16 as autocast runs attention); the softmax is f32. One sequence at a
/// time: the probabilities and their gradient are temporaries of one sequence, not of the batch
/// (`B` times smaller blocks, which the allocator can place again in the next layer's holes
/// instead of in new memory).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    d: AttnDims,
    grad: bool,
    precision: Precision,
) -> Result<Tensor> {
    // Sequence `i` of a batched tensor (a mask of batch 1 serves every sequence).
    let seq = |t: &Tensor, i: usize| {
        if t.dim(0)? == 1 {
            Ok(t.clone())
        } else {
            t.narrow(0, i, 1)
        }
    };
    let b = q.dim(0)?;
    let (qd, kd, vd) = (q.detach(), k.detach(), v.detach());
    let outs = (0..b)
        .map(|i| {
            let (q, k, v, m) = (seq(&qd, i)?, seq(&kd, i)?, seq(&vd, i)?, seq(mask, i)?);
            attention_output(&q, &k, &v, &m, d, precision)
        })
        .collect::<Result<Vec<_>>>()?;
    let out = Tensor::cat(&outs, 0)?;
    drop(outs);
    if !grad {
        return Ok(out);
    }
    let mask = mask.clone();
    op3("attention", q, k, v, out, move |q, k, v, g| {
        let (mut dq, mut dk, mut dv) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..q.dim(0)? {
            let (q, k, v, m, g) = (
                seq(q, i)?,
                seq(k, i)?,
                seq(v, i)?,
                seq(&mask, i)?,
                seq(g, i)?,
            );
            let (a, b, c) = attention_grads(&q, &k, &v, &m, &g, d, precision)?;
            dq.push(a);
            dk.push(b);
            dv.push(c);
        }
        Ok((
            Some(Tensor::cat(&dq, 0)?),
            Some(Tensor::cat(&dk, 0)?),
            Some(Tensor::cat(&dv, 0)?),
        ))
    })
}

/// [`attention`]'s output (heads merged) for `q`, `k`, `v` and `mask` (no graph).
fn attention_output(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    d: AttnDims,
    precision: Precision,
) -> Result<Tensor> {
    let (p, _) = attention_probs(q, k, mask, d, precision)?;
    let (b, _, l, _) = q.dims4()?;
    // bf16 inputs (mixed precision's activations) give a bf16 output, for the next product.
    let out = match q.dtype() {
        DType::BF16 => bmm_to::<bf16>(&p, v, precision)?,
        _ => bmm(&p, v, precision)?,
    };
    merge_heads(&out.reshape((b, d.heads, l, d.head_dim))?)
}

/// [`attention`]'s gradients w.r.t. `q`, `k` and `v` from the merged output's `g`, the
/// probabilities recomputed.
fn attention_grads(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    g: &Tensor,
    d: AttnDims,
    precision: Precision,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, _, l, _) = q.dims4()?;
    let t = k.dim(2)?;
    let grp = d.heads / d.kv_heads;
    let scale = 1.0 / (d.head_dim as f64).sqrt();
    let (p, qr) = attention_probs(q, k, mask, d, precision)?;
    let go = g
        .reshape((b, l, d.heads, d.head_dim))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, d.kv_heads, grp * l, d.head_dim))?;
    let dv = bmm(&p.t()?, &go, precision)?;
    // Gradient w.r.t. the unscaled scores, the softmax's `scale` folded in; on the kernels
    // it is written over `dp`.
    let ds = if kernels::applies(&p) && kernels::applies(&go) && operand(v) {
        let t = p.dim(D::Minus1)?;
        let mut ds = bmm_vec(&go, &v.t()?, precision)?;
        kernels::with_slice(&p, |pv| {
            kernels::softmax::softmax_backward(Lanes::detect(), pv, &mut ds, t, scale as f32)
        })?;
        Tensor::from_vec(ds, p.shape(), p.device())?
    } else {
        let dp = bmm(&go, &v.t()?, precision)?;
        ((&p * dp.broadcast_sub(&(&dp * &p)?.sum_keepdim(D::Minus1)?)?)? * scale)?
    };
    let dq = bmm(&ds, k, precision)?.reshape((b, d.heads, l, d.head_dim))?;
    let dk = bmm(&ds.t()?, &qr, precision)?;
    debug_assert_eq!(dk.dims(), [b, d.kv_heads, t, d.head_dim]);
    Ok((dq, dk, dv))
}

/// `[B, heads, L, hd]` as `[B, L, heads * hd]` (the heads side by side, as the output projection
/// reads them).
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, l, hd) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, l, h * hd))
}

/// Probabilities `[B, nkv, group * L, T]` and the regrouped queries `[B, nkv, group * L, hd]`.
fn attention_probs(
    q: &Tensor,
    k: &Tensor,
    mask: &Tensor,
    d: AttnDims,
    precision: Precision,
) -> Result<(Tensor, Tensor)> {
    let (b, _, l, _) = q.dims4()?;
    let t = k.dim(2)?;
    let g = d.heads / d.kv_heads;
    let scale = 1.0 / (d.head_dim as f64).sqrt();
    let qr = q
        .contiguous()?
        .reshape((b, d.kv_heads, g * l, d.head_dim))?;
    if operand(&qr) && operand(k) && mask.dims() == [b, 1, 1, l, t] {
        // The softmax is written over the scores. Row (b, kv head, group, query l) reads mask
        // row (b, l).
        let mut p = bmm_vec(&qr, &k.t()?, precision)?;
        let rows_per_b = d.kv_heads * g * l;
        kernels::with_slice(mask, |mv| {
            kernels::softmax::masked_softmax(Lanes::detect(), &mut p, t, scale as f32, mv, |r| {
                (r / rows_per_b) * l + r % l
            })
        })?;
        let p = Tensor::from_vec(p, (b, d.kv_heads, g * l, t), q.device())?;
        return Ok((p, qr));
    }
    let scores = bmm(&qr, &k.t()?, precision)?;
    let att = (scores * scale)?;
    let att = att.reshape((b, d.kv_heads, g, l, t))?.broadcast_add(mask)?;
    let p = softmax_last(&att)?.reshape((b, d.kv_heads, g * l, t))?;
    Ok((p, qr))
}

/// Whether rlvr's kernels read `t`: an f32 or bf16 CPU tensor.
fn operand(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::BF16)
}

/// `a @ b` over the leading dims, as candle's `matmul`. In bf16 on f32 CPU tensors it runs on
/// rlvr's kernels (AMX tiles where the CPU has them), reading transposed views in place and
/// writing an output that is never zero-filled first; otherwise it is candle's.
fn bmm(a: &Tensor, b: &Tensor, precision: Precision) -> Result<Tensor> {
    bmm_to::<f32>(a, b, precision)
}

/// [`bmm`] with its output in `O` where rlvr's kernels run it (a bf16 output is the f32 sums
/// rounded); candle's product otherwise.
fn bmm_to<O: Elem>(a: &Tensor, b: &Tensor, precision: Precision) -> Result<Tensor> {
    match bmm_kernels::<O>(a, b, precision)? {
        Some((y, shape)) => Tensor::from_vec(y, shape, a.device()),
        None => a.matmul(b),
    }
}

/// [`bmm`]'s f32 values, row-major.
fn bmm_vec(a: &Tensor, b: &Tensor, precision: Precision) -> Result<Vec<f32>> {
    match bmm_kernels(a, b, precision)? {
        Some((y, _)) => Ok(y),
        None => a.matmul(b)?.flatten_all()?.to_dtype(DType::F32)?.to_vec1(),
    }
}

/// [`bmm`] on rlvr's kernels (f32 or bf16 operands, in bf16), with the product's shape;
/// `None` where they do not apply.
fn bmm_kernels<O: Elem>(
    a: &Tensor,
    b: &Tensor,
    precision: Precision,
) -> Result<Option<(Vec<O>, Vec<usize>)>> {
    let (da, db) = (a.dims(), b.dims());
    let r = da.len();
    let fits = precision == Precision::Bf16
        && operand(a)
        && operand(b)
        && r >= 2
        && db.len() == r
        && da[..r - 2] == db[..r - 2]
        && db[r - 2] == da[r - 1]
        && a.elem_count() > 0
        && b.elem_count() > 0;
    if !fits {
        return Ok(None);
    }
    let (m, k, n) = (da[r - 2], da[r - 1], db[r - 1]);
    let batch = a.elem_count() / (m * k);
    fn run<A: Elem, B: Elem, O: Elem>(
        a: &Tensor,
        b: &Tensor,
        (batch, m, n, k): (usize, usize, usize, usize),
    ) -> Result<Vec<O>> {
        with_batched::<A, _>(a, |a| {
            with_batched::<B, _>(b, |b| {
                kernels::gemm::batched(Precision::Bf16, batch, m, n, k, a, b)
            })
        })?
    }
    let dims = (batch, m, n, k);
    let y = match (a.dtype(), b.dtype()) {
        (DType::F32, DType::F32) => run::<f32, f32, O>(a, b, dims)?,
        (DType::F32, _) => run::<f32, bf16, O>(a, b, dims)?,
        (_, DType::F32) => run::<bf16, f32, O>(a, b, dims)?,
        _ => run::<bf16, bf16, O>(a, b, dims)?,
    };
    let mut shape = da.to_vec();
    shape[r - 1] = n;
    Ok(Some((y, shape)))
}

/// `f` on `t` as a strided matrix view and the elements between consecutive matrices (its
/// leading dims collapsed; a copy first where they do not collapse).
fn with_batched<T: Elem, R>(
    t: &Tensor,
    f: impl FnOnce((kernels::gemm::View<T>, usize)) -> R,
) -> Result<R> {
    let (dims, stride) = (t.dims(), t.stride());
    let r = dims.len();
    let collapses = (0..r.saturating_sub(3)).all(|i| stride[i] == stride[i + 1] * dims[i + 1]);
    if !collapses {
        let (rows, cols) = (dims[r - 2], dims[r - 1]);
        return kernels::with_slice_of::<T, _>(&t.contiguous()?, |data| {
            f((kernels::gemm::View::rows(data, cols), rows * cols))
        });
    }
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("with_batched: a CPU tensor expected")
    };
    let data = &cpu.as_slice::<T>()?[layout.start_offset()..];
    let view = kernels::gemm::View {
        data,
        rs: stride[r - 2],
        cs: stride[r - 1],
    };
    Ok(f((view, if r > 2 { stride[r - 3] } else { 0 })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{max_abs, max_abs_diff};
    use candle_core::{Device, Tensor, Var};

    /// The bias kernel gives candle's bf16 sum exactly (rows of 37, past the 16-lane and 64-row
    /// blocks), and its gradients: `dy = g`, `db` = the rows' sum of `g`.
    #[test]
    fn bf16_bias_add_matches_candles_sum_and_gradients() {
        let dev = Device::Cpu;
        let y = Var::from_tensor(
            &Tensor::randn(0f32, 3.0, (70, 37), &dev)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap(),
        )
        .unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, 37, &dev).unwrap()).unwrap();
        let want = y.broadcast_add(&b.to_dtype(DType::BF16).unwrap()).unwrap();
        let got = add_bias_bf16(&y, &b, true).unwrap().unwrap();
        assert_eq!(got.dtype(), DType::BF16);
        assert_eq!(max_abs_diff(&got, &want), 0.0);
        let no_grad = add_bias_bf16(&y, &b, false).unwrap().unwrap();
        assert!(!no_grad.track_op());
        assert_eq!(max_abs_diff(&no_grad, &want), 0.0);

        let w = Tensor::randn(0f32, 1.0, (70, 37), &dev).unwrap();
        let g = (got.to_dtype(DType::F32).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let dy = g.get(&y).unwrap().to_dtype(DType::F32).unwrap();
        // The gradient reaching the bf16 sum is `w` rounded to bf16 (candle's `to_dtype`).
        let w16 = w
            .to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert_eq!(max_abs_diff(&dy, &w16), 0.0);
        let db = g.get(&b).unwrap();
        assert_eq!(db.dtype(), DType::F32);
        assert!(max_abs_diff(db, &w16.sum(0).unwrap()) < 1e-5);
        // Not bf16 or no last-dim match: left to the caller.
        assert!(add_bias_bf16(&w, &b, true).unwrap().is_none());
    }

    /// The f32 fused forward agrees with the f64 composite one.
    #[test]
    fn fused_f32_forward_matches_f64() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 1.0, (2, 3, 5, 8), &dev).unwrap();
        let w = Tensor::randn(0f64, 1.0, 8, &dev).unwrap();
        let cos = Tensor::randn(0f64, 1.0, (2, 5, 4), &dev).unwrap();
        let sin = Tensor::randn(0f64, 1.0, (2, 5, 4), &dev).unwrap();
        let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let a = rms_norm(&x, &w, 1e-5, true, DType::F32).unwrap();
        let b = rms_norm(&f(&x), &f(&w), 1e-5, false, DType::F32).unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-5);
        let a = rope(&x, &cos, &sin, true).unwrap();
        let b = rope(&f(&x), &f(&cos), &f(&sin), false).unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-5);
        let a = softmax_last(&x).unwrap();
        let b = softmax_last(&f(&x)).unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-6);
    }

    /// Every hand-written backward against central finite differences in f64.
    #[test]
    fn backward_rules_match_finite_differences() {
        let dev = Device::Cpu;
        let var = |shape: &[usize]| {
            Var::from_tensor(&Tensor::randn(0f64, 1.0, shape, &dev).unwrap()).unwrap()
        };
        let x = var(&[2, 4, 3, 8]);
        let w = var(&[8]);
        let up = var(&[2, 4, 3, 8]);
        let k = var(&[2, 2, 3, 8]);
        let v = var(&[2, 2, 3, 8]);
        let cos = Tensor::randn(0f64, 1.0, (2, 3, 4), &dev).unwrap();
        let sin = Tensor::randn(0f64, 1.0, (2, 3, 4), &dev).unwrap();
        let mut m = vec![0f64; 2 * 3 * 3];
        m[3 * 3 + 2] = -1e30; // one masked key
        let mask = Tensor::from_vec(m, (2, 1, 1, 3, 3), &dev).unwrap();
        let d = AttnDims {
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
        };
        let probe = Tensor::randn(0f64, 1.0, (2, 3, 32), &dev).unwrap();
        let loss = || -> Tensor {
            let h = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5, true, DType::F32).unwrap();
            let h = rope(&h, &cos, &sin, true).unwrap();
            let h = swiglu(&h, up.as_tensor(), true).unwrap();
            let h = attention(
                &h,
                k.as_tensor(),
                v.as_tensor(),
                &mask,
                d,
                true,
                Precision::F32,
            );
            let h = h.unwrap();
            (h * &probe).unwrap().sum_all().unwrap()
        };
        let grads = loss().backward().unwrap();
        for (name, p) in [("x", &x), ("w", &w), ("up", &up), ("k", &k), ("v", &v)] {
            let g = grads
                .get(p)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let base = p
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for i in [0, base.len() / 2, base.len() - 1] {
                let eps = 1e-6;
                let at = |delta: f64| {
                    let mut b = base.clone();
                    b[i] += delta;
                    p.set(&Tensor::from_vec(b, p.shape(), &dev).unwrap())
                        .unwrap();
                    loss().to_scalar::<f64>().unwrap()
                };
                let fd = (at(eps) - at(-eps)) / (2.0 * eps);
                at(0.0);
                assert!(
                    (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{name}[{i}]: {} vs {fd}",
                    g[i]
                );
            }
        }
    }

    /// The fused MLP (gate and up as one op, SwiGLU recomputed inside the down projection's)
    /// equals the op-by-op one in value and in every gradient, f32 and bf16.
    #[test]
    fn fused_mlp_equals_the_op_by_op_one() {
        let dev = Device::Cpu;
        let var = |shape: &[usize], s: f32| {
            Var::from_tensor(&Tensor::randn(0f32, s, shape, &dev).unwrap()).unwrap()
        };
        let (res, h) = (var(&[2, 3, 40], 1.0), var(&[6, 40], 1.0));
        let (wg, wu, wd) = (
            var(&[24, 40], 0.3),
            var(&[24, 40], 0.3),
            var(&[40, 24], 0.3),
        );
        let probe = Tensor::randn(0f32, 1.0, (2, 3, 40), &dev).unwrap();
        for (precision, act) in [(Precision::F32, DType::F32), (Precision::Bf16, DType::BF16)] {
            let hi = h.as_tensor().to_dtype(act).unwrap();
            let (g, u, d) = (wg.as_tensor(), wu.as_tensor(), wd.as_tensor());
            let gu = linear_pair(&hi, (g, u), precision, act).unwrap().unwrap();
            let fused = swiglu_linear_residual(res.as_tensor(), &gu, d, precision)
                .unwrap()
                .unwrap();
            let gate = linear(&hi, g, true, precision, act).unwrap().unwrap();
            let up = linear(&hi, u, true, precision, act).unwrap().unwrap();
            let m = swiglu(&gate, &up, true).unwrap();
            let parts = linear_residual(res.as_tensor(), &m, d, true, precision)
                .unwrap()
                .unwrap();
            assert!(max_abs_diff(&fused, &parts) < 1e-5, "{precision:?}");
            let loss = |t: &Tensor| (t * &probe).unwrap().sum_all().unwrap();
            let (ga, gb) = (
                loss(&fused).backward().unwrap(),
                loss(&parts).backward().unwrap(),
            );
            for v in [&res, &h, &wg, &wu, &wd] {
                let (a, b) = (
                    ga.get(v.as_tensor()).unwrap(),
                    gb.get(v.as_tensor()).unwrap(),
                );
                assert!(
                    max_abs_diff(a, b) < 1e-4 * (1.0 + max_abs(b)),
                    "{precision:?} gradient"
                );
            }
        }
    }

    /// `split_rope` equals the head split followed by `rope`, in value and gradient, for f64,
    /// f32 and bf16 inputs.
    #[test]
    fn split_rope_equals_split_then_rope() {
        let dev = Device::Cpu;
        let (b, l, heads, hd) = (2, 3, 4, 8);
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (b * l, heads * hd), &dev).unwrap())
            .unwrap();
        let cos = Tensor::randn(0f64, 1.0, (b, l, hd / 2), &dev).unwrap();
        let sin = Tensor::randn(0f64, 1.0, (b, l, hd / 2), &dev).unwrap();
        let probe = Tensor::randn(0f64, 1.0, (b, heads, l, hd), &dev).unwrap();
        for dt in [DType::F64, DType::F32, DType::BF16] {
            let c = |t: &Tensor| t.to_dtype(dt).unwrap();
            let xi = c(x.as_tensor());
            let (cs, sn) = (c(&cos), c(&sin));
            let fused = split_rope(&xi, (b, l, heads), &cs, &sn, true).unwrap();
            let split = xi
                .reshape((b, l, heads, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap();
            let parts = rope(&split, &cs, &sn, true).unwrap();
            let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
            assert_eq!(max_abs_diff(&f64s(&fused), &f64s(&parts)), 0.0, "{dt:?}");
            let loss = |t: &Tensor| (f64s(t) * &probe).unwrap().sum_all().unwrap();
            let (ga, gb) = (
                loss(&fused).backward().unwrap(),
                loss(&parts).backward().unwrap(),
            );
            let (ga, gb) = (
                ga.get(x.as_tensor()).unwrap(),
                gb.get(x.as_tensor()).unwrap(),
            );
            assert!(max_abs_diff(ga, gb) < 1e-6, "{dt:?} gradient");
        }
    }

    /// The residual linear equals `res + linear(x)` in value and in every gradient, in f32 and
    /// in bf16 (bf16 `x` too).
    #[test]
    fn linear_residual_equals_the_sum_of_its_parts() {
        let dev = Device::Cpu;
        let var = |shape: &[usize]| {
            Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &dev).unwrap()).unwrap()
        };
        let (res, x, w) = (var(&[2, 3, 8]), var(&[6, 40]), var(&[8, 40]));
        let probe = Tensor::randn(0f32, 1.0, (2, 3, 8), &dev).unwrap();
        for (precision, dt) in [
            (Precision::F32, DType::F32),
            (Precision::Bf16, DType::F32),
            (Precision::Bf16, DType::BF16),
        ] {
            let xi = x.as_tensor().to_dtype(dt).unwrap();
            let fused = linear_residual(res.as_tensor(), &xi, w.as_tensor(), true, precision)
                .unwrap()
                .unwrap();
            let y = linear(&xi, w.as_tensor(), true, precision, DType::F32)
                .unwrap()
                .unwrap();
            let parts = (res.as_tensor() + y.reshape((2, 3, 8)).unwrap()).unwrap();
            assert!(max_abs_diff(&fused, &parts) < 1e-5, "{precision:?} {dt:?}");
            let loss = |t: &Tensor| (t * &probe).unwrap().sum_all().unwrap();
            let (ga, gb) = (
                loss(&fused).backward().unwrap(),
                loss(&parts).backward().unwrap(),
            );
            // (`x`'s gradient through the cast: an intermediate's is not kept.)
            for v in [res.as_tensor(), x.as_tensor(), w.as_tensor()] {
                let (a, b) = (ga.get(v).unwrap(), gb.get(v).unwrap());
                assert!(max_abs_diff(a, b) < 1e-5, "{precision:?} {dt:?} gradient");
            }
        }
    }

    /// Mixed precision's bf16 activations (normed input, gate and up, SwiGLU output): each is
    /// the f32 value rounded once, the products that read them give what they give on the
    /// rounded f32 values, and every gradient stays f32 and points where the f32 run's does.
    #[test]
    fn bf16_activations_round_once_and_keep_f32_gradients() {
        let dev = Device::Cpu;
        let var = |shape: &[usize], s: f32| {
            Var::from_tensor(&Tensor::randn(0f32, s, shape, &dev).unwrap()).unwrap()
        };
        let (x, w) = (var(&[6, 40], 1.0), var(&[40], 1.0));
        let (wg, wu, wd) = (
            var(&[24, 40], 0.3),
            var(&[24, 40], 0.3),
            var(&[40, 24], 0.3),
        );
        let probe = Tensor::randn(0f32, 1.0, (6, 40), &dev).unwrap();
        let bf = Precision::Bf16;
        let run = |act: DType| {
            let h = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5, true, act).unwrap();
            let g = linear(&h, wg.as_tensor(), true, bf, act).unwrap().unwrap();
            let u = linear(&h, wu.as_tensor(), true, bf, act).unwrap().unwrap();
            let m = swiglu(&g, &u, true).unwrap();
            let y = linear(&m, wd.as_tensor(), true, bf, DType::F32)
                .unwrap()
                .unwrap();
            assert!([&h, &g, &u, &m].iter().all(|t| t.dtype() == act));
            assert_eq!(y.dtype(), DType::F32);
            let grads = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (h, g, m, y, grads)
        };
        let (h16, g16, m16, y16, grads16) = run(DType::BF16);
        let (h32, g32, m32, y32, grads32) = run(DType::F32);
        let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<half::bf16>().unwrap();
        let round = |t: &Tensor| bits(&t.to_dtype(DType::BF16).unwrap());
        assert_eq!(
            bits(&h16),
            round(&h32),
            "the normed input is the f32 one rounded"
        );
        // gate from the rounded input: the same bf16 product, rounded once on the way out.
        let g_ref = linear(
            &h16.to_dtype(DType::F32).unwrap(),
            wg.as_tensor(),
            false,
            bf,
            DType::F32,
        )
        .unwrap()
        .unwrap();
        assert_eq!(bits(&g16), round(&g_ref));
        let rel = |a: &Tensor, b: &Tensor| max_abs_diff(a, b) / max_abs(b);
        let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        assert!(rel(&f(&m16), &m32) < 2e-2 && rel(&y16, &y32) < 2e-2);
        assert!(rel(&f(&g16), &g32) < 1e-2);
        for v in [&x, &w, &wg, &wu, &wd] {
            let (a, b) = (grads16.get(v).unwrap(), grads32.get(v).unwrap());
            assert_eq!(a.dtype(), DType::F32);
            let dot = (a * b)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let n = |t: &Tensor| {
                t.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    .sqrt()
            };
            let cos = dot / (n(a) * n(b));
            assert!(cos > 0.999, "gradient cosine {cos}");
            assert!(
                rel(a, b) > 0.0,
                "bf16 activations left the gradients unchanged"
            );
        }
    }

    /// Batched products in bf16 equal candle's product of the bf16-rounded operands (the sums
    /// are f32 either way), for plain and transposed views and leading dims that do not
    /// collapse; and bf16 attention's output and gradients stay within bf16 rounding of f32's.
    #[test]
    fn bf16_attention_products_match_rounded_f32() {
        let dev = Device::Cpu;
        let rand = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
        let round = |t: &Tensor| {
            t.to_dtype(DType::BF16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
        };
        let (a, b) = (rand(&[2, 3, 37, 40]), rand(&[2, 3, 45, 40]));
        let bt = b.t().unwrap();
        let want = round(&a).matmul(&round(&bt)).unwrap();
        let got = bmm(&a, &bt, Precision::Bf16).unwrap();
        assert_eq!(got.dims(), [2, 3, 37, 45]);
        assert!(max_abs_diff(&got, &want) < 1e-4);
        // Leading dims transposed: [3, 2] viewed as [2, 3] does not collapse to one stride.
        let a2 = rand(&[3, 2, 37, 40]).transpose(0, 1).unwrap();
        let b2 = rand(&[2, 3, 40, 45]);
        let want = round(&a2).matmul(&round(&b2)).unwrap();
        assert!(max_abs_diff(&bmm(&a2, &b2, Precision::Bf16).unwrap(), &want) < 1e-4);
        // f32 precision is candle's product exactly.
        let f = bmm(&a, &bt, Precision::F32).unwrap();
        assert_eq!(max_abs_diff(&f, &a.matmul(&bt).unwrap()), 0.0);

        let d = AttnDims {
            heads: 4,
            kv_heads: 2,
            head_dim: 32,
        };
        let (q, k, v) = (
            rand(&[2, 4, 19, 32]),
            rand(&[2, 2, 19, 32]),
            rand(&[2, 2, 19, 32]),
        );
        let mut m = vec![0f32; 2 * 19 * 19];
        for (i, x) in m.iter_mut().enumerate() {
            if i % 19 > (i / 19) % 19 {
                *x = f32::NEG_INFINITY;
            }
        }
        let mask = Tensor::from_vec(m, (2, 1, 1, 19, 19), &dev).unwrap();
        let probe = rand(&[2, 19, 4 * 32]);
        let run = |precision| {
            let vars: Vec<Var> = [&q, &k, &v]
                .iter()
                .map(|t| Var::from_tensor(t).unwrap())
                .collect();
            let t: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
            let out = attention(t[0], t[1], t[2], &mask, d, true, precision).unwrap();
            let grads = (&out * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g: Vec<Tensor> = t.iter().map(|t| grads.get(t).unwrap().clone()).collect();
            (out, g)
        };
        let ((o32, g32), (o16, g16)) = (run(Precision::F32), run(Precision::Bf16));
        assert!(max_abs_diff(&o32, &o16) < 0.03 * max_abs(&o32));
        for (a, b) in g32.iter().zip(&g16) {
            assert!(
                max_abs_diff(a, b) < 0.03 * max_abs(a),
                "{} vs {}",
                max_abs_diff(a, b),
                max_abs(a)
            );
        }
    }
}
