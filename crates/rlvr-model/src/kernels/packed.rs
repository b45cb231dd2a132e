//! Weights packed for decoding on AVX-512 CPUs, and `x @ w^T` on them, in bf16 or f32.
//! bf16 weights are half the bytes of f32 (decoding few sequences streams every weight once per
//! token) and are widened exactly to f32 in registers; activations and accumulation stay f32.
//! From 16 rows on, where the CPU has AMX, bf16 weights go to the tile unit instead, read in
//! place (16 steps of a panel are one tile), with the activations rounded to bf16 as a bf16
//! engine (vLLM's default dtype) rounds them.
//!
//! Layout: rows in panels of 16, each panel a run of 64-byte vectors, one per step along `k`.
//! For bf16 a step is a column pair of the 16 rows (`[row0 c, row0 c+1, row1 c, row1 c+1,
//! ...]`; shift left 16 / mask the low half to widen columns `c` and `c+1`), for f32 one column.
//! An FMA with activation `x[r, c]` broadcast adds to 16 outputs at once: no horizontal sums,
//! every panel one sequential stream. (The bf16 dot-product instruction `vdpbf16ps` would
//! round activations to bf16 too, and measured half the rate of f32 FMAs on a Sapphire Rapids
//! core: 87 vs 175 GFLOP/s.)

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

/// Output rows per panel (f32 lanes of one vector).
const PANEL: usize = 16;
/// Panels per parallel task.
const TASK_PANELS: usize = 6;
/// From this many rows on, bf16 products go to AMX tiles where the CPU has them (reading the
/// same packed weights), activations rounded to bf16 as in a bf16 engine: 1.4x the f32-FMA
/// kernel's rate at 16 rows, 3x at 32 (Sapphire Rapids, 2 cores); at 8 rows they are even, and
/// fewer rows are bound by streaming the weights, where the FMA kernel is faster.
const AMX_MIN_ROWS: usize = 16;

/// A `[n, k]` weight matrix in the packed layout: one `u32` per step of a row, a bf16 column
/// pair (the even column in the low half) or an f32 column's bits.
pub struct Packed {
    /// On cache lines: AMX reads 16 steps of a panel in place as one tile.
    data: super::Aligned<u32>,
    n: usize,
    k: usize,
    /// `BF16` or `F32`.
    dtype: DType,
    /// Steps per row: `k`, or for bf16 `k / 2` rounded up (an odd `k` gets a zero partner).
    steps: usize,
}

/// Whether this CPU runs the packed kernel (AVX-512F).
pub fn available() -> bool {
    super::cpu::avx512()
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed[{}, {}; {:?}]", self.n, self.k, self.dtype)
    }
}

impl Packed {
    /// Packs `w: [n, k]` (any float dtype) in `dtype`: `BF16` (rounded to nearest even) or
    /// `F32`.
    pub fn pack(w: &Tensor, dtype: DType) -> Result<Self> {
        Self::pack_stacked(&[w], dtype)
    }

