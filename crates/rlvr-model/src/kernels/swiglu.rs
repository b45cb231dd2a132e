//! SwiGLU, `silu(gate) * up`, and its backward in one pass each (chunks in parallel).

#[cfg(target_arch = "x86_64")]
use super::exp::{exp16, tail_mask};
use super::Lanes;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

const CHUNK: usize = 1 << 14;

/// `silu(gate) * up`.
pub fn forward(lanes: Lanes, gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len());
    let mut out = super::zeroed::<f32>(gate.len());
    super::team::for_each_chunk_mut(&mut out, CHUNK, |i, y| {
        let span = i * CHUNK..i * CHUNK + y.len();
        let (g, u) = (&gate[span.clone()], &up[span]);
        #[cfg(target_arch = "x86_64")]
        if lanes == Lanes::AVX512 {
            // SAFETY: AVX-512F checked above; the three slices have the same length.
            return unsafe { forward_avx512(g, u, y) };
        }
        for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
            *y = g * u / (1.0 + (-g).exp());
        }
    });
    out
}

/// Gradients of `silu(gate) * up` w.r.t. `gate` and `up`, given the output's gradient `dy`:
/// with `s = sigmoid(gate)`, `d_up = dy silu(gate)`, `d_gate = dy up s (1 + gate (1 - s))`.
pub fn backward(lanes: Lanes, gate: &[f32], up: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert!(gate.len() == up.len() && up.len() == dy.len());
    let (mut dg, mut du) = (
        super::zeroed::<f32>(gate.len()),
        super::zeroed::<f32>(gate.len()),
    );
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .zip(dy.par_chunks(CHUNK))
        .for_each(|(((dg, du), (g, u)), dy)| {
            #[cfg(target_arch = "x86_64")]
            if lanes == Lanes::AVX512 {
                // SAFETY: AVX-512F checked above; the five slices have the same length.
                return unsafe { backward_avx512(g, u, dy, dg, du) };
            }
            for i in 0..g.len() {
                let s = 1.0 / (1.0 + (-g[i]).exp());
                du[i] = dy[i] * g[i] * s;
                dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
            }
        });
    (dg, du)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sigmoid16(g: __m512) -> __m512 {
    let one = _mm512_set1_ps(1.0);
    let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
    _mm512_div_ps(one, _mm512_add_ps(one, e))
}

/// `y = silu(g) * u`, 16 lanes at a time.
///
/// # Safety
/// The CPU must have AVX-512F; `u` and `y` are at least as long as `g`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_avx512(g: &[f32], u: &[f32], y: &mut [f32]) {
    unsafe {
        let n = g.len();
        let mut i = 0;
        while i < n {
            let k = tail_mask(n - i);
            let gv = _mm512_maskz_loadu_ps(k, g.as_ptr().add(i));
            let uv = _mm512_maskz_loadu_ps(k, u.as_ptr().add(i));
            let s = sigmoid16(gv);
            _mm512_mask_storeu_ps(
                y.as_mut_ptr().add(i),
                k,
                _mm512_mul_ps(_mm512_mul_ps(gv, s), uv),
            );
            i += 16;
        }
    }
}

/// [`backward`]'s `dg` and `du` for one chunk, 16 lanes at a time.
///
/// # Safety
/// The CPU must have AVX-512F; `u`, `dy`, `dg` and `du` are at least as long as `g`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn backward_avx512(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
    unsafe {
        let n = g.len();
        let one = _mm512_set1_ps(1.0);
        let mut i = 0;
        while i < n {
            let k = tail_mask(n - i);
            let gv = _mm512_maskz_loadu_ps(k, g.as_ptr().add(i));
            let uv = _mm512_maskz_loadu_ps(k, u.as_ptr().add(i));
            let d = _mm512_maskz_loadu_ps(k, dy.as_ptr().add(i));
            let s = sigmoid16(gv);
            let ds = _mm512_mul_ps(d, s);
            _mm512_mask_storeu_ps(du.as_mut_ptr().add(i), k, _mm512_mul_ps(ds, gv));
            // 1 + g (1 - s)
            let f = _mm512_fmadd_ps(gv, _mm512_sub_ps(one, s), one);
            _mm512_mask_storeu_ps(
                dg.as_mut_ptr().add(i),
                k,
                _mm512_mul_ps(_mm512_mul_ps(ds, uv), f),
            );
            i += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_backward_match_f64() {
        for lanes in Lanes::all() {
            check(lanes);
        }
    }

    fn check(lanes: Lanes) {
        let n = 3 * CHUNK + 21;
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 1001) as f32 - 500.0) / 40.0)
            .collect();
        let u: Vec<f32> = (0..n)
            .map(|i| ((i * 53 % 997) as f32 - 498.0) / 100.0)
            .collect();
        let dy: Vec<f32> = (0..n)
            .map(|i| ((i * 11 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let y = forward(lanes, &g, &u);
        let (dg, du) = backward(lanes, &g, &u, &dy);
        for i in 0..n {
            let (gi, ui, di) = (g[i] as f64, u[i] as f64, dy[i] as f64);
            let s = 1.0 / (1.0 + (-gi).exp());
            let close = |a: f32, b: f64| (a as f64 - b).abs() <= 1e-5 * (1.0 + b.abs());
            assert!(close(y[i], gi * s * ui), "y[{i}]");
            assert!(close(du[i], di * gi * s), "du[{i}]");
            assert!(
                close(dg[i], di * ui * s * (1.0 + gi * (1.0 - s))),
                "dg[{i}]"
            );
        }
    }
}
