//! `x @ w^T` for few rows of `x` (decoding): each weight row is streamed from memory once and
//! dotted with every row of `x`, with no packing. General gemm packs the whole weight matrix on
//! every call, which costs as much as the product itself when `x` has a handful of rows.
//! CPU + f32 only, no backward: the caller falls back to `matmul` otherwise.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// Rows of `x` up to which the skinny kernel beats gemm (AVX2 / AVX-512). gemm packs the
/// weights on every call and, on stable Rust, runs AVX2 micro-kernels only.
pub const MAX_ROWS: usize = 24;
pub const MAX_ROWS_AVX512: usize = 64;

/// Output columns computed per parallel task.
const BLOCK: usize = 32;

struct SkinnyMatmul;

/// `x: [m, k]`, `w: [n, k]` → `[m, n]`, when the fast path applies.
pub fn try_matmul_t(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    use candle_core::DType;
    let shaped = x.device().is_cpu()
        && x.dtype() == DType::F32
        && x.rank() == 2
        && w.is_contiguous()
        && super::cpu::avx2_fma();
    if !shaped {
        return Ok(None);
    }
    if w.dtype() == DType::F32 && x.dim(0)? <= max_rows() {
        Ok(Some(x.contiguous()?.apply_op2_no_bwd(w, &SkinnyMatmul)?))
    } else {
        Ok(None)
    }
}

fn max_rows() -> usize {
    if super::cpu::avx512() {
        MAX_ROWS_AVX512
    } else {
        MAX_ROWS
    }
}

impl CustomOp2 for SkinnyMatmul {
    fn name(&self) -> &'static str {
        "skinny-matmul-t"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, k2) = wl.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("skinny matmul: inner dims {k} vs {k2}")
        }
        let CpuStorage::F32(x) = xs else {
            candle_core::bail!("skinny matmul: x must be f32")
        };
        let x = &x[xl.start_offset()..xl.start_offset() + m * k];
        let wo = wl.start_offset();
        // Transposed output [n, m]: every task owns a contiguous block of it.
        let mut yt = vec![0f32; n * m];
        let wide = super::cpu::avx512();
        match ws {
            CpuStorage::F32(w) => {
                let w = &w[wo..wo + n * k];
                crate::kernels::team::for_each_chunk_mut(&mut yt, BLOCK * m, |b, out| {
                    let rows = out.len() / m;
                    let wb = &w[b * BLOCK * k..(b * BLOCK + rows) * k];
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: only reached when AVX2 and FMA were detected
                    // (`cpu::avx2_fma`), and AVX-512F for the wide kernel.
                    unsafe {
                        if wide {
                            block_avx512(x, wb, m, k, out)
                        } else {
                            block_avx2(x, wb, m, k, out)
                        }
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    block_generic(x, wb, m, k, out)
                });
            }
            _ => candle_core::bail!("skinny matmul: weights must be f32"),
        }
        let mut y = vec![0f32; m * n];
        for (j, col) in yt.chunks_exact(m).enumerate() {
            for (i, v) in col.iter().enumerate() {
                y[i * n + j] = *v;
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }
}

/// `out[j * m + i] = x[i] . w[j]` for the `w.len() / k` rows of `w`, AVX2 + FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `x` holds at least `m * k` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(x: &[f32], w: &[f32], m: usize, k: usize, out: &mut [f32]) {
    unsafe {
        let n = w.len() / k;
        let mut j = 0;
        while j < n {
            let nr = (n - j).min(2);
            let mut i = 0;
            while i < m {
                let mr = (m - i).min(4);
                let wp = w.as_ptr().add(j * k);
                let xp = x.as_ptr().add(i * k);
                let r = match (mr, nr) {
                    (4, 2) => tile::<4, 2>(xp, wp, k),
                    (4, _) => tile::<4, 1>(xp, wp, k),
                    (3, 2) => tile::<3, 2>(xp, wp, k),
                    (3, _) => tile::<3, 1>(xp, wp, k),
                    (2, 2) => tile::<2, 2>(xp, wp, k),
                    (2, _) => tile::<2, 1>(xp, wp, k),
                    (_, 2) => tile::<1, 2>(xp, wp, k),
                    _ => tile::<1, 1>(xp, wp, k),
                };
                for jj in 0..nr {
                    for ii in 0..mr {
                        out[(j + jj) * m + i + ii] = r[ii][jj];
                    }
                }
                i += mr;
            }
            j += nr;
        }
    }
}

/// Dot products of `MR` rows of `x` with `NR` rows of `w` (row length `k`), AVX2 + FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `x` points to `MR` rows of `k` readable f32s one after
/// another, and `w` to `NR` such rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile<const MR: usize, const NR: usize>(
    x: *const f32,
    w: *const f32,
    k: usize,
) -> [[f32; 2]; 4] {
    unsafe {
        use std::arch::x86_64::*;
        let mut acc = [[_mm256_setzero_ps(); NR]; MR];
        let kv = k / 8 * 8;
        let mut c = 0;
        while c < kv {
            let mut wv = [_mm256_setzero_ps(); NR];
            for (jj, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(w.add(jj * k + c));
            }
            for (ii, row) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(x.add(ii * k + c));
                for jj in 0..NR {
                    row[jj] = _mm256_fmadd_ps(xv, wv[jj], row[jj]);
                }
            }
            c += 8;
        }
        let mut r = [[0f32; 2]; 4];
        for ii in 0..MR {
            for jj in 0..NR {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc[ii][jj]);
                let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
                    + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
                for t in kv..k {
                    s += *x.add(ii * k + t) * *w.add(jj * k + t);
                }
                r[ii][jj] = s;
            }
        }
        r
    }
}