    /// Packs the row-wise concatenation of `parts` (each `[n_i, k]`), without building it.
    pub fn pack_stacked(parts: &[&Tensor], dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::BF16 | DType::F32) {
            candle_core::bail!("packed weights are bf16 or f32, not {dtype:?}")
        }
        let k = match parts.first() {
            Some(t) => t.dims2()?.1,
            None => candle_core::bail!("pack_stacked: no matrices"),
        };
        if k == 0 {
            candle_core::bail!("pack_stacked: matrices without columns")
        }
        let mut owned = Vec::with_capacity(parts.len());
        for t in parts {
            if t.dims2()?.1 != k {
                candle_core::bail!("pack_stacked: widths {:?} and {k} differ", t.dims())
            }
            owned.push(
                t.to_device(&Device::Cpu)?
                    .to_dtype(DType::F32)?
                    .contiguous()?,
            );
        }
        let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
        let mut rows: Vec<&[f32]> = Vec::new();
        for (storage, layout) in &guards {
            let candle_core::Storage::Cpu(cpu) = &**storage else {
                candle_core::bail!("pack_stacked: CPU tensors expected")
            };
            let o = layout.start_offset();
            let all = &cpu.as_slice::<f32>()?[o..o + layout.shape().elem_count()];
            rows.extend(all.chunks_exact(k));
        }
        let n = rows.len();
        let bf16 = dtype == DType::BF16;
        let steps = if bf16 { k.div_ceil(2) } else { k };
        let panel_len = steps * PANEL;
        let mut data = super::Aligned::<u32>::zeroed(n.div_ceil(PANEL) * panel_len);
        data.par_chunks_mut(panel_len)
            .zip(rows.par_chunks(PANEL))
            .for_each_init(
                || vec![0u16; steps * 2],
                |bits, (panel, rows)| {
                    if !bf16 {
                        // Written in order, the 16 rows read side by side.
                        for (q, v) in panel.chunks_exact_mut(PANEL).enumerate() {
                            for (l, row) in rows.iter().enumerate() {
                                v[l] = row[q].to_bits();
                            }
                        }
                        return;
                    }
                    for (l, row) in rows.iter().enumerate() {
                        // Rounded contiguously first (the compiler vectorizes this), then
                        // spread to the row's slot in every pair vector.
                        for (b, v) in bits.iter_mut().zip(row.iter()) {
                            *b = round_to_bf16_bits(*v);
                        }
                        for (q, pair) in bits.chunks_exact(2).enumerate() {
                            panel[q * PANEL + l] = pair[0] as u32 | (pair[1] as u32) << 16;
                        }
                    }
                },
            );
        Ok(Self {
            data,
            n,
            k,
            dtype,
            steps,
        })
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// The weights' element type: `BF16` or `F32`.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// `x @ w^T` for `x: [m, k]` f32 on the CPU → `[m, n]` f32.
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        let (m, k) = x.dims2()?;
        if k != self.k {
            candle_core::bail!("packed matmul: x has {k} columns, weights {}", self.k)
        }
        if !available() {
            candle_core::bail!("packed matmul needs AVX-512F")
        }
        let x = crate::kernels::with_slice(&x.to_dtype(DType::F32)?, |x| self.product(x, m))?;
        Tensor::from_vec(x, (m, self.n), &Device::Cpu)
    }

    fn product(&self, x: &[f32], m: usize) -> Vec<f32> {
        let steps = self.steps;
        let bf16 = self.dtype == DType::BF16;
        // Rows of x padded to whole pairs (a zero partner for an odd last column).
        let x: std::borrow::Cow<[f32]> = if !bf16 || self.k.is_multiple_of(2) {
            std::borrow::Cow::Borrowed(x)
        } else {
            std::borrow::Cow::Owned(
                x.chunks_exact(self.k)
                    .flat_map(|r| r.iter().copied().chain([0.0]))
                    .collect(),
            )
        };
        let panel_len = steps * PANEL;
        let np = self.data.len() / panel_len;
        // Padded to whole panels; the first cache block of every tile writes its outputs.
        let cols = np * PANEL;
        // Not zeroed first: every tile stores all its outputs in its first cache block.
        let mut y: Vec<f32> = Vec::with_capacity(m * cols);
        if bf16
            && m >= AMX_MIN_ROWS
            && super::amx::available()
            && steps.is_multiple_of(16)
            && np.is_multiple_of(2)
        {
            // SAFETY: `y` has room for m * cols values; AMX reads the panels in place.
            unsafe {
                super::amx::matmul_panels(
                    y.as_mut_ptr(),
                    m,
                    super::gemm::View::rows(&x, 2 * steps),
                    &self.data,
                    steps,
                    np,
                );
                y.set_len(m * cols);
            }
            return trim(y, cols, self.n);
        }
        let out = Out(y.as_mut_ptr());
        crate::kernels::team::for_each(np.div_ceil(TASK_PANELS), |t| {
            let p = t * TASK_PANELS;
            let w = &self.data[p * panel_len..(p + TASK_PANELS).min(np) * panel_len];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `available()` was checked; column `p * 16` is inside every row of `y`,
            // and tasks write disjoint columns.
            unsafe {
                let dst = Dst {
                    ptr: out.at(p * PANEL),
                    row_stride: cols,
                };
                if bf16 {
                    panels::<true>(&x, m, steps, w, dst)
                } else {
                    panels::<false>(&x, m, steps, w, dst)
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("checked by available(): {w:?} {out:?}")
        });
        // SAFETY: the tasks' tiles cover all `m` rows and `cols` columns, and each stored its
        // outputs (`k > 0`, checked when packing, so every tile has a first cache block).
        unsafe { y.set_len(m * cols) };
        trim(y, cols, self.n)
    }
}

/// Rows of `cols` values cut to their first `n`.
fn trim(y: Vec<f32>, cols: usize, n: usize) -> Vec<f32> {
    if cols == n {
        return y;
    }
    y.chunks_exact(cols)
        .flat_map(|row| &row[..n])
        .copied()
        .collect()
}

/// `v` rounded to the nearest bf16 (ties to even) as bits; NaN stays NaN (quiet). Branch-free
/// apart from NaN, so the packing loop vectorizes.
#[inline(always)]
fn round_to_bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The output matrix, shared by tasks that write disjoint column ranges of it.
#[derive(Clone, Copy, Debug)]
struct Out(*mut f32);
// SAFETY: tasks write disjoint elements, and the buffer outlives the parallel loop.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// # Safety
    /// `offset` must be inside the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

/// Where a task's outputs go: its first column of row 0, and the row stride.
#[derive(Clone, Copy)]
struct Dst {
    ptr: *mut f32,
    row_stride: usize,
}

/// Steps per cache block: a tile's `NR` panels of a block (24 KiB) stay in L1 while every
/// row tile of `x` passes over them; without blocking they came from L2 each time.
const BLOCK_STEPS: usize = 128;

/// How far ahead (in packed words: 4 KiB) tiles prefetch into L2: more misses in flight per
/// core than the hardware prefetcher keeps, which is what bounds decoding few sequences.
const PREFETCH: usize = 1024;

/// All rows of `x` (`[m, 2 * steps]` for bf16, `[m, steps]` for f32) against a run of whole
/// panels `w`, into the columns at `out`.
///
/// # Safety
/// The CPU must have AVX-512F; `x` holds at least `m` such rows; for each `i < m`, the
/// `16 * (w.len() / (16 * steps))` f32s at `out.ptr + i * out.row_stride` are valid for reads
/// and writes (they may start uninitialised: each is written before it is read), and nothing
/// else accesses them during the call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn panels<const BF16: bool>(x: &[f32], m: usize, steps: usize, w: &[u32], out: Dst) {
    unsafe {
        let panel_len = steps * PANEL;
        let cols_per_step = if BF16 { 2 } else { 1 };
        let np = w.len() / panel_len;
        let mut p = 0;
        while p < np {
            let nr = (np - p).min(3);
            for q0 in (0..steps).step_by(BLOCK_STEPS) {
                let t = Tile {
                    q0,
                    q1: steps.min(q0 + BLOCK_STEPS),
                    steps,
                    accumulate: q0 > 0,
                    row_stride: out.row_stride,
                };
                let mut i = 0;
                while i < m {
                    let mr = (m - i).min(8);
                    let wp = w.as_ptr().add(p * panel_len);
                    let xp = x.as_ptr().add(i * steps * cols_per_step);
                    let op = out.ptr.add(i * out.row_stride + p * PANEL);
                    match (mr, nr) {
                        (8, 3) => tile::<BF16, 8, 3>(&t, xp, wp, op),
                        (8, 2) => tile::<BF16, 8, 2>(&t, xp, wp, op),
                        (8, _) => tile::<BF16, 8, 1>(&t, xp, wp, op),
                        (7, 3) => tile::<BF16, 7, 3>(&t, xp, wp, op),
                        (7, 2) => tile::<BF16, 7, 2>(&t, xp, wp, op),
                        (7, _) => tile::<BF16, 7, 1>(&t, xp, wp, op),
                        (6, 3) => tile::<BF16, 6, 3>(&t, xp, wp, op),
                        (6, 2) => tile::<BF16, 6, 2>(&t, xp, wp, op),
                        (6, _) => tile::<BF16, 6, 1>(&t, xp, wp, op),
                        (5, 3) => tile::<BF16, 5, 3>(&t, xp, wp, op),
                        (5, 2) => tile::<BF16, 5, 2>(&t, xp, wp, op),
                        (5, _) => tile::<BF16, 5, 1>(&t, xp, wp, op),
                        (4, 3) => tile::<BF16, 4, 3>(&t, xp, wp, op),
                        (4, 2) => tile::<BF16, 4, 2>(&t, xp, wp, op),
                        (4, _) => tile::<BF16, 4, 1>(&t, xp, wp, op),
                        (3, 3) => tile::<BF16, 3, 3>(&t, xp, wp, op),
                        (3, 2) => tile::<BF16, 3, 2>(&t, xp, wp, op),
                        (3, _) => tile::<BF16, 3, 1>(&t, xp, wp, op),
                        (2, 3) => tile::<BF16, 2, 3>(&t, xp, wp, op),
                        (2, 2) => tile::<BF16, 2, 2>(&t, xp, wp, op),
                        (2, _) => tile::<BF16, 2, 1>(&t, xp, wp, op),
                        (_, 3) => tile::<BF16, 1, 3>(&t, xp, wp, op),
                        (_, 2) => tile::<BF16, 1, 2>(&t, xp, wp, op),
                        (_, _) => tile::<BF16, 1, 1>(&t, xp, wp, op),
                    }
                    i += mr;
                }
            }
            p += nr;
        }
    }
}

