//! The softmax over the vocabulary for training, row by row in two passes over the logits (the
//! composite tensor version made about fifteen, each a full `[rows, vocab]` temporary):
//! log-prob of the label, entropy and log-sum-exp forward, and the gradient w.r.t. the logits.
//! Rows run in parallel; lanes with AVX-512F.

#[cfg(target_arch = "x86_64")]
use super::exp::{exp16, tail_mask};
use super::Lanes;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Per-row results of [`forward`].
pub struct RowStats {
    pub logprob: Vec<f32>,
    pub entropy: Vec<f32>,
    pub lse: Vec<f32>,
}

/// For each row `l` of `logits` (`[rows, v]`, raw) with `z = l / t`: `log softmax(z)[label]`,
/// the entropy of `softmax(z)` and `logsumexp(z)`.
pub fn forward(lanes: Lanes, logits: &[f32], v: usize, labels: &[u32], inv_t: f32) -> RowStats {
    let rows = labels.len();
    assert_eq!(logits.len(), rows * v);
    let stats: Vec<(f32, f32, f32)> = logits
        .par_chunks(v)
        .zip(labels.par_iter())
        .map(|(row, &label)| {
            let (m, s, w) = row_sums(lanes, row, inv_t);
            let lse = m + s.ln();
            let logprob = row[label as usize] * inv_t - lse;
            (logprob, lse - w / s, lse)
        })
        .collect();
    RowStats {
        logprob: stats.iter().map(|s| s.0).collect(),
        entropy: stats.iter().map(|s| s.1).collect(),
        lse: stats.iter().map(|s| s.2).collect(),
    }
}

/// Gradient w.r.t. the raw logits of `sum g_lp * logprob + g_ent * entropy`, given the forward's
/// `lse` and `entropy` per row: `(g_lp (onehot - p) - g_ent p (z - E_p[z])) / t`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    lanes: Lanes,
    logits: &[f32],
    v: usize,
    labels: &[u32],
    inv_t: f32,
    lse: &[f32],
    entropy: &[f32],
    g_lp: &[f32],
    g_ent: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = super::zeroed::<f32>(logits.len());
    out.par_chunks_mut(v)
        .zip(logits.par_chunks(v))
        .enumerate()
        .for_each(|(r, (dst, row))| {
            let c = RowGrad {
                inv_t,
                lse: lse[r],
                // E_p[z] = lse - entropy.
                mean_z: lse[r] - entropy[r],
                g_lp: g_lp[r],
                g_ent: g_ent.map_or(0.0, |g| g[r]),
            };
            row_grad(lanes, row, dst, c);
            dst[labels[r] as usize] += g_lp[r] * inv_t;
        });
    out
}

/// `(max z, sum e^(z - max), sum e^(z - max) z)` of `z = row * inv_t`.
fn row_sums(lanes: Lanes, row: &[f32], inv_t: f32) -> (f32, f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if lanes == Lanes::AVX512 {
        // SAFETY: AVX-512F checked above.
        return unsafe { row_sums_avx512(row, inv_t) };
    }
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) * inv_t;
    let (mut s, mut w) = (0f32, 0f32);
    for &l in row {
        let z = l * inv_t;
        let e = (z - m).exp();
        s += e;
        w += e * z;
    }
    (m, s, w)
}

/// One row's constants for its gradient.
#[derive(Clone, Copy)]
struct RowGrad {
    inv_t: f32,
    lse: f32,
    /// `E_p[z]`.
    mean_z: f32,
    g_lp: f32,
    g_ent: f32,
}

fn row_grad(lanes: Lanes, row: &[f32], dst: &mut [f32], c: RowGrad) {
    #[cfg(target_arch = "x86_64")]
    if lanes == Lanes::AVX512 {
        // SAFETY: AVX-512F checked above; `dst` and `row` have the same length.
        return unsafe { row_grad_avx512(row, dst, c) };
    }
    for (d, &l) in dst.iter_mut().zip(row) {
        let z = l * c.inv_t;
        let p = (z - c.lse).exp();
        *d = (-c.g_lp * p - c.g_ent * p * (z - c.mean_z)) * c.inv_t;
    }
}

