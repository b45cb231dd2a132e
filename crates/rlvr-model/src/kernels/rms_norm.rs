//! RMSNorm's backward in one pass over each row (the composite tensor version made a dozen passes
//! and allocations per call, 61 calls per training step for SmolLM2).

use super::Lanes;
use rayon::prelude::*;

/// Rows per parallel task. Fixed, so `dw`'s partial sums always add up in the same order.
const ROWS: usize = 64;

/// Gradients of `y = x r w` with `r = 1 / sqrt(mean(x^2) + eps)` per row of `x: [n, h]`, given
/// `dy`: `dx = r (dy w) - x r^3 mean(dy w x)` and `dw = sum over rows of dy x r`.
pub fn backward(lanes: Lanes, x: &[f32], w: &[f32], dy: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let h = w.len();
    assert!(h > 0 && x.len() == dy.len() && x.len().is_multiple_of(h));
    let mut dx = super::zeroed::<f32>(x.len());
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(ROWS * h)
        .zip(x.par_chunks(ROWS * h).zip(dy.par_chunks(ROWS * h)))
        .map(|(dx, (x, dy))| {
            let mut dw = vec![0f32; h];
            #[cfg(target_arch = "x86_64")]
            if lanes == Lanes::AVX512 {
                // SAFETY: AVX-512F was detected (`Lanes::AVX512`).
                unsafe { rows_avx512(x, w, dy, eps, dx, &mut dw) };
                return dw;
            }
            let _ = lanes;
            rows(x, w, dy, eps, dx, &mut dw);
            dw
        })
        .collect();
    let mut dw = vec![0f32; h];
    for p in &partials {
        for (a, b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
    (dx, dw)
}

/// [`rows`], compiled with AVX-512F enabled.
///
/// # Safety
/// The CPU must have AVX-512F (the body is safe code).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512(x: &[f32], w: &[f32], dy: &[f32], eps: f32, dx: &mut [f32], dw: &mut [f32]) {
    // The plain loops below, compiled with AVX-512 enabled.
    rows(x, w, dy, eps, dx, dw)
}

/// Lanes of the row sums: independent accumulators the compiler keeps in vector registers.
const LANES: usize = 16;

#[inline(always)]
fn rows(x: &[f32], w: &[f32], dy: &[f32], eps: f32, dx: &mut [f32], dw: &mut [f32]) {
    let h = w.len();
    for ((x, dy), dx) in x
        .chunks_exact(h)
        .zip(dy.chunks_exact(h))
        .zip(dx.chunks_exact_mut(h))
    {
        let (mut ss, mut dot) = ([0f32; LANES], [0f32; LANES]);
        let whole = h - h % LANES;
        for c in (0..whole).step_by(LANES) {
            for l in 0..LANES {
                let (xv, gw) = (x[c + l], dy[c + l] * w[c + l]);
                ss[l] += xv * xv;
                dot[l] += gw * xv;
            }
        }
        for c in whole..h {
            ss[0] += x[c] * x[c];
            dot[0] += dy[c] * w[c] * x[c];
        }
        let (ss, dot): (f32, f32) = (ss.iter().sum(), dot.iter().sum());
        let r = 1.0 / (ss / h as f32 + eps).sqrt();
        let coef = r * r * r * dot / h as f32;
        for c in 0..h {
            dx[c] = dy[c] * w[c] * r - x[c] * coef;
            dw[c] += dy[c] * x[c] * r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backward_matches_f64() {
        for lanes in Lanes::all() {
            // h with and without a ragged tail; rows over several tasks with a short last one.
            for (n, h) in [(3, 5), (2 * ROWS + 7, 40), (ROWS, 576)] {
                let x: Vec<f32> = (0..n * h)
                    .map(|i| ((i * 37 % 1001) as f32 - 500.0) / 200.0)
                    .collect();
                let w: Vec<f32> = (0..h).map(|i| 0.5 + (i % 7) as f32 / 5.0).collect();
                let dy: Vec<f32> = (0..n * h)
                    .map(|i| ((i * 11 % 101) as f32 - 50.0) / 25.0)
                    .collect();
                let eps = 1e-5;
                let (dx, dw) = backward(lanes, &x, &w, &dy, eps);
                let mut want_dw = vec![0f64; h];
                for row in 0..n {
                    let xs = &x[row * h..(row + 1) * h];
                    let gs = &dy[row * h..(row + 1) * h];
                    let ms = xs.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / h as f64;
                    let r = 1.0 / (ms + eps as f64).sqrt();
                    let dot: f64 = (0..h)
                        .map(|c| gs[c] as f64 * w[c] as f64 * xs[c] as f64)
                        .sum();
                    for c in 0..h {
                        let want = gs[c] as f64 * w[c] as f64 * r
                            - xs[c] as f64 * r.powi(3) * dot / h as f64;
                        let got = dx[row * h + c] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{lanes:?} dx[{row},{c}]: {got} vs {want}"
                        );
                        want_dw[c] += gs[c] as f64 * xs[c] as f64 * r;
                    }
                }
                for c in 0..h {
                    let (got, want) = (dw[c] as f64, want_dw[c]);
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{lanes:?} dw[{c}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
