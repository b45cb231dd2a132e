//! `exp` over f32 lanes: 16 at a time with AVX-512F, else libm one by one. libm's `expf` is
//! scalar, and the softmaxes of training (vocabulary, attention) and SiLU call it billions of
//! times per step.
//!
//! The AVX-512 path is Cephes' `expf`: `x = n ln2 + r` with `|r| <= ln2 / 2`, a degree-5
//! polynomial for `e^r`, and `vscalefps` for the `2^n` (about 1 ulp against libm). Inputs below
//! ln(f32::MIN_POSITIVE) give exactly 0, as masked softmax entries need; NaN stays NaN.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::Lanes;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Above ln(f32::MAX): gives +inf through `vscalefps`.
const MAX_X: f32 = 89.0;
const MIN_X: f32 = -87.336_55;
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// The lanes of a 16-wide step that are inside a slice with `left` values remaining.
#[cfg(target_arch = "x86_64")]
pub(crate) fn tail_mask(left: usize) -> __mmask16 {
    if left >= 16 {
        0xffff
    } else {
        ((1u32 << left) - 1) as u16
    }
}

/// `e^x` on 16 lanes.
///
/// # Safety
/// The CPU must have AVX-512F (a safe call from code compiled with it; elsewhere `unsafe`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub fn exp16(x: __m512) -> __m512 {
    let underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(MIN_X), _CMP_LT_OQ);
    // MINPS returns its second operand when either is NaN: NaN goes through.
    let xc = _mm512_min_ps(_mm512_set1_ps(MAX_X), x);
    let n = _mm512_roundscale_ps(
        _mm512_mul_ps(xc, _mm512_set1_ps(LOG2E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), xc);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(P[0]);
    for c in &P[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
    }
    // e^r = 1 + r + r^2 p(r)
    let r2 = _mm512_mul_ps(r, r);
    let e = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
    let y = _mm512_scalef_ps(e, n);
    _mm512_maskz_mov_ps(!underflow, y)
}

/// `x[i] = e^(x[i])` in place.
pub fn exp_inplace(x: &mut [f32]) {
    exp_inplace_on(Lanes::detect(), x)
}

pub fn exp_inplace_on(lanes: Lanes, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if lanes == Lanes::AVX512 {
        // SAFETY: AVX-512F checked above; loads and stores stay inside `x` (the tail is masked).
        unsafe {
            let mut chunks = x.chunks_exact_mut(16);
            for c in &mut chunks {
                let v = _mm512_loadu_ps(c.as_ptr());
                _mm512_storeu_ps(c.as_mut_ptr(), exp16(v));
            }
            let rest = chunks.into_remainder();
            if !rest.is_empty() {
                let m = tail_mask(rest.len());
                let v = _mm512_maskz_loadu_ps(m, rest.as_ptr());
                _mm512_mask_storeu_ps(rest.as_mut_ptr(), m, exp16(v));
            }
        }
        return;
    }
    for v in x {
        *v = v.exp();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_libm_across_the_range_and_at_the_edges() {
        for lanes in Lanes::all() {
            check(lanes);
        }
    }

    fn check(lanes: Lanes) {
        let mut xs: Vec<f32> = (0..20_001).map(|i| -100.0 + i as f32 * 0.0095).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-30,
            -1e30,
            f32::NEG_INFINITY,
            88.7,
            -87.3,
            -87.4,
            f32::INFINITY,
        ]);
        // Lengths that leave every tail size.
        for len in [xs.len(), 7, 16, 17, 31] {
            let mut got = xs[..len].to_vec();
            exp_inplace_on(lanes, &mut got);
            for (&x, &y) in xs[..len].iter().zip(&got) {
                let want = (x as f64).exp();
                let want32 = want as f32;
                if x < MIN_X {
                    // 0 on the AVX-512 path; libm gives a subnormal.
                    assert!((0.0..f32::MIN_POSITIVE).contains(&y), "e^{x} = {y}");
                } else if want32.is_infinite() {
                    assert!(y >= f32::MAX, "e^{x} = {y}");
                } else {
                    let rel = ((y as f64 - want) / want).abs();
                    assert!(rel < 4e-7, "e^{x}: {y} vs {want} (rel {rel:e})");
                }
            }
        }
        let mut nan = [f32::NAN];
        exp_inplace_on(lanes, &mut nan);
        assert!(nan[0].is_nan());
    }
}
