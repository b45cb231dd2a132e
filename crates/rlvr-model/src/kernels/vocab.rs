//! The softmax over the vocabulary for training, row by row in two passes over the logits (the
//! composite tensor version made about fifteen, each a full `[rows, vocab]` temporary):
//! log-prob of the label, entropy and log-sum-exp forward, and the gradient w.r.t. the logits.
//! The logits may come a slice of the vocabulary at a time (the output head never holds a whole
//! `[rows, vocab]` block): the forward keeps running sums per row, the backward needs only the
//! forward's per-row results. Rows run in parallel; lanes with AVX-512F.

#[cfg(target_arch = "x86_64")]
use super::exp::{exp16, tail_mask};
use super::Lanes;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Per-row results of [`RowSums::finish`].
pub struct RowStats {
    pub logprob: Vec<f32>,
    pub entropy: Vec<f32>,
    pub lse: Vec<f32>,
}

/// For each row `l` of logits (raw) with `z = l / t`: `log softmax(z)[label]`, the entropy of
/// `softmax(z)` and `logsumexp(z)`, from the row's columns in slices ([`RowSums::add`]): per row
/// the running `max z`, `sum e^(z - max)`, `sum e^(z - max) z` and the label's `z`.
pub struct RowSums {
    rows: Vec<(f32, f32, f32)>,
    label_z: Vec<f32>,
}

impl RowSums {
    pub fn new(rows: usize) -> Self {
        Self {
            rows: vec![(f32::NEG_INFINITY, 0.0, 0.0); rows],
            label_z: vec![f32::NAN; rows],
        }
    }

    /// Takes in columns `first..first + cols` of every row: `logits` is `[rows, cols]`.
    pub fn add(
        &mut self,
        lanes: Lanes,
        logits: &[f32],
        cols: usize,
        first: usize,
        labels: &[u32],
        inv_t: f32,
    ) {
        assert_eq!(labels.len(), self.rows.len());
        assert_eq!(logits.len(), labels.len() * cols);
        if cols == 0 {
            return;
        }
        self.rows
            .par_iter_mut()
            .zip(self.label_z.par_iter_mut())
            .zip(logits.par_chunks(cols).zip(labels.par_iter()))
            .for_each(|((acc, label_z), (row, &label))| {
                let (m, s, w) = row_sums(lanes, row, inv_t);
                // Both sums rescaled to the larger maximum (the first slice has no sums yet).
                let top = acc.0.max(m);
                let (a, b) = if acc.0 == f32::NEG_INFINITY {
                    (0.0, 1.0)
                } else {
                    ((acc.0 - top).exp(), (m - top).exp())
                };
                *acc = (top, acc.1 * a + s * b, acc.2 * a + w * b);
                if let Some(i) = (label as usize).checked_sub(first).filter(|&i| i < cols) {
                    *label_z = row[i] * inv_t;
                }
            });
    }

    /// The rows' log-probs, entropies and log-sum-exps; a row whose label no slice held gets a
    /// NaN log-prob.
    pub fn finish(self) -> RowStats {
        let (mut logprob, mut entropy, mut lse) = (Vec::new(), Vec::new(), Vec::new());
        for ((m, s, w), z) in self.rows.into_iter().zip(self.label_z) {
            let l = m + s.ln();
            logprob.push(z - l);
            entropy.push(l - w / s);
            lse.push(l);
        }
        RowStats {
            logprob,
            entropy,
            lse,
        }
    }
}