/// `out[j * m + i] = x[i] . w[j]` for the `w.len() / k` rows of `w`, AVX-512.
///
/// # Safety
/// The CPU must have AVX-512F; `x` holds at least `m * k` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512(x: &[f32], w: &[f32], m: usize, k: usize, out: &mut [f32]) {
    unsafe {
        let n = w.len() / k;
        let mut j = 0;
        while j < n {
            let nr = (n - j).min(4);
            let mut i = 0;
            while i < m {
                let mr = (m - i).min(4);
                let wp = w.as_ptr().add(j * k);
                let xp = x.as_ptr().add(i * k);
                let r = match (mr, nr) {
                    (4, 4) => tile512::<4, 4>(xp, wp, k),
                    (4, 3) => tile512::<4, 3>(xp, wp, k),
                    (4, 2) => tile512::<4, 2>(xp, wp, k),
                    (4, _) => tile512::<4, 1>(xp, wp, k),
                    (3, 4) => tile512::<3, 4>(xp, wp, k),
                    (3, 3) => tile512::<3, 3>(xp, wp, k),
                    (3, 2) => tile512::<3, 2>(xp, wp, k),
                    (3, _) => tile512::<3, 1>(xp, wp, k),
                    (2, 4) => tile512::<2, 4>(xp, wp, k),
                    (2, 3) => tile512::<2, 3>(xp, wp, k),
                    (2, 2) => tile512::<2, 2>(xp, wp, k),
                    (2, _) => tile512::<2, 1>(xp, wp, k),
                    (_, 4) => tile512::<1, 4>(xp, wp, k),
                    (_, 3) => tile512::<1, 3>(xp, wp, k),
                    (_, 2) => tile512::<1, 2>(xp, wp, k),
                    _ => tile512::<1, 1>(xp, wp, k),
                };
                for jj in 0..nr {
                    for ii in 0..mr {
                        out[(j + jj) * m + i + ii] = r[ii][jj];
                    }
                }
                i += mr;
            }
            j += nr;
        }
    }
}

/// Dot products of `MR` rows of `x` with `NR` rows of `w`, AVX-512: 16 lanes, and up to 16
/// accumulators, so one pass over a `w` row block serves four `x` rows.
///
/// # Safety
/// The CPU must have AVX-512F; `x` points to `MR` rows of `k` readable f32s one after another,
/// and `w` to `NR` such rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile512<const MR: usize, const NR: usize>(
    x: *const f32,
    w: *const f32,
    k: usize,
) -> [[f32; 4]; 4] {
    unsafe {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_ps(); NR]; MR];
        let kv = k / 16 * 16;
        let mut c = 0;
        while c < kv {
            let mut wv = [_mm512_setzero_ps(); NR];
            for (jj, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(w.add(jj * k + c));
            }
            for (ii, row) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_ps(x.add(ii * k + c));
                for jj in 0..NR {
                    row[jj] = _mm512_fmadd_ps(xv, wv[jj], row[jj]);
                }
            }
            c += 16;
        }
        let mut r = [[0f32; 4]; 4];
        for ii in 0..MR {
            for jj in 0..NR {
                let mut s = _mm512_reduce_add_ps(acc[ii][jj]);
                for t in kv..k {
                    s += *x.add(ii * k + t) * *w.add(jj * k + t);
                }
                r[ii][jj] = s;
            }
        }
        r
    }
}

/// Portable fallback (not used on x86_64, where the fast path requires AVX2).
#[cfg(not(target_arch = "x86_64"))]
fn block_generic(x: &[f32], w: &[f32], m: usize, k: usize, out: &mut [f32]) {
    for (j, wr) in w.chunks_exact(k).enumerate() {
        for i in 0..m {
            out[j * m + i] = wr
                .iter()
                .zip(&x[i * k..(i + 1) * k])
                .map(|(a, b)| a * b)
                .sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_matmul_for_odd_shapes() {
        for (m, k, n) in [
            (1, 576, 70),
            (5, 13, 33),
            (8, 64, 200),
            (24, 100, 31),
            (32, 576, 65),
            (61, 1536, 37),
            (3, 7, 5),
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap();
            let Some(got) = try_matmul_t(&x, &w).unwrap() else {
                eprintln!("note: no AVX2/FMA here, skinny kernel not exercised");
                return;
            };
            let d = crate::model::testing::max_abs_diff(&got, &want);
            assert!(d < 1e-3 * (k as f64).sqrt(), "{m} {k} {n}");
        }
    }
}