/// [`row_sums`], 16 lanes at a time.
///
/// # Safety
/// The CPU must have AVX-512F (loads are masked to `row`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_sums_avx512(row: &[f32], inv_t: f32) -> (f32, f32, f32) {
    unsafe {
        let n = row.len();
        let p = row.as_ptr();
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i < n {
            let k = tail_mask(n - i);
            mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, k, p.add(i)));
            i += 16;
        }
        let m = _mm512_reduce_max_ps(mx) * inv_t;
        let (vm, vt) = (_mm512_set1_ps(m), _mm512_set1_ps(inv_t));
        let (mut s, mut w) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        i = 0;
        while i < n {
            let k = tail_mask(n - i);
            let z = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p.add(i)), vt);
            let e = _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(z, vm)));
            s = _mm512_add_ps(s, e);
            w = _mm512_fmadd_ps(e, z, w);
            i += 16;
        }
        (m, _mm512_reduce_add_ps(s), _mm512_reduce_add_ps(w))
    }
}

/// [`row_grad`], 16 lanes at a time.
///
/// # Safety
/// The CPU must have AVX-512F; `dst` is at least as long as `row`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_grad_avx512(row: &[f32], dst: &mut [f32], c: RowGrad) {
    unsafe {
        let n = row.len();
        let (p, q) = (row.as_ptr(), dst.as_mut_ptr());
        let vt = _mm512_set1_ps(c.inv_t);
        let vl = _mm512_set1_ps(c.lse);
        let vmz = _mm512_set1_ps(c.mean_z);
        let ng = _mm512_set1_ps(-c.g_lp * c.inv_t);
        let nge = _mm512_set1_ps(-c.g_ent * c.inv_t);
        let mut i = 0;
        while i < n {
            let k = tail_mask(n - i);
            let z = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p.add(i)), vt);
            let pr = exp16(_mm512_sub_ps(z, vl));
            // -g_lp p / t - g_ent p (z - mean_z) / t
            let d = _mm512_fmadd_ps(
                _mm512_mul_ps(nge, pr),
                _mm512_sub_ps(z, vmz),
                _mm512_mul_ps(ng, pr),
            );
            _mm512_mask_storeu_ps(q.add(i), k, d);
            i += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(row: &[f32], label: usize, t: f64) -> (f64, f64, f64, Vec<f64>) {
        let z: Vec<f64> = row.iter().map(|&l| l as f64 / t).collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        let p: Vec<f64> = z.iter().map(|x| (x - lse).exp()).collect();
        let ent = -p.iter().zip(&z).map(|(p, z)| p * (z - lse)).sum::<f64>();
        (z[label] - lse, ent, lse, p)
    }

    #[test]
    fn forward_and_gradient_match_f64_for_every_tail_length() {
        for lanes in Lanes::all() {
            check(lanes);
        }
    }

    fn check(lanes: Lanes) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for v in [1, 5, 16, 33, 1000] {
            let rows = 3;
            let logits: Vec<f32> = (0..rows * v)
                .map(|_| rng.gen::<f32>() * 20.0 - 10.0)
                .collect();
            let labels: Vec<u32> = (0..rows).map(|r| ((r * 7) % v) as u32).collect();
            let (t, g_lp, g_ent) = (0.7, [0.3f32, -1.2, 2.0], [0.5f32, 0.0, -0.25]);
            let st = forward(lanes, &logits, v, &labels, 1.0 / t as f32);
            let grad = backward(
                lanes,
                &logits,
                v,
                &labels,
                1.0 / t as f32,
                &st.lse,
                &st.entropy,
                &g_lp,
                Some(&g_ent),
            );
            for r in 0..rows {
                let row = &logits[r * v..(r + 1) * v];
                let (lp, ent, lse, p) = reference(row, labels[r] as usize, t);
                assert!((st.logprob[r] as f64 - lp).abs() < 1e-5, "v={v} lp");
                assert!((st.entropy[r] as f64 - ent).abs() < 1e-5, "v={v} entropy");
                assert!((st.lse[r] as f64 - lse).abs() < 1e-5, "v={v} lse");
                let mean_z = lse - ent;
                for i in 0..v {
                    let z = row[i] as f64 / t;
                    let onehot = (i == labels[r] as usize) as u8 as f64;
                    let want = (g_lp[r] as f64 * (onehot - p[i])
                        - g_ent[r] as f64 * p[i] * (z - mean_z))
                        / t;
                    let got = grad[r * v + i] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "v={v} row {r} col {i}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
