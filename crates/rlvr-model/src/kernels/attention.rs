//! Attention for decoding: a few new query positions per sequence against its KV cache. Each
//! (sequence, kv head) pair reads its keys and values once, straight from the cache's storage;
//! batched gemm over such thin matrices spent most of its time packing them.

use super::exp::exp_inplace_on;
use super::{Elem, Lanes};

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
pub fn decode<T: Elem>(
    lanes: Lanes,
    q: &[f32],
    k_cache: &[T],
    v_cache: &[T],
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
    super::team::for_each_chunk_mut(&mut out, group * l * hd, |task, dst| {
        let scores = &mut vec![0f32; group * l * total];
        let (b, kvh) = (task / kv_heads, task % kv_heads);
        let base = ((first + b) * kv_heads + kvh) * capacity * hd;
        let keys = &k_cache[base..base + total * hd];
        let values = &v_cache[base..base + total * hd];
        #[cfg(target_arch = "x86_64")]
        if lanes == Lanes::AVX512 && hd.is_multiple_of(16) {
            // The group's query rows, `[group, l, hd]`, are contiguous in `q` too.
            let q0 = (b * heads + kvh * group) * l * hd;
            let g = Group {
                q: &q[q0..q0 + group * l * hd],
                keys,
                values,
                mask: &mask[b * l * total..(b + 1) * l * total],
                l,
                scale,
            };
            // SAFETY: AVX-512F was detected (`Lanes::AVX512`).
            return unsafe { group_avx512(&g, scores, dst) };
        }
        let scores = &mut scores[..total];
        let (keys, values) = (super::elem::widened(keys), super::elem::widened(values));
        let (keys, values) = (&keys[..], &values[..]);
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
    });
    out
}

/// All query rows that read one kv head: `q: [rows, hd]`, row `r` at query position `r % l`,
/// whose additive mask row is `mask[(r % l) * total..]`.
#[cfg(target_arch = "x86_64")]
struct Group<'a, T> {
    q: &'a [f32],
    /// `[total, hd]` each.
    keys: &'a [T],
    values: &'a [T],
    /// `[l, total]`.
    mask: &'a [f32],
    l: usize,
    scale: f32,
}

/// Query rows handled together: each key and value row is loaded once for all of them, and
/// their accumulators (4 keys, or 4 vectors of output, per row) fit the 32 vector registers.
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 6;

/// `out = softmax(q k^T * scale + mask) v` for every row of a [`Group`], with
/// `scores: [rows * total]` scratch. `hd` must be a multiple of 16.
///
/// # Safety
/// The CPU must have AVX-512F; `g.keys` and `g.values` both hold exactly `total * hd` values,
/// with `total = g.mask.len() / g.l` and `hd` a multiple of 16 (short `scores` or `out` panic).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn group_avx512<T: Elem>(g: &Group<T>, scores: &mut [f32], out: &mut [f32]) {
    unsafe {
        let total = g.mask.len() / g.l;
        let hd = g.keys.len() / total;
        let rows = g.q.len() / hd;
        let scores = &mut scores[..rows * total];
        for r0 in (0..rows).step_by(ROWS) {
            let nr = ROWS.min(rows - r0);
            let q = &g.q[r0 * hd..(r0 + nr) * hd];
            let s = &mut scores[r0 * total..(r0 + nr) * total];
            match nr {
                6 => dots::<T, 6>(q, g.keys, hd, s),
                5 => dots::<T, 5>(q, g.keys, hd, s),
                4 => dots::<T, 4>(q, g.keys, hd, s),
                3 => dots::<T, 3>(q, g.keys, hd, s),
                2 => dots::<T, 2>(q, g.keys, hd, s),
                _ => dots::<T, 1>(q, g.keys, hd, s),
            }
        }
        for (r, row) in scores.chunks_exact_mut(total).enumerate() {
            let m = &g.mask[r % g.l * total..(r % g.l + 1) * total];
            softmax_row(row, m, g.scale);
        }
        for r0 in (0..rows).step_by(ROWS) {
            let nr = ROWS.min(rows - r0);
            let p = &scores[r0 * total..(r0 + nr) * total];
            let o = &mut out[r0 * hd..(r0 + nr) * hd];
            match nr {
                6 => weighted::<T, 6>(p, g.values, hd, o),
                5 => weighted::<T, 5>(p, g.values, hd, o),
                4 => weighted::<T, 4>(p, g.values, hd, o),
                3 => weighted::<T, 3>(p, g.values, hd, o),
                2 => weighted::<T, 2>(p, g.values, hd, o),
                _ => weighted::<T, 1>(p, g.values, hd, o),
            }
        }
    }
}