/// Replaces `logits` (`[rows, cols]`, raw, columns `first..first + cols` of the vocabulary) by
/// the gradient w.r.t. them of `sum g_lp * logprob + g_ent * entropy`, given the forward's `lse`
/// and `entropy` per row: `(g_lp (onehot - p) - g_ent p (z - E_p[z])) / t`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    lanes: Lanes,
    logits: &mut [f32],
    cols: usize,
    first: usize,
    labels: &[u32],
    inv_t: f32,
    lse: &[f32],
    entropy: &[f32],
    g_lp: &[f32],
    g_ent: Option<&[f32]>,
) {
    assert_eq!(logits.len(), labels.len() * cols);
    if cols == 0 {
        return;
    }
    logits
        .par_chunks_mut(cols)
        .enumerate()
        .for_each(|(r, row)| {
            let c = RowGrad {
                inv_t,
                lse: lse[r],
                // E_p[z] = lse - entropy.
                mean_z: lse[r] - entropy[r],
                g_lp: g_lp[r],
                g_ent: g_ent.map_or(0.0, |g| g[r]),
            };
            row_grad(lanes, row, c);
            if let Some(i) = (labels[r] as usize)
                .checked_sub(first)
                .filter(|&i| i < cols)
            {
                row[i] += g_lp[r] * inv_t;
            }
        });
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

/// Overwrites each raw logit of `row` with its gradient.
fn row_grad(lanes: Lanes, row: &mut [f32], c: RowGrad) {
    #[cfg(target_arch = "x86_64")]
    if lanes == Lanes::AVX512 {
        // SAFETY: AVX-512F checked above.
        return unsafe { row_grad_avx512(row, c) };
    }
    for d in row.iter_mut() {
        let z = *d * c.inv_t;
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
/// The CPU must have AVX-512F (loads and stores are masked to `row`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_grad_avx512(row: &mut [f32], c: RowGrad) {
    unsafe {
        let n = row.len();
        let q = row.as_mut_ptr();
        let vt = _mm512_set1_ps(c.inv_t);
        let vl = _mm512_set1_ps(c.lse);
        let vmz = _mm512_set1_ps(c.mean_z);
        let ng = _mm512_set1_ps(-c.g_lp * c.inv_t);
        let nge = _mm512_set1_ps(-c.g_ent * c.inv_t);
        let mut i = 0;
        while i < n {
            let k = tail_mask(n - i);
            let z = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, q.add(i)), vt);
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
    fn forward_and_gradient_match_f64_for_every_tail_length_and_slicing() {
        for lanes in Lanes::all() {
            check(lanes);
        }
    }

    /// The columns `c0..c1` of `[rows, v]` logits, row-major.
    fn columns(logits: &[f32], v: usize, c0: usize, c1: usize) -> Vec<f32> {
        logits
            .chunks(v)
            .flat_map(|row| row[c0..c1].iter().copied())
            .collect()
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
            let inv_t = 1.0 / t as f32;
            // Whole rows, then slices of 1, 7 and 16 columns (each label in one of them).
            for width in [v, 1, 7, 16] {
                let slices: Vec<(usize, usize)> = (0..v)
                    .step_by(width)
                    .map(|c0| (c0, (c0 + width).min(v)))
                    .collect();
                let mut sums = RowSums::new(rows);
                for &(c0, c1) in &slices {
                    let part = columns(&logits, v, c0, c1);
                    sums.add(lanes, &part, c1 - c0, c0, &labels, inv_t);
                }
                let st = sums.finish();
                let mut grad = vec![0f32; rows * v];
                for &(c0, c1) in &slices {
                    let mut part = columns(&logits, v, c0, c1);
                    let g_ent = Some(&g_ent[..]);
                    let (lse, ent) = (&st.lse, &st.entropy);
                    backward(
                        lanes,
                        &mut part,
                        c1 - c0,
                        c0,
                        &labels,
                        inv_t,
                        lse,
                        ent,
                        &g_lp,
                        g_ent,
                    );
                    for (r, got) in part.chunks(c1 - c0).enumerate() {
                        grad[r * v + c0..r * v + c1].copy_from_slice(got);
                    }
                }
                for r in 0..rows {
                    let row = &logits[r * v..(r + 1) * v];
                    let (lp, ent, lse, p) = reference(row, labels[r] as usize, t);
                    let at = format!("v={v} width {width} row {r}");
                    // f32 sums: relative 1e-5 (a thousand one-column slices are a thousand
                    // sequential additions).
                    let close = |got: f32, want: f64| {
                        (got as f64 - want).abs() < 1e-5 * want.abs().max(1.0)
                    };
                    assert!(
                        close(st.logprob[r], lp),
                        "{at}: lp {} vs {lp}",
                        st.logprob[r]
                    );
                    assert!(
                        close(st.entropy[r], ent),
                        "{at}: entropy {} vs {ent}",
                        st.entropy[r]
                    );
                    assert!(close(st.lse[r], lse), "{at}: lse {} vs {lse}", st.lse[r]);
                    let mean_z = lse - ent;
                    for i in 0..v {
                        let z = row[i] as f64 / t;
                        let onehot = (i == labels[r] as usize) as u8 as f64;
                        let want = (g_lp[r] as f64 * (onehot - p[i])
                            - g_ent[r] as f64 * p[i] * (z - mean_z))
                            / t;
                        let got = grad[r * v + i] as f64;
                        assert!((got - want).abs() < 1e-5, "{at} col {i}: {got} vs {want}");
                    }
                }
            }
        }
    }
}
