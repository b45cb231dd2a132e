//! The element types training's kernels read and write: f32, and bf16 for the activations that
//! mixed-precision training keeps in bf16 between products (as autocast does), which halves
//! their memory and the traffic of every product that reads them.

use half::bf16;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// f32 or bf16. bf16 values are exact in f32, so widening never rounds; narrowing rounds to
/// nearest, ties to even, NaN stays NaN (`half::bf16::from_f32`).
pub trait Elem: candle_core::WithDType + bytemuck::Zeroable {
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
    /// The slice itself when the elements are f32 (borrowed, no copy).
    fn as_f32(s: &[Self]) -> Option<&[f32]>;

    /// The value rounded to bf16, as its bits.
    #[inline]
    fn bf16_bits(self) -> u16 {
        bf16::from_f32(self.to_f32()).to_bits()
    }

    /// Up to 16 values from `p` (`n` of them, zeros after) widened to f32 lanes.
    ///
    /// # Safety
    /// AVX-512 F, BW and VL ([`super::cpu::avx512`]); `p` points to `n.min(16)` readable values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self, n: usize) -> __m512;

    /// The first `n.min(16)` lanes of `v` stored at `p` (rounded to bf16 for bf16).
    ///
    /// # Safety
    /// As [`Elem::load16`], with `p` writable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn store16(p: *mut Self, n: usize, v: __m512);

    /// Up to 32 values (`n` of them, zeros after) as 32 bf16 in one register.
    ///
    /// # Safety
    /// As [`Elem::load16`], with `n.min(32)` readable values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn bf16_x32(p: *const Self, n: usize) -> __m512i;

    /// Up to 16 values as bf16 in the low 16 bits of each 32-bit lane (zeros after `n`).
    ///
    /// # Safety
    /// As [`Elem::load16`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn bf16_x16(p: *const Self, n: usize) -> __m512i;
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn mask16(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        (1u16 << n) - 1
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn mask32(n: usize) -> __mmask32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

/// Each lane rounded to bf16 (to nearest, ties to even; NaN stays NaN), in the low 16 bits of a
/// 32-bit lane: what `half::bf16::from_f32` computes, 16 at a time.
///
/// # Safety
/// The CPU must have AVX-512F (calls from code without that feature are unsafe).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub fn bf16_lanes(x: __m512) -> __m512i {
    let b = _mm512_castps_si512(x);
    let high = _mm512_srli_epi32::<16>(b);
    let lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
    let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff));
    let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(b, bias));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    let quiet = _mm512_or_si512(high, _mm512_set1_epi32(0x40));
    _mm512_mask_blend_epi32(nan, rounded, quiet)
}

