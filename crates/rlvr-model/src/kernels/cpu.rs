//! What this CPU can run, asked once per call (std caches the answer). Every kernel picks its
//! path from here, so one place says which instructions each path needs.

/// AVX-512 F, BW and VL (every AVX-512 CPU since Skylake-SP): the 16-lane paths (`exp`,
/// softmaxes, the packed decoding kernel, bf16 conversions).
pub fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX2 with FMA: the 8-lane skinny matmul.
pub fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Which code path a kernel takes: chosen once per call (from the CPU) and handed to the
/// parallel workers, so tests can run the scalar path too without touching other threads. Only
/// [`Lanes::detect`] hands out the AVX-512 path outside this crate: safe kernels run AVX-512
/// code on its word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lanes(Path);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Avx512,
    Scalar,
}

impl Lanes {
    pub const SCALAR: Lanes = Lanes(Path::Scalar);
    /// For code that already runs with AVX-512F (or has just detected it).
    pub(crate) const AVX512: Lanes = Lanes(Path::Avx512);

    pub fn detect() -> Lanes {
        if avx512() {
            Lanes::AVX512
        } else {
            Lanes::SCALAR
        }
    }

    /// The paths to check in tests: this CPU's and the scalar one.
    #[cfg(test)]
    pub fn all() -> Vec<Lanes> {
        let mut v = vec![Lanes::SCALAR];
        if Lanes::detect() != Lanes::SCALAR {
            v.push(Lanes::detect());
        }
        v
    }
}
