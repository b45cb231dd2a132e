//! Training's matrix products into fresh buffers that are never zeroed first (candle's CPU
//! matmul zero-fills every output before gemm overwrites it, a memset that measured 5 % of a
//! training step), in one of two [`Precision`]s: f32 on the `gemm` crate (the kernels candle
//! uses), or bf16 inputs with f32 accumulation on AMX tiles where the CPU has them. Operands are
//! f32 or bf16 ([`Elem`]: mixed-precision training keeps activations in bf16), and a product's
//! output is f32 or rounded to bf16.

use super::{amx, Elem};
use gemm::Parallelism;
use std::borrow::Cow;

/// The inputs' precision of a product. Accumulation is f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    /// Inputs rounded to bf16 (mixed-precision training, `trainer.bf16`): AMX tiles where the
    /// CPU has them, else the same rounding followed by the f32 product (equal up to the order
    /// of the f32 sums, since bf16 x bf16 products are exact in f32).
    Bf16,
}

/// A strided matrix view of f32 or bf16 elements: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a, T = f32> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T: Elem> View<'a, T> {
    /// A row-major `[rows, cols]` matrix.
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        View {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major `[rows, cols]` matrix.
    pub fn transposed(data: &'a [T], cols: usize) -> Self {
        View {
            data,
            rs: 1,
            cs: cols,
        }
    }

    /// Elements spanned by a `[r, c]` matrix in this view.
    fn span(&self, r: usize, c: usize) -> usize {
        if r == 0 || c == 0 {
            0
        } else {
            (r - 1) * self.rs + (c - 1) * self.cs + 1
        }
    }

    /// Whether `data` holds a `[r, c]` matrix in this view.
    pub fn covers(&self, r: usize, c: usize) -> bool {
        self.data.len() >= self.span(r, c)
    }

    /// The view's `[r, c]` matrix as f32 with the same strides: borrowed when it is f32 and
    /// `precision` is F32, else widened (exactly) and, in bf16, rounded to bf16.
    fn f32s(&self, precision: Precision, r: usize, c: usize) -> Cow<'a, [f32]> {
        let data = &self.data[..self.span(r, c)];
        match (T::as_f32(data), precision) {
            (Some(f), Precision::F32) => Cow::Borrowed(f),
            (Some(f), Precision::Bf16) => Cow::Owned(
                f.iter()
                    .map(|&x| half::bf16::from_f32(x).to_f32())
                    .collect(),
            ),
            (None, _) => Cow::Owned(data.iter().map(|x| x.to_f32()).collect()),
        }
    }
}

/// The right operand `b: [k, n]` of one or more products, prepared once for its precision:
/// packed into AMX tiles (bf16 where the CPU has AMX), or f32 (borrowed as is, or widened and
/// rounded to bf16 without AMX). Products with the output head's weight prepare it once for all
/// chunks of rows.
pub struct Rhs<'a> {
    k: usize,
    n: usize,
    precision: Precision,
    kind: RhsKind<'a>,
}

enum RhsKind<'a> {
    F32 {
        data: Cow<'a, [f32]>,
        rs: usize,
        cs: usize,
    },
    Tiles(amx::Packed),
}

impl<'a> Rhs<'a> {
    pub fn new<T: Elem>(precision: Precision, b: View<'a, T>, k: usize, n: usize) -> Self {
        assert!(
            b.covers(k, n),
            "gemm: the right operand is shorter than [{k}, {n}]"
        );
        let kind = if precision == Precision::Bf16 && amx::available() {
            RhsKind::Tiles(amx::Packed::new(b, k, n))
        } else {
            RhsKind::F32 {
                data: b.f32s(precision, k, n),
                rs: b.rs,
                cs: b.cs,
            }
        };
        Rhs {
            k,
            n,
            precision,
            kind,
        }
    }
}

/// `dst (+)= a @ b` into row-major `[m, n]` at `dst`, in `b`'s precision; a bf16 `dst` holds
/// the f32 result rounded.
///
/// # Safety
/// `dst` must have room for `m * n` values, initialised when `accumulate`.
unsafe fn run<T: Elem, O: Elem>(m: usize, dst: *mut O, accumulate: bool, a: View<T>, b: &Rhs) {
    let (k, n) = (b.k, b.n);
    assert!(
        a.covers(m, k),
        "gemm: the left operand is shorter than [{m}, {k}]"
    );
    let (data, rs, cs) = match &b.kind {
        // SAFETY: the caller's contract.
        RhsKind::Tiles(packed) => return unsafe { amx::matmul(dst, accumulate, m, a, packed) },
        RhsKind::F32 { data, rs, cs } => (data, *rs, *cs),
    };
    let bv = View { data, rs, cs };
    let ad = a.f32s(b.precision, m, k);
    let av = View {
        data: &ad,
        rs: a.rs,
        cs: a.cs,
    };
    if O::DTYPE == candle_core::DType::F32 {
        // SAFETY: O is f32 (same DTYPE); the caller's contract.
        return unsafe { f32_gemm(m, n, k, dst.cast(), accumulate, av, bv) };
    }
    // SAFETY: the caller's contract (m * n values at dst, initialised when accumulating).
    let out = unsafe { std::slice::from_raw_parts_mut(dst, m * n) };
    let mut y: Vec<f32> = if accumulate {
        out.iter().map(|x| x.to_f32()).collect()
    } else {
        Vec::with_capacity(m * n)
    };
    // SAFETY: room for m * n values, all written by the product (k > 0 at every caller).
    unsafe {
        f32_gemm(m, n, k, y.as_mut_ptr(), accumulate, av, bv);
        y.set_len(m * n);
    }
    super::elem::store_f32(&y, out);
}

