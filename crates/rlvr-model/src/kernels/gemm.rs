//! f32 matrix products on the `gemm` crate (the kernels candle uses) into fresh buffers that are
//! never zeroed first: candle's CPU matmul zero-fills every output before gemm overwrites it,
//! a memset that measured 5 % of a training step.

use gemm::Parallelism;

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
}

fn span(v: &View, r: usize, c: usize) -> usize {
    if r == 0 || c == 0 {
        0
    } else {
        (r - 1) * v.rs + (c - 1) * v.cs + 1
    }
}

/// `dst (+)= a @ b` into row-major `[m, n]` at `dst`.
///
/// # Safety
/// `dst` must have room for `m * n` values, initialised when `accumulate`.
unsafe fn run(m: usize, n: usize, k: usize, dst: *mut f32, accumulate: bool, a: View, b: View) {
    assert!(a.data.len() >= span(&a, m, k) && b.data.len() >= span(&b, k, n));
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // dst = alpha * dst + beta * a @ b, dst read only when accumulating.
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
    );
}

/// `a @ b` for `a: [m, k]`, `b: [k, n]`, row-major `[m, n]`.
pub fn matmul(m: usize, n: usize, k: usize, a: View, b: View) -> Vec<f32> {
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let mut dst: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: room for m * n values, all of which gemm writes (k > 0) before `set_len`.
    unsafe {
        run(m, n, k, dst.as_mut_ptr(), false, a, b);
        dst.set_len(m * n);
    }
    dst
}

/// `dst += a @ b`, `dst` row-major `[m, n]`.
pub fn matmul_acc(dst: &mut [f32], m: usize, n: usize, k: usize, a: View, b: View) {
    assert_eq!(dst.len(), m * n);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // SAFETY: `dst` holds m * n initialised values.
    unsafe { run(m, n, k, dst.as_mut_ptr(), true, a, b) }
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
        assert_eq!(matmul(m, n, k, View::rows(&a, k), View::rows(&b, n)), want);
        // The same product from stored transposes: a^T is [k, m], b^T is [n, k].
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let got = matmul(m, n, k, View::transposed(&at, m), View::transposed(&bt, k));
        assert_eq!(got, want);
        assert_eq!(
            matmul(2, 3, 0, View::rows(&[], 0), View::rows(&[], 3)),
            vec![0.0; 6]
        );
    }
}
