//! Attention for decoding: a few new query positions per sequence against its KV cache. Each
//! (sequence, kv head) pair reads its keys and values once, straight from the cache's storage;
//! batched gemm over such thin matrices spent most of its time packing them.

use super::exp::{exp_inplace_on, Lanes};
use rayon::prelude::*;

/// Shapes of one call. The cache holds `[slots, kv_heads, capacity, head_dim]` per layer; the
/// sequences are slots `first..first + n`, each reading its first `total` positions.
#[derive(Debug, Clone, Copy)]
pub struct DecodeShape {
    pub n: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Query positions per sequence.
    pub l: usize,
    pub first: usize,
    pub capacity: usize,
    pub total: usize,
}

/// `softmax(q k^T * scale + mask) v` for `q: [n, heads, l, head_dim]` and the additive
/// `mask: [n, l, total]`; returns `[n, heads, l, head_dim]`. Query head `h` reads kv head
/// `h / (heads / kv_heads)`.
pub fn decode(
    lanes: Lanes,
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    mask: &[f32],
    s: DecodeShape,
    scale: f32,
) -> Vec<f32> {
    let DecodeShape {
        n,
        heads,
        kv_heads,
        head_dim: hd,
        l,
        first,
        capacity,
        total,
    } = s;
    assert_eq!(q.len(), n * heads * l * hd);
    assert_eq!(mask.len(), n * l * total);
    assert!(total <= capacity && k_cache.len() >= (first + n) * kv_heads * capacity * hd);
    let group = heads / kv_heads;
    let mut out = vec![0f32; q.len()];
    // One task per (sequence, kv head): its group of query heads is contiguous in `out`.
    out.par_chunks_mut(group * l * hd)
        .enumerate()
        .for_each_init(
            || vec![0f32; total],
            |scores, (task, dst)| {
                let (b, kvh) = (task / kv_heads, task % kv_heads);
                let base = ((first + b) * kv_heads + kvh) * capacity * hd;
                let keys = &k_cache[base..base + total * hd];
                let values = &v_cache[base..base + total * hd];
                for gi in 0..group {
                    for li in 0..l {
                        let h = kvh * group + gi;
                        let qo = ((b * heads + h) * l + li) * hd;
                        let qv = &q[qo..qo + hd];
                        let m = &mask[(b * l + li) * total..(b * l + li + 1) * total];
                        let row = &mut dst[(gi * l + li) * hd..(gi * l + li + 1) * hd];
                        let r = Row {
                            q: qv,
                            keys,
                            values,
                            mask: m,
                            scale,
                        };
                        attend(lanes, &r, scores, row);
                    }
                }
            },
        );
    out
}

/// One query row and what it attends over.
struct Row<'a> {
    q: &'a [f32],
    /// `[total, hd]` each.
    keys: &'a [f32],
    values: &'a [f32],
    mask: &'a [f32],
    scale: f32,
}

/// `out = softmax(q k^T * scale + mask) v` with `scores: [total]` scratch: the plain loops of
/// [`attend_body`], compiled once more with AVX-512 enabled (the compiler vectorizes them 16
/// wide) for CPUs that have it.
fn attend(lanes: Lanes, r: &Row, scores: &mut [f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if lanes == Lanes::Avx512 {
        // SAFETY: AVX-512F was detected.
        return unsafe { attend_avx512(r, scores, out) };
    }
    attend_body(lanes, r, scores, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn attend_avx512(r: &Row, scores: &mut [f32], out: &mut [f32]) {
    attend_body(Lanes::Avx512, r, scores, out)
}

#[inline(always)]
fn attend_body(lanes: Lanes, r: &Row, scores: &mut [f32], out: &mut [f32]) {
    let Row {
        q,
        keys,
        values,
        mask,
        scale,
    } = *r;
    let hd = q.len();
    let mut max = f32::NEG_INFINITY;
    for ((s, k), &m) in scores.iter_mut().zip(keys.chunks_exact(hd)).zip(mask) {
        *s = dot(q, k) * scale + m;
        max = max.max(*s);
    }
    scores.iter_mut().for_each(|s| *s -= max);
    exp_inplace_on(lanes, scores);
    let inv = 1.0 / scores.iter().sum::<f32>();
    out.fill(0.0);
    for (&p, v) in scores.iter().zip(values.chunks_exact(hd)) {
        let p = p * inv;
        for (o, &x) in out.iter_mut().zip(v) {
            *o += p * x;
        }
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums let the compiler keep independent vector accumulators.
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_masked_softmax_attention() {
        for lanes in Lanes::all() {
            check(lanes);
        }
    }

    fn check(lanes: Lanes) {
        let s = DecodeShape {
            n: 2,
            heads: 6,
            kv_heads: 2,
            head_dim: 12,
            l: 2,
            first: 1,
            capacity: 9,
            total: 7,
        };
        let f = |i: usize, a: usize, b: usize| ((i * a % b) as f32 - b as f32 / 2.0) / b as f32;
        let slots = s.first + s.n + 1;
        let cache_len = slots * s.kv_heads * s.capacity * s.head_dim;
        let k: Vec<f32> = (0..cache_len).map(|i| f(i, 7, 19)).collect();
        let v: Vec<f32> = (0..cache_len).map(|i| f(i, 5, 23)).collect();
        let q: Vec<f32> = (0..s.n * s.heads * s.l * s.head_dim)
            .map(|i| f(i, 3, 17))
            .collect();
        // Sequence 1 is shorter: its last two positions are masked.
        let mut mask = vec![0f32; s.n * s.l * s.total];
        for li in 0..s.l {
            let row = (s.l + li) * s.total;
            mask[row + s.total - 2..row + s.total].fill(-1e30);
        }
        let scale = 0.3;
        let got = decode(lanes, &q, &k, &v, &mask, s, scale);
        let hd = s.head_dim;
        let group = s.heads / s.kv_heads;
        for b in 0..s.n {
            for h in 0..s.heads {
                for li in 0..s.l {
                    let base = ((s.first + b) * s.kv_heads + h / group) * s.capacity * hd;
                    let qo = ((b * s.heads + h) * s.l + li) * hd;
                    let z: Vec<f64> = (0..s.total)
                        .map(|t| {
                            let d: f64 = (0..hd)
                                .map(|i| q[qo + i] as f64 * k[base + t * hd + i] as f64)
                                .sum();
                            d * scale as f64 + mask[(b * s.l + li) * s.total + t] as f64
                        })
                        .collect();
                    let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = z.iter().map(|z| (z - mx).exp()).sum();
                    for i in 0..hd {
                        let want: f64 = (0..s.total)
                            .map(|t| (z[t] - mx).exp() / sum * v[base + t * hd + i] as f64)
                            .sum();
                        let g = got[qo + i] as f64;
                        assert!(
                            (g - want).abs() < 1e-5,
                            "b{b} h{h} l{li} i{i}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