/// # Safety
/// As [`run`].
unsafe fn f32_gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    accumulate: bool,
    a: View,
    b: View,
) {
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // dst = alpha * dst + beta * a @ b, dst read only when accumulating.
    // SAFETY: the views cover their matrices (checked by the callers), `dst` per the contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    };
}

/// `a @ b` for `a: [m, k]`, `b: [k, n]`, row-major f32 `[m, n]`.
pub fn matmul<A: Elem, B: Elem>(
    precision: Precision,
    m: usize,
    n: usize,
    k: usize,
    a: View<A>,
    b: View<B>,
) -> Vec<f32> {
    matmul_by(m, a, &Rhs::new(precision, b, k, n))
}

/// `a @ b` for `a: [m, k]` and a prepared `b`, row-major f32 `[m, n]`.
pub fn matmul_by<A: Elem>(m: usize, a: View<A>, b: &Rhs) -> Vec<f32> {
    matmul_to(m, a, b)
}

/// `a @ b` for `a: [m, k]` and a prepared `b`, row-major `[m, n]` of `O` (f32, or the f32
/// result rounded to bf16 as it is written out).
pub fn matmul_to<A: Elem, O: Elem>(m: usize, a: View<A>, b: &Rhs) -> Vec<O> {
    let mut dst = Vec::new();
    matmul_append(&mut dst, m, a, b);
    dst
}

/// [`matmul_to`] written after `dst`'s values (`dst` grows by `m * n`), so that several
/// products can fill one buffer without copies.
pub fn matmul_append<A: Elem, O: Elem>(dst: &mut Vec<O>, m: usize, a: View<A>, b: &Rhs) {
    let (k, n, start) = (b.k, b.n, dst.len());
    if m == 0 || n == 0 || k == 0 {
        dst.resize(start + m * n, O::from_f32(0.0));
        return;
    }
    dst.reserve_exact(m * n);
    // SAFETY: room for m * n values after `start`, all of which the product writes (k > 0)
    // before `set_len`.
    unsafe {
        run(m, dst.as_mut_ptr().add(start), false, a, b);
        dst.set_len(start + m * n);
    }
}

/// `a_i @ b_i` for `batch` pairs, row-major f32 `[batch, m, n]`: pair `i` is `a` and `b` moved
/// on by `i * a_step` and `i * b_step` elements (candle's batched matmul, as attention runs it).
/// The pairs run in parallel, each product on one thread.
#[allow(clippy::too_many_arguments)]
pub fn batched<A: Elem, B: Elem, O: Elem>(
    precision: Precision,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    (a, a_step): (View<A>, usize),
    (b, b_step): (View<B>, usize),
) -> Vec<O> {
    use rayon::prelude::*;
    let len = batch * m * n;
    if len == 0 || k == 0 {
        return vec![O::from_f32(0.0); len];
    }
    let mut dst: Vec<O> = Vec::with_capacity(len);
    dst.spare_capacity_mut()[..len]
        .par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(i, out)| {
            let rhs = Rhs::new(precision, moved(b, b_step, i), k, n);
            // SAFETY: `out` has room for this pair's m * n values, all of which the product
            // writes (k > 0); `Rhs::new` and `run` check that the views cover their matrices.
            unsafe {
                run(
                    m,
                    out.as_mut_ptr().cast::<O>(),
                    false,
                    moved(a, a_step, i),
                    &rhs,
                )
            };
        });
    // SAFETY: every pair's values were written just above.
    unsafe { dst.set_len(len) };
    dst
}