/// One cache block of a tile: steps `q0..q1` of rows `steps` long, outputs `row_stride` apart
/// per row, added to what is there after the first block.
struct Tile {
    q0: usize,
    q1: usize,
    steps: usize,
    accumulate: bool,
    row_stride: usize,
}

/// `MR` rows of `x` against `NR` consecutive panels at `w`; row `ii`'s 16 outputs of panel `jj`
/// go to `out + ii * row_stride + jj * 16`. bf16 pairs are widened exactly in registers: the
/// even column by a left shift of 16, the odd one by masking the low half.
///
/// # Safety
/// The CPU must have AVX-512F; `t.q1 <= t.steps`; `x` points to `MR` rows of `t.steps` f32s
/// (`2 * t.steps` for bf16) one after another, `w` to `NR` panels of `16 * t.steps` u32s; row
/// `ii`'s `16 * NR` outputs at `out + ii * t.row_stride` are valid for writes, and initialised
/// when `t.accumulate`, and nothing else accesses them during the call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const BF16: bool, const MR: usize, const NR: usize>(
    t: &Tile,
    x: *const f32,
    w: *const u32,
    out: *mut f32,
) {
    unsafe {
        use std::arch::x86_64::*;
        let panel_len = t.steps * PANEL;
        let (xs, cols) = if BF16 { (t.steps * 2, 2) } else { (t.steps, 1) };
        let at = |ii: usize, jj: usize| out.add(ii * t.row_stride + jj * PANEL);
        let mut acc = [[_mm512_setzero_ps(); NR]; MR];
        if t.accumulate {
            for (ii, row) in acc.iter_mut().enumerate() {
                for (jj, v) in row.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(at(ii, jj));
                }
            }
        }
        let high = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
        for q in t.q0..t.q1 {
            let mut even = [_mm512_setzero_ps(); NR];
            let mut odd = [_mm512_setzero_ps(); NR];
            for jj in 0..NR {
                let at = w.add(jj * panel_len + q * PANEL);
                // wrapping_add: past the last panel this address is beyond the buffer (a
                // prefetch never faults, but `add` may not leave its allocation).
                _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(PREFETCH).cast());
                let v = _mm512_loadu_si512(at.cast());
                if BF16 {
                    even[jj] = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
                    odd[jj] = _mm512_castsi512_ps(_mm512_and_si512(v, high));
                } else {
                    even[jj] = _mm512_castsi512_ps(v);
                }
            }
            for (ii, row) in acc.iter_mut().enumerate() {
                let x0 = _mm512_set1_ps(*x.add(ii * xs + cols * q));
                for jj in 0..NR {
                    row[jj] = _mm512_fmadd_ps(x0, even[jj], row[jj]);
                }
                if BF16 {
                    let x1 = _mm512_set1_ps(*x.add(ii * xs + 2 * q + 1));
                    for jj in 0..NR {
                        row[jj] = _mm512_fmadd_ps(x1, odd[jj], row[jj]);
                    }
                }
            }
        }
        for (ii, row) in acc.iter().enumerate() {
            for (jj, v) in row.iter().enumerate() {
                _mm512_storeu_ps(at(ii, jj), *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    /// The exact product of `x` and the weights as stored (`dtype`), in f64.
    fn reference(x: &[f32], w: &[f32], (m, n, k): (usize, usize, usize), dtype: DType) -> Vec<f64> {
        let r = |v: f32| match dtype {
            DType::BF16 => bf16::from_f32(v).to_f64(),
            _ => v as f64,
        };
        (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                (0..k).map(|c| x[i * k + c] as f64 * r(w[j * k + c])).sum()
            })
            .collect()
    }

    #[test]
    fn matches_the_exact_product_with_the_stored_weights() {
        if !available() {
            eprintln!("note: no AVX-512 here, packed kernel not exercised");
            return;
        }
        // Ragged panels (n % 16), odd k, every row-tile and panel-tile size, several tasks and
        // cache blocks (k > 256 for bf16, > 128 for f32).
        for dtype in [DType::BF16, DType::F32] {
            for (m, k, n) in [
                (1, 576, 70),
                (3, 7, 5),
                (9, 33, 200),
                (17, 64, 16),
                (32, 100, 97),
                (11, 301, 50),
            ] {
                let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
                let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
                let packed = Packed::pack(&w, dtype).unwrap();
                assert_eq!(packed.dims(), (n, k));
                assert_eq!(packed.dtype(), dtype);
                let got = packed.matmul_t(&x).unwrap();
                assert_eq!(got.dims(), [m, n]);
                let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let want = reference(
                    &x.flatten_all().unwrap().to_vec1().unwrap(),
                    &w.flatten_all().unwrap().to_vec1().unwrap(),
                    (m, n, k),
                    dtype,
                );
                for (g, e) in got.iter().zip(&want) {
                    // Only the f32 accumulation differs from the exact sum.
                    assert!(
                        (*g as f64 - e).abs() < 1e-5 * (k as f64),
                        "{dtype:?} {m} {k} {n}: {g} vs {e}"
                    );
                }
            }
        }
    }

    /// From 16 rows on, bf16 weights meet AMX tiles (read in place) and the activations are
    /// rounded to bf16: the exact product of both rounded operands, whole and partial 32-row
    /// blocks; fewer rows keep f32 activations.
    #[test]
    fn many_rows_take_amx_tiles_on_bf16_activations() {
        if !(available() && super::super::amx::available()) {
            eprintln!("note: no AMX here, the tile path is not exercised");
            return;
        }
        for (m, k, n) in [
            (16, 64, 32),
            (20, 96, 64),
            (33, 896, 160),
            (64, 32, 96),
            (15, 64, 32),
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
            let got = Packed::pack(&w, DType::BF16)
                .unwrap()
                .matmul_t(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let rounded: Vec<f32> = xs.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
            let ws = w.flatten_all().unwrap().to_vec1().unwrap();
            let amx = m >= AMX_MIN_ROWS;
            let want = reference(
                if amx { &rounded } else { &xs },
                &ws,
                (m, n, k),
                DType::BF16,
            );
            let other = reference(
                if amx { &xs } else { &rounded },
                &ws,
                (m, n, k),
                DType::BF16,
            );
            let err = |r: &[f64]| {
                got.iter()
                    .zip(r)
                    .map(|(g, e)| (*g as f64 - e).abs())
                    .fold(0.0, f64::max)
            };
            assert!(err(&want) < 1e-5 * k as f64, "{m} {k} {n}: {}", err(&want));
            assert!(
                err(&other) > 1e-3,
                "{m} {k} {n}: the activations' rounding shows"
            );
        }
    }

    #[test]
    fn rounding_matches_half_and_stacking_matches_concatenation() {
        for v in [
            0.0f32,
            -0.0,
            1.0,
            // Ties: to the even neighbour below, then above.
            f32::from_bits(0x3F80_8000),
            f32::from_bits(0x3F81_8000),
            -3.3e38,
            3.4e38,
            f32::INFINITY,
            1e-40,
        ] {
            assert_eq!(round_to_bf16_bits(v), bf16::from_f32(v).to_bits(), "{v}");
        }
        assert!(bf16::from_bits(round_to_bf16_bits(f32::NAN)).is_nan());
        let a = Tensor::randn(0f32, 1.0, (5, 9), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, (20, 9), &Device::Cpu).unwrap();
        for dtype in [DType::BF16, DType::F32] {
            let stacked = Packed::pack_stacked(&[&a, &b], dtype).unwrap();
            let whole = Packed::pack(&Tensor::cat(&[&a, &b], 0).unwrap(), dtype).unwrap();
            assert_eq!(stacked.dims(), (25, 9));
            assert_eq!(*stacked.data, *whole.data);
        }
    }

    #[test]
    fn wrong_width_is_an_error() {
        let w = Tensor::zeros((4, 8), DType::F32, &Device::Cpu).unwrap();
        let x = Tensor::zeros((2, 6), DType::F32, &Device::Cpu).unwrap();
        let err = Packed::pack(&w, DType::F32)
            .unwrap()
            .matmul_t(&x)
            .unwrap_err();
        assert!(err.to_string().contains("6 columns"), "{err}");
        let err = Packed::pack(&w, DType::F16).unwrap_err();
        assert!(err.to_string().contains("bf16 or f32"), "{err}");
        let empty = Tensor::zeros((4, 0), DType::F32, &Device::Cpu).unwrap();
        let err = Packed::pack(&empty, DType::F32).unwrap_err();
        assert!(err.to_string().contains("without columns"), "{err}");
    }
}
