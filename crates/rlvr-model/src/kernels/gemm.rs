//! Training's matrix products into fresh buffers that are never zeroed first (candle's CPU
//! matmul zero-fills every output before gemm overwrites it, a memset that measured 5 % of a
//! training step), in one of two [`Precision`]s: f32 on the `gemm` crate (the kernels candle
//! uses), or bf16 inputs with f32 accumulation on AMX tiles where the CPU has them.

use super::amx;
use gemm::Parallelism;

/// The inputs' precision of a product. Accumulation and the result are f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    /// Inputs rounded to bf16 (mixed-precision training, `trainer.bf16`): AMX tiles where the
    /// CPU has them, else the same rounding followed by the f32 product (equal up to the order
    /// of the f32 sums, since bf16 x bf16 products are exact in f32).
    Bf16,
}

/// A strided f32 matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        View {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major `[rows, cols]` matrix.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
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
}

/// The view's matrix with every element rounded to bf16 (kept as f32), same strides.
fn rounded(v: View, r: usize, c: usize) -> Vec<f32> {
    v.data[..v.span(r, c)]
        .iter()
        .map(|&x| half::bf16::from_f32(x).to_f32())
        .collect()
}

/// The right operand `b: [k, n]` of one or more products, prepared once for its precision:
/// borrowed as is (f32), packed into AMX tiles (bf16), or rounded to bf16 and kept as f32 (bf16
/// without AMX). Products with the output head's weight prepare it once for all chunks of rows.
pub struct Rhs<'a> {
    k: usize,
    n: usize,
    kind: RhsKind<'a>,
}

enum RhsKind<'a> {
    F32(View<'a>),
    Tiles(amx::Packed),
    Rounded {
        data: Vec<f32>,
        rs: usize,
        cs: usize,
    },
}

impl<'a> Rhs<'a> {
    pub fn new(precision: Precision, b: View<'a>, k: usize, n: usize) -> Self {
        assert!(
            b.covers(k, n),
            "gemm: the right operand is shorter than [{k}, {n}]"
        );
        let kind = match precision {
            Precision::F32 => RhsKind::F32(b),
            Precision::Bf16 if amx::available() => RhsKind::Tiles(amx::Packed::new(b, k, n)),
            Precision::Bf16 => RhsKind::Rounded {
                data: rounded(b, k, n),
                rs: b.rs,
                cs: b.cs,
            },
        };
        Rhs { k, n, kind }
    }
}

/// `dst (+)= a @ b` into row-major `[m, n]` at `dst`, in `b`'s precision.
///
/// # Safety
/// `dst` must have room for `m * n` values, initialised when `accumulate`.
unsafe fn run(m: usize, dst: *mut f32, accumulate: bool, a: View, b: &Rhs) {
    let (k, n) = (b.k, b.n);
    assert!(
        a.covers(m, k),
        "gemm: the left operand is shorter than [{m}, {k}]"
    );
    match &b.kind {
        // SAFETY (all three): the caller's contract.
        RhsKind::F32(bv) => unsafe { f32_gemm(m, n, k, dst, accumulate, a, *bv) },
        RhsKind::Tiles(packed) => unsafe { amx::matmul(dst, accumulate, m, a, packed) },
        RhsKind::Rounded { data, rs, cs } => {
            let ra = rounded(a, m, k);
            let a = View { data: &ra, ..a };
            let bv = View {
                data,
                rs: *rs,
                cs: *cs,
            };
            unsafe { f32_gemm(m, n, k, dst, accumulate, a, bv) }
        }
    }
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

/// `a @ b` for `a: [m, k]`, `b: [k, n]`, row-major `[m, n]`.
pub fn matmul(precision: Precision, m: usize, n: usize, k: usize, a: View, b: View) -> Vec<f32> {
    matmul_by(m, a, &Rhs::new(precision, b, k, n))
}

/// `a @ b` for `a: [m, k]` and a prepared `b`, row-major `[m, n]`.
pub fn matmul_by(m: usize, a: View, b: &Rhs) -> Vec<f32> {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let mut dst: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: room for m * n values, all of which the product writes (k > 0) before `set_len`.
    unsafe {
        run(m, dst.as_mut_ptr(), false, a, b);
        dst.set_len(m * n);
    }
    dst
}

/// `a_i @ b_i` for `batch` pairs, row-major `[batch, m, n]`: pair `i` is `a` and `b` moved on by
/// `i * a_step` and `i * b_step` elements (candle's batched matmul, as attention runs it). The
/// pairs run in parallel, each product on one thread.
#[allow(clippy::too_many_arguments)]
pub fn batched(
    precision: Precision,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    (a, a_step): (View, usize),
    (b, b_step): (View, usize),
) -> Vec<f32> {
    use rayon::prelude::*;
    let len = batch * m * n;
    if len == 0 || k == 0 {
        return vec![0.0; len];
    }
    let mut dst: Vec<f32> = Vec::with_capacity(len);
    dst.spare_capacity_mut()[..len]
        .par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(i, out)| {
            let rhs = Rhs::new(precision, moved(b, b_step, i), k, n);
            // SAFETY: `out` has room for this pair's m * n values, all of which the product
            // writes (k > 0); `Rhs::new` and `run` check that the views cover their matrices.
            unsafe { run(m, out.as_mut_ptr().cast(), false, moved(a, a_step, i), &rhs) };
        });
    // SAFETY: every pair's values were written just above.
    unsafe { dst.set_len(len) };
    dst
}

/// `v` moved on by `i * step` elements.
fn moved(v: View<'_>, step: usize, i: usize) -> View<'_> {
    View {
        data: v.data.get(i * step..).unwrap_or_default(),
        ..v
    }
}

/// `dst += a @ b`, `dst` row-major `[m, n]`.
pub fn matmul_acc(
    precision: Precision,
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    a: View,
    b: View,
) {
    matmul_acc_by(dst, m, a, &Rhs::new(precision, b, k, n))
}

/// `dst += a @ b` for a prepared `b`, `dst` row-major `[m, n]`.
pub fn matmul_acc_by(dst: &mut [f32], m: usize, a: View, b: &Rhs) {
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
            matmul(f32, 2, 3, 0, View::rows(&[], 0), View::rows(&[], 3)),
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
        let (ra, rb) = (rounded(av, m, k), rounded(bv, k, n));
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
        eprintln!(
            "bf16 path: {}",
            if amx::available() {
                "AMX"
            } else {
                "rounding + f32 gemm"
            }
        );
    }
}