/// `v` moved on by `i * step` elements.
fn moved<T>(v: View<'_, T>, step: usize, i: usize) -> View<'_, T> {
    View {
        data: v.data.get(i * step..).unwrap_or_default(),
        ..v
    }
}

/// `dst += a @ b`, `dst` row-major `[m, n]`.
pub fn matmul_acc<A: Elem, B: Elem>(
    precision: Precision,
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    a: View<A>,
    b: View<B>,
) {
    matmul_acc_by(dst, m, a, &Rhs::new(precision, b, k, n))
}

/// `dst += a @ b` for a prepared `b`, `dst` row-major `[m, n]`.
pub fn matmul_acc_by<A: Elem>(dst: &mut [f32], m: usize, a: View<A>, b: &Rhs) {
    assert_eq!(dst.len(), m * b.n);
    if m == 0 || b.n == 0 || b.k == 0 {
        return;
    }
    // SAFETY: `dst` holds m * n initialised values.
    unsafe { run(m, dst.as_mut_ptr(), true, a, b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_transposed_operands_match_a_naive_product() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 1.5).collect();
        let want: Vec<f32> = (0..m * n)
            .map(|ij| (0..k).map(|p| a[ij / n * k + p] * b[p * n + ij % n]).sum())
            .collect();
        let f32 = Precision::F32;
        assert_eq!(
            matmul(f32, m, n, k, View::rows(&a, k), View::rows(&b, n)),
            want
        );
        // The same product from stored transposes: a^T is [k, m], b^T is [n, k].
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let got = matmul(
            f32,
            m,
            n,
            k,
            View::transposed(&at, m),
            View::transposed(&bt, k),
        );
        assert_eq!(got, want);
        assert_eq!(
            matmul(
                f32,
                2,
                3,
                0,
                View::<f32>::rows(&[], 0),
                View::<f32>::rows(&[], 3)
            ),
            vec![0.0; 6]
        );
    }

    #[test]
    fn bf16_products_round_the_inputs_and_accumulate_in_f32() {
        let (m, n, k) = (40, 33, 100);
        // Values with bits below bf16's 8-bit mantissa, so rounding changes them.
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 49.3)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 47.1)
            .collect();
        let (av, bv) = (View::rows(&a, k), View::rows(&b, n));
        let round = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect()
        };
        let (ra, rb) = (round(&a), round(&b));
        let want = matmul(
            Precision::F32,
            m,
            n,
            k,
            View::rows(&ra, k),
            View::rows(&rb, n),
        );
        let unrounded = matmul(Precision::F32, m, n, k, av, bv);
        let got = matmul(Precision::Bf16, m, n, k, av, bv);
        let mut acc = unrounded.clone();
        matmul_acc(Precision::Bf16, &mut acc, m, n, k, av, bv);
        let mut off_f32 = 0f32;
        for i in 0..m * n {
            // Same exact products, summed in another order (AMX) or the same (fallback).
            assert!(
                (got[i] - want[i]).abs() <= 1e-4,
                "{i}: {} vs {}",
                got[i],
                want[i]
            );
            assert!((acc[i] - (unrounded[i] + want[i])).abs() <= 2e-4);
            off_f32 = off_f32.max((got[i] - unrounded[i]).abs());
        }
        assert!(
            off_f32 > 1e-3,
            "bf16 products equal f32 ones: inputs not rounded"
        );
        // bf16 operands (activations kept in bf16) give the same product as their f32 values,
        // in every layout, and a bf16 output is the f32 one rounded.
        let (ha, hb) = (
            super::super::elem::narrowed(&a),
            super::super::elem::narrowed(&b),
        );
        let at = transpose(&ra, m, k);
        let (hat, hbt) = (transpose(&ha, m, k), transpose(&hb, k, n));
        // (Same packed tiles on AMX, so equal bits; other layouts may sum in another order on
        // the f32 fallback.)
        let close = |x: &[f32]| x.iter().zip(&got).all(|(x, g)| (x - g).abs() <= 1e-4);
        assert_eq!(
            matmul(
                Precision::Bf16,
                m,
                n,
                k,
                View::rows(&ha, k),
                View::rows(&hb, n)
            ),
            got
        );
        let transposed = matmul(
            Precision::Bf16,
            m,
            n,
            k,
            View::transposed(&hat, m),
            View::transposed(&hbt, k),
        );
        assert!(close(&transposed));
        let mixed = matmul(
            Precision::Bf16,
            m,
            n,
            k,
            View::transposed(&at, m),
            View::rows(&hb, n),
        );
        assert!(close(&mixed));
        let rhs = Rhs::new(Precision::Bf16, View::rows(&hb, n), k, n);
        let narrow: Vec<half::bf16> = matmul_to(m, View::rows(&ha, k), &rhs);
        assert_eq!(narrow, super::super::elem::narrowed(&got));
        // Without AMX (or in f32) a bf16 operand is widened exactly.
        let f32_of_bf16 = matmul(
            Precision::F32,
            m,
            n,
            k,
            View::rows(&ha, k),
            View::rows(&rb, n),
        );
        assert_eq!(f32_of_bf16, want);
        eprintln!(
            "bf16 path: {}",
            if amx::available() {
                "AMX"
            } else {
                "rounding + f32 gemm"
            }
        );
    }

    /// The row-major transpose of a row-major `[r, c]` matrix.
    fn transpose<T: Copy>(v: &[T], r: usize, c: usize) -> Vec<T> {
        (0..r * c).map(|i| v[(i % r) * c + i / r]).collect()
    }
}
