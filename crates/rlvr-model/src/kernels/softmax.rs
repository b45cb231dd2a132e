//! Attention's softmax: `softmax(scores * scale + mask)` row by row, and its backward
//! `scale * p * (dp - sum(p dp))`, each one pass over memory (a row of keys stays in L1).

#[cfg(target_arch = "x86_64")]
use super::exp::{exp16, tail_mask};
use super::Lanes;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `scores: [rows, t]`, replaced in place by `softmax(scores * scale + mask)` row by row (no
/// second buffer of rows x t: attention's are the largest tensors of a step); row `r` adds the
/// additive mask row `mask_row(r)` of `mask: [_, t]`.
pub fn masked_softmax(
    lanes: Lanes,
    scores: &mut [f32],
    t: usize,
    scale: f32,
    mask: &[f32],
    mask_row: impl Fn(usize) -> usize + Sync,
) {
    scores.par_chunks_mut(t).enumerate().for_each(|(r, p)| {
        let m = &mask[mask_row(r) * t..(mask_row(r) + 1) * t];
        #[cfg(target_arch = "x86_64")]
        if lanes == Lanes::AVX512 {
            // SAFETY: AVX-512F was detected; both rows have length t.
            return unsafe { softmax_row_avx512(p, m, scale) };
        }
        let mut max = f32::NEG_INFINITY;
        for (p, &m) in p.iter_mut().zip(m) {
            *p = *p * scale + m;
            max = max.max(*p);
        }
        let mut sum = 0.0;
        for p in p.iter_mut() {
            *p = (*p - max).exp();
            sum += *p;
        }
        let inv = 1.0 / sum;
        p.iter_mut().for_each(|p| *p *= inv);
    });
}

/// `dp` replaced in place by the gradient w.r.t. the unscaled scores of the softmax above:
/// `scale * p * (dp - sum(p dp))` per row.
pub fn softmax_backward(lanes: Lanes, p: &[f32], dp: &mut [f32], t: usize, scale: f32) {
    assert_eq!(p.len(), dp.len());
    dp.par_chunks_mut(t)
        .zip(p.par_chunks(t))
        .for_each(|(dp, p)| {
            #[cfg(target_arch = "x86_64")]
            if lanes == Lanes::AVX512 {
                // SAFETY: AVX-512F was detected; both rows have length t.
                return unsafe { softmax_grad_row_avx512(p, dp, scale) };
            }
            let dot: f32 = p.iter().zip(dp.iter()).map(|(a, b)| a * b).sum();
            for (g, &p) in dp.iter_mut().zip(p) {
                *g = scale * p * (*g - dot);
            }
        });
}

/// `p = softmax(p * scale + m)` for one row in place, 16 lanes at a time.
///
/// # Safety
/// The CPU must have AVX-512F; `m` is at least as long as `p`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_row_avx512(p: &mut [f32], m: &[f32], scale: f32) {
    unsafe {
        let n = p.len();
        let vs = _mm512_set1_ps(scale);
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i < n {
            let k = tail_mask(n - i);
            let z = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(k, p.as_ptr().add(i)),
                vs,
                _mm512_maskz_loadu_ps(k, m.as_ptr().add(i)),
            );
            _mm512_mask_storeu_ps(p.as_mut_ptr().add(i), k, z);
            mx = _mm512_mask_max_ps(mx, k, mx, z);
            i += 16;
        }
        let vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        let mut sum = _mm512_setzero_ps();
        i = 0;
        while i < n {
            let k = tail_mask(n - i);
            let e = exp16(_mm512_sub_ps(
                _mm512_maskz_loadu_ps(k, p.as_ptr().add(i)),
                vmax,
            ));
            let e = _mm512_maskz_mov_ps(k, e);
            _mm512_mask_storeu_ps(p.as_mut_ptr().add(i), k, e);
            sum = _mm512_add_ps(sum, e);
            i += 16;
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
        i = 0;
        while i < n {
            let k = tail_mask(n - i);
            let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p.as_ptr().add(i)), inv);
            _mm512_mask_storeu_ps(p.as_mut_ptr().add(i), k, v);
            i += 16;
        }
    }
}

/// `dp = scale * p * (dp - sum(p dp))` for one row in place, 16 lanes at a time.
///
/// # Safety
/// The CPU must have AVX-512F; `dp` is at least as long as `p`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_grad_row_avx512(p: &[f32], dp: &mut [f32], scale: f32) {
    unsafe {
        let n = p.len();
        let mut dot = _mm512_setzero_ps();
        let mut i = 0;
        while i < n {
            let k = tail_mask(n - i);
            dot = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(k, p.as_ptr().add(i)),
                _mm512_maskz_loadu_ps(k, dp.as_ptr().add(i)),
                dot,
            );
            i += 16;
        }
        let vdot = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
        let vs = _mm512_set1_ps(scale);
        i = 0;
        while i < n {
            let k = tail_mask(n - i);
            let pv = _mm512_maskz_loadu_ps(k, p.as_ptr().add(i));
            let g = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, dp.as_ptr().add(i)), vdot);
            _mm512_mask_storeu_ps(
                dp.as_mut_ptr().add(i),
                k,
                _mm512_mul_ps(_mm512_mul_ps(pv, g), vs),
            );
            i += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_its_gradient_match_f64_with_masks() {
        for lanes in Lanes::all() {
            for t in [1, 7, 16, 40] {
                check(lanes, t);
            }
        }
    }

    fn check(lanes: Lanes, t: usize) {
        let rows = 6;
        let scores: Vec<f32> = (0..rows * t)
            .map(|i| ((i * 29 % 83) as f32 - 41.0) / 7.0)
            .collect();
        // Two mask rows: causal-like (keys after the row masked) and none; rows alternate.
        let mut mask = vec![0f32; 2 * t];
        mask[t / 2 + 1..t].fill(-1e30);
        let dp: Vec<f32> = (0..rows * t)
            .map(|i| ((i * 13 % 31) as f32 - 15.0) / 9.0)
            .collect();
        let scale = 0.125;
        let mut p = scores.clone();
        masked_softmax(lanes, &mut p, t, scale, &mask, |r| r % 2);
        let mut ds = dp.clone();
        softmax_backward(lanes, &p, &mut ds, t, scale);
        for r in 0..rows {
            let m = &mask[(r % 2) * t..(r % 2 + 1) * t];
            let z: Vec<f64> = (0..t)
                .map(|j| scores[r * t + j] as f64 * scale as f64 + m[j] as f64)
                .collect();
            let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = z.iter().map(|z| (z - mx).exp()).sum();
            let want: Vec<f64> = z.iter().map(|z| (z - mx).exp() / sum).collect();
            let dot: f64 = (0..t).map(|j| want[j] * dp[r * t + j] as f64).sum();
            for j in 0..t {
                let got = p[r * t + j] as f64;
                assert!(
                    (got - want[j]).abs() < 1e-6,
                    "t={t} p[{r},{j}]: {got} vs {}",
                    want[j]
                );
                let g = scale as f64 * want[j] * (dp[r * t + j] as f64 - dot);
                assert!((ds[r * t + j] as f64 - g).abs() < 1e-6, "t={t} ds[{r},{j}]");
            }
        }
    }
}