/// `s[r, t] = q[r] . keys[t]` for `R` rows. Four keys at a time: their 4R partial-sum vectors
/// are reduced together, one horizontal reduction per four dot products.
///
/// # Safety
/// The CPU must have AVX-512F; `hd` is a multiple of 16; `q` holds at least `R * hd` values and
/// `s` at least `R * total`, with `total = keys.len() / hd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn dots<T: Elem, const R: usize>(q: &[f32], keys: &[T], hd: usize, s: &mut [f32]) {
    unsafe {
        use std::arch::x86_64::*;
        let total = keys.len() / hd;
        let (qp, kp) = (q.as_ptr(), keys.as_ptr());
        let mut t = 0;
        let row_bytes = hd * std::mem::size_of::<T>();
        while t + 4 <= total {
            prefetch_rows(kp.add((t + 4) * hd).cast(), 4 * row_bytes);
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            for c in (0..hd).step_by(16) {
                let k: [__m512; 4] =
                    std::array::from_fn(|j| T::load16(kp.add((t + j) * hd + c), 16));
                for (r, a) in acc.iter_mut().enumerate() {
                    let qv = _mm512_loadu_ps(qp.add(r * hd + c));
                    for j in 0..4 {
                        a[j] = _mm512_fmadd_ps(qv, k[j], a[j]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let four = reduce4(a);
                _mm_storeu_ps(s.as_mut_ptr().add(r * total + t), four);
            }
            t += 4;
        }
        for t in t..total {
            for r in 0..R {
                let mut a = _mm512_setzero_ps();
                for c in (0..hd).step_by(16) {
                    let k = T::load16(kp.add(t * hd + c), 16);
                    a = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(r * hd + c)), k, a);
                }
                s[r * total + t] = _mm512_reduce_add_ps(a);
            }
        }
    }
}

/// How far ahead of its reads the attention kernel prefetches keys and values (into L2): the
/// cache of a long sequence is a stream the hardware prefetcher alone keeps too few misses of.
#[cfg(target_arch = "x86_64")]
const PREFETCH_BYTES: usize = 4096;

/// Prefetches the `bytes` that follow `PREFETCH_BYTES` after `p`. Safe for any `p`: addresses
/// are formed with `wrapping_add` and only prefetched, and prefetches never fault, so reaching
/// past the end of the cache is harmless.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_rows(p: *const u8, bytes: usize) {
    use std::arch::x86_64::*;
    for off in (0..bytes).step_by(64) {
        // SAFETY: a prefetch reads no memory and never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(PREFETCH_BYTES + off).cast()) };
    }
}

/// The lane sums of four vectors, as one 4-lane vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn reduce4(a: &[std::arch::x86_64::__m512; 4]) -> std::arch::x86_64::__m128 {
    use std::arch::x86_64::*;
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] and the same for c, d.
    let ab = _mm512_add_ps(
        _mm512_unpacklo_ps(a[0], a[1]),
        _mm512_unpackhi_ps(a[0], a[1]),
    );
    let cd = _mm512_add_ps(
        _mm512_unpacklo_ps(a[2], a[3]),
        _mm512_unpackhi_ps(a[2], a[3]),
    );
    // Per 128-bit lane: [a, b, c, d] partial sums.
    let abcd = _mm512_add_ps(
        _mm512_shuffle_ps::<0x44>(ab, cd),
        _mm512_shuffle_ps::<0xEE>(ab, cd),
    );
    // Sum the four 128-bit lanes.
    let v = _mm512_add_ps(abcd, _mm512_shuffle_f32x4::<0x4E>(abcd, abcd));
    let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0xB1>(v, v));
    _mm512_castps512_ps128(v)
}

/// `row = softmax(row * scale + mask)` in place.
///
/// # Safety
/// The CPU must have AVX-512F (the body calls `exp`'s AVX-512 path).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn softmax_row(row: &mut [f32], mask: &[f32], scale: f32) {
    // 16 running maxima: one serial `max` chain would not vectorize.
    let mut maxes = [f32::NEG_INFINITY; 16];
    for (rc, mc) in row.chunks_mut(16).zip(mask.chunks(16)) {
        for ((s, &m), mx) in rc.iter_mut().zip(mc).zip(maxes.iter_mut()) {
            *s = *s * scale + m;
            *mx = mx.max(*s);
        }
    }
    let max = maxes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    row.iter_mut().for_each(|s| *s -= max);
    exp_inplace_on(Lanes::AVX512, row);
    let inv = 1.0 / sum16(row);
    row.iter_mut().for_each(|s| *s *= inv);
}