impl Elem for f32 {
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline]
    fn from_f32(x: f32) -> Self {
        x
    }
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load16(p: *const Self, n: usize) -> __m512 {
        // SAFETY: masked-off lanes are not read; the caller vouches for the first n.
        unsafe { _mm512_maskz_loadu_ps(mask16(n), p) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn store16(p: *mut Self, n: usize, v: __m512) {
        // SAFETY: masked-off lanes are not written; the caller vouches for the first n.
        unsafe { _mm512_mask_storeu_ps(p, mask16(n), v) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn bf16_x32(p: *const Self, n: usize) -> __m512i {
        // SAFETY: the caller vouches for n values at p; `wrapping_add` forms the second half's
        // address without assuming it is inside the allocation (it is not read when n <= 16).
        let (lo, hi) = unsafe {
            (
                Self::bf16_x16(p, n.min(16)),
                Self::bf16_x16(p.wrapping_add(16), n.saturating_sub(16)),
            )
        };
        let lo = _mm512_cvtepi32_epi16(lo);
        let hi = _mm512_cvtepi32_epi16(hi);
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn bf16_x16(p: *const Self, n: usize) -> __m512i {
        // SAFETY: the caller's contract.
        bf16_lanes(unsafe { Self::load16(p, n) })
    }
}

impl Elem for bf16 {
    #[inline]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline]
    fn bf16_bits(self) -> u16 {
        self.to_bits()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load16(p: *const Self, n: usize) -> __m512 {
        // SAFETY: as `bf16_x16`.
        let bits = unsafe { Self::bf16_x16(p, n) };
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(bits))
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn store16(p: *mut Self, n: usize, v: __m512) {
        // SAFETY: masked-off lanes are not written; the caller vouches for the first n.
        unsafe { _mm512_mask_cvtepi32_storeu_epi16(p.cast(), mask16(n), bf16_lanes(v)) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn bf16_x32(p: *const Self, n: usize) -> __m512i {
        // SAFETY: masked-off lanes are not read; the caller vouches for the first n.
        unsafe { _mm512_maskz_loadu_epi16(mask32(n), p.cast()) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn bf16_x16(p: *const Self, n: usize) -> __m512i {
        // SAFETY: masked-off lanes are not read; the caller vouches for the first n.
        _mm512_cvtepu16_epi32(unsafe { _mm256_maskz_loadu_epi16(mask16(n), p.cast()) })
    }
}

/// `dst[i] = src[i]` converted (a copy for f32, rounding for bf16), 16 lanes at a time where the
/// CPU has AVX-512.
pub fn store_f32<O: Elem>(src: &[f32], dst: &mut [O]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if super::cpu::avx512() {
        // SAFETY: AVX-512 F, BW and VL checked above; both slices hold src.len() values.
        unsafe { store_f32_avx512(src, dst) };
        return;
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = O::from_f32(s);
    }
}

/// `src` rounded to bf16.
pub fn narrowed(src: &[f32]) -> Vec<bf16> {
    let mut out = vec![bf16::ZERO; src.len()];
    store_f32(src, &mut out);
    out
}

/// `dst[i] += src[i]` (rounded back to bf16 for bf16).
pub fn add_f32<O: Elem>(src: &[f32], dst: &mut [O]) {
    assert_eq!(src.len(), dst.len());
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = O::from_f32(d.to_f32() + s);
    }
}

/// # Safety
/// AVX-512 F, BW and VL; `dst` at least as long as `src`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn store_f32_avx512<O: Elem>(src: &[f32], dst: &mut [O]) {
    for i in (0..src.len()).step_by(16) {
        let n = src.len() - i;
        // SAFETY: n.min(16) values from i in both slices.
        unsafe {
            O::store16(
                dst.as_mut_ptr().add(i),
                n,
                f32::load16(src.as_ptr().add(i), n),
            )
        };
    }
}

/// The elements as f32: borrowed when they are f32, widened (exactly) otherwise.
pub fn widened<T: Elem>(s: &[T]) -> std::borrow::Cow<'_, [f32]> {
    match T::as_f32(s) {
        Some(f) => std::borrow::Cow::Borrowed(f),
        None => std::borrow::Cow::Owned(s.iter().map(|x| x.to_f32()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Vec<f32> {
        // Ties, values just off ties, subnormals, infinities and NaN.
        let mut v: Vec<f32> = (0..200)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1.000_123e-3 * (1 << (i % 20)) as f32)
            .collect();
        v.extend([
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0x3f80_8001),
            1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        v
    }

    #[test]
    fn vector_conversions_match_half() {
        let src = values();
        // `narrowed` (and so `store_f32`) on every CPU, whichever path it takes.
        let bits = |v: &[bf16]| v.iter().map(|b| b.to_bits()).collect::<Vec<_>>();
        let want: Vec<u16> = src.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        assert_eq!(bits(&narrowed(&src)), want);
        if !crate::kernels::cpu::avx512() {
            // CI's machines have AVX-512: there a missing path is a failure, not a skip.
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: this CPU lacks AVX-512 F/BW/VL, the vector conversions were not tested"
            );
            eprintln!("skipped the AVX-512 loads and stores: this CPU lacks AVX-512 F/BW/VL");
            return;
        }
        for len in [0, 1, 15, 16, 17, 31, 32, 33, src.len()] {
            let want: Vec<u16> = src[..len]
                .iter()
                .map(|&x| bf16::from_f32(x).to_bits())
                .collect();
            let mut got = vec![bf16::ZERO; len];
            store_f32(&src[..len], &mut got);
            assert_eq!(got.iter().map(|b| b.to_bits()).collect::<Vec<_>>(), want);
            // Back through `load16` and `bf16_x32`, both element types.
            let halves: Vec<bf16> = src[..len].iter().map(|&x| bf16::from_f32(x)).collect();
            for i in (0..len).step_by(32) {
                let n = len - i;
                let mut a = [0u16; 32];
                let mut b = [0u16; 32];
                // SAFETY: AVX-512 checked; n.min(32) values from i.
                unsafe {
                    _mm512_storeu_si512(a.as_mut_ptr().cast(), f32::bf16_x32(src[i..].as_ptr(), n));
                    _mm512_storeu_si512(
                        b.as_mut_ptr().cast(),
                        bf16::bf16_x32(halves[i..].as_ptr(), n),
                    );
                }
                let m = n.min(32);
                assert_eq!(&a[..m], &want[i..i + m]);
                assert_eq!(&b[..m], &want[i..i + m]);
                assert!(a[m..].iter().chain(&b[m..]).all(|&x| x == 0));
                let mut back = [0f32; 16];
                // SAFETY: as above, 16 lanes stored into `back`.
                unsafe {
                    f32::store16(back.as_mut_ptr(), 16, bf16::load16(halves[i..].as_ptr(), n))
                };
                for (j, x) in back[..n.min(16)].iter().enumerate() {
                    assert_eq!(x.to_bits(), halves[i + j].to_f32().to_bits());
                }
            }
        }
    }
}