/// A sum with 16 independent partial sums (a plain `sum` is one serial chain).
#[inline(always)]
fn sum16(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `o[r] = sum_t p[r, t] values[t]` for `R` rows, 64 output columns (four vectors) at a time.
///
/// # Safety
/// The CPU must have AVX-512F; with `total = values.len() / hd`, `p` holds at least `R * total`
/// values and `o` at least `R * hd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn weighted<T: Elem, const R: usize>(p: &[f32], values: &[T], hd: usize, o: &mut [f32]) {
    unsafe {
        use std::arch::x86_64::*;
        let total = values.len() / hd;
        let vp = values.as_ptr();
        let row_bytes = hd * std::mem::size_of::<T>();
        for c0 in (0..hd).step_by(64) {
            let nv = ((hd - c0) / 16).min(4);
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            for t in 0..total {
                if c0 == 0 {
                    prefetch_rows(vp.add(t * hd).cast(), row_bytes);
                }
                let v: [__m512; 4] = std::array::from_fn(|j| {
                    if j < nv {
                        T::load16(vp.add(t * hd + c0 + 16 * j), 16)
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                for (r, a) in acc.iter_mut().enumerate() {
                    let pv = _mm512_set1_ps(*p.get_unchecked(r * total + t));
                    for j in 0..nv {
                        a[j] = _mm512_fmadd_ps(pv, v[j], a[j]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                for (j, v) in a.iter().enumerate().take(nv) {
                    _mm512_storeu_ps(o.as_mut_ptr().add(r * hd + c0 + 16 * j), *v);
                }
            }
        }
    }
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
    if lanes == Lanes::AVX512 {
        // SAFETY: AVX-512F was detected.
        return unsafe { attend_avx512(r, scores, out) };
    }
    attend_body(lanes, r, scores, out)
}

/// [`attend_body`], compiled with AVX-512F enabled.
///
/// # Safety
/// The CPU must have AVX-512F (the body is safe code).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn attend_avx512(r: &Row, scores: &mut [f32], out: &mut [f32]) {
    attend_body(Lanes::AVX512, r, scores, out)
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
        // head_dim 12: the per-row path; 32 and 64: the grouped AVX-512 path, with groups of
        // 3, 6 and 8 query rows (more than one block of rows) and key counts off a multiple of 4.
        for (heads, kv_heads, head_dim, l, total) in [
            (6, 2, 12, 2, 7),
            (6, 2, 64, 1, 13),
            (9, 3, 64, 2, 7),
            (8, 2, 32, 2, 9),
            (4, 4, 80, 1, 4),
        ] {
            let s = DecodeShape {
                n: 2,
                heads,
                kv_heads,
                head_dim,
                l,
                first: 1,
                capacity: total + 2,
                total,
            };
            for lanes in Lanes::all() {
                check(lanes, s, false);
                check(lanes, s, true);
            }
        }
    }

    /// With `bf16`, the cache holds bf16 keys and values, and the reference uses those values.
    fn check(lanes: Lanes, s: DecodeShape, bf16: bool) {
        let f = |i: usize, a: usize, b: usize| ((i * a % b) as f32 - b as f32 / 2.0) / b as f32;
        let slots = s.first + s.n + 1;
        let cache_len = slots * s.kv_heads * s.capacity * s.head_dim;
        let mut k: Vec<f32> = (0..cache_len).map(|i| f(i, 7, 19)).collect();
        let mut v: Vec<f32> = (0..cache_len).map(|i| f(i, 5, 23)).collect();
        let q: Vec<f32> = (0..s.n * s.heads * s.l * s.head_dim)
            .map(|i| f(i, 3, 17))
            .collect();
        // Causal over the new positions, and sequence 1 is shorter: its first two positions
        // are masked (left padding).
        let mut mask = vec![0f32; s.n * s.l * s.total];
        for b in 0..s.n {
            for li in 0..s.l {
                let row = &mut mask[(b * s.l + li) * s.total..(b * s.l + li + 1) * s.total];
                row[s.total - s.l + li + 1..].fill(-1e30);
                if b == 1 {
                    row[..2].fill(-1e30);
                }
            }
        }
        let scale = 0.3;
        let got = if bf16 {
            let round = |x: &[f32]| -> Vec<half::bf16> {
                x.iter().map(|v| half::bf16::from_f32(*v)).collect()
            };
            let (kb, vb) = (round(&k), round(&v));
            let got = decode(lanes, &q, &kb, &vb, &mask, s, scale);
            k = kb.iter().map(|v| v.to_f32()).collect();
            v = vb.iter().map(|v| v.to_f32()).collect();
            got
        } else {
            decode(lanes, &q, &k, &v, &mask, s, scale)
        };
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
