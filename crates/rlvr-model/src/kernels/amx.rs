//! bf16 matrix products on AMX tiles (Intel Xeon from Sapphire Rapids on): `dst (+)= a @ b` with
//! `a` and `b` rounded to bf16 and products accumulated in f32, the matmuls of mixed-precision
//! training (`trainer.bf16`).
//!
//! Both operands are packed first, rounded to bf16 and zero-padded to whole tiles, so the inner
//! loop has no edges: `a` into blocks of 32 rows, each a run of 16 x 32 tiles along k; `b` into
//! panels of 32 columns in the pair-interleaved layout `TDPBF16PS` reads (row `r` of a tile holds
//! k rows `2r` and `2r + 1`, interleaved by column). Each 32 x 32 output block is four f32
//! accumulator tiles fed by two `a` tiles and two `b` tiles per 32 values of k. Blocks on the
//! matrix's edge go through a scratch block. Tile instructions are not exposed by stable Rust's
//! intrinsics, so they are written as inline assembly.

use super::gemm::View;
use super::Elem;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Output rows and columns per microkernel call (two tiles of 16 each way).
const BLOCK: usize = 32;
/// bf16 values of k per tile row (64 bytes).
const TILE_K: usize = 32;
/// bf16 values in one packed 32-row block (or 32-column panel) per 32 values of k.
const CHUNK: usize = BLOCK * TILE_K;
/// Row blocks and column panels per parallel task: 256 rows of `a` and 128 columns of `b` stay
/// in L2 while the task's 64 output blocks are computed.
const TASK_BLOCKS: usize = 8;
const TASK_PANELS: usize = 4;
/// Chunks of k per pass over a task's blocks: 32 KB of a block and 32 KB of a panel, near the
/// core (8 and 4 measured slower on training's shapes).
const K_CHUNKS: usize = 16;

/// Whether this CPU has AMX-BF16 and the OS lets this process use the tile registers.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::env::var_os("RLVR_NO_AMX").is_none() && super::cpu::avx512() && detect()
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // SAFETY: CPUID exists on every x86_64 CPU (the intrinsic is safe in newer Rust).
    #[allow(unused_unsafe)]
    let (max, edx) = unsafe { (__cpuid_count(0, 0).eax, __cpuid_count(7, 0).edx) };
    if max < 7 {
        return false;
    }
    // CPUID.(EAX=7, ECX=0):EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    // Linux (5.16+) leaves tile data out of a process's saved state until the process asks for
    // it; tile instructions fault before that.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes this process's permitted state.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `x` rounded to the nearest bf16 (ties to even), as its bits.
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// A right operand `b: [k, n]` packed once for any number of products ([`matmul`]).
pub struct Packed {
    tiles: super::Aligned<u16>,
    k: usize,
    n: usize,
}

impl Packed {
    /// # Panics
    /// If [`available`] is false or `b` is too short for `[k, n]`.
    pub fn new<T: Elem>(b: View<T>, k: usize, n: usize) -> Packed {
        assert!(available(), "AMX-BF16 is not available on this CPU");
        assert!(b.covers(k, n));
        Packed {
            tiles: pack_b(b, k, n),
            k,
            n,
        }
    }
}

/// `dst (+)= a @ b` for `a: [m, k]`, a packed `b: [k, n]` and row-major `dst: [m, n]`, in bf16
/// with f32 accumulation (a bf16 `dst` takes the f32 sums rounded). Without `accumulate`, `dst`
/// is only written.
///
/// # Safety
/// `dst` has room for `m * n` values, initialised when `accumulate`; nothing else accesses them
/// during the call.
///
/// # Panics
/// If `a` is too short for `[m, k]`.
pub unsafe fn matmul<T: Elem, O: Elem>(
    dst: *mut O,
    accumulate: bool,
    m: usize,
    a: View<T>,
    b: &Packed,
) {
    let (k, n) = (b.k, b.n);
    assert!(a.covers(m, k));
    if m == 0 || n == 0 {
        return;
    }
    let chunks = k.div_ceil(TILE_K);
    let pa = pack_a(a, m, k);
    let pb = &b.tiles;
    let (blocks, panels) = (m.div_ceil(BLOCK), n.div_ceil(BLOCK));
    let task_rows = blocks.div_ceil(TASK_BLOCKS);
    let tasks = task_rows * panels.div_ceil(TASK_PANELS);
    let out = SendPtr(dst);
    (0..tasks).into_par_iter().for_each(|t| {
        let out = &out;
        let (bi, pj) = (t % task_rows * TASK_BLOCKS, t / task_rows * TASK_PANELS);
        let (task_blocks, task_panels) = (
            bi..blocks.min(bi + TASK_BLOCKS),
            pj..panels.min(pj + TASK_PANELS),
        );
        TASK_OUT.with_borrow_mut(|c| {
            // SAFETY: AMX is available (`Packed::new` checked); the tile configuration is loaded
            // on this thread before any tile instruction and released after.
            unsafe { tiles::configure() };
            // k in slices of K_CHUNKS chunks, so that a block's slice of `a` and a panel's slice
            // of `b` stay near the core while the task's blocks go by; the task's output
            // accumulates over the slices in its own aligned buffer (`a` and `b` are zero-padded
            // to whole blocks, so edge blocks need no special case).
            for k0 in (0..chunks.max(1)).step_by(K_CHUNKS) {
                let kn = K_CHUNKS.min(chunks - k0.min(chunks));
                for j in task_panels.clone() {
                    let panel = b_tiles(&pb[(j * chunks + k0) * CHUNK..]);
                    for i in task_blocks.clone() {
                        let block = &pa[(i * chunks + k0) * CHUNK..];
                        let corner = (i - bi) * BLOCK * TASK_LD + (j - pj) * BLOCK;
                        // SAFETY: the block at `corner` is inside the task's buffer (stride
                        // TASK_LD); `block` and `panel` hold `kn` chunks from k0.
                        unsafe {
                            tiles::block(
                                block,
                                panel,
                                kn,
                                c[corner..].as_mut_ptr(),
                                TASK_LD,
                                k0 > 0,
                            )
                        };
                    }
                }
            }
            // SAFETY: configured above on this thread.
            unsafe { tiles::release() };
            let (r0, r1) = (bi * BLOCK, m.min(task_blocks.end * BLOCK));
            let (c0, c1) = (pj * BLOCK, n.min(task_panels.end * BLOCK));
            for r in r0..r1 {
                let src = &c[(r - r0) * TASK_LD..][..c1 - c0];
                // SAFETY: rows r0..r1 and columns c0..c1 are this task's own part of `dst`
                // (m * n values, row stride n, initialised when accumulating, by the contract);
                // no other thread touches them.
                let row = unsafe { std::slice::from_raw_parts_mut(out.0.add(r * n + c0), c1 - c0) };
                if accumulate {
                    super::elem::add_f32(src, row);
                } else {
                    super::elem::store_f32(src, row);
                }
            }
        });
    });
}

/// Output columns of a task's buffer (its row stride).
const TASK_LD: usize = TASK_PANELS * BLOCK;

thread_local! {
    /// A task's output blocks, on cache lines: tile stores into a `Vec`'s usual 16-byte
    /// alignment split every row across two lines.
    static TASK_OUT: std::cell::RefCell<super::Aligned<f32>> =
        std::cell::RefCell::new(super::Aligned::zeroed(TASK_BLOCKS * BLOCK * TASK_LD));
}

/// The two halves of a `pack_b` panel, from its chunk at `panel`.
fn b_tiles(panel: &[u16]) -> tiles::BTiles {
    debug_assert!(panel.len() >= CHUNK);
    tiles::BTiles {
        // SAFETY: the second half starts inside the chunk (CHUNK = 2 * 512).
        half: [panel.as_ptr(), unsafe { panel.as_ptr().add(CHUNK / 2) }],
        chunk_stride: CHUNK,
    }
}

/// `dst = a @ w^T` for `a: [m, 2 * steps]` and `w` in the decoding kernel's layout
/// ([`super::packed`]): `panels` panels of 16 rows of `w`, each `steps` vectors of 16 bf16 column
/// pairs. Sixteen consecutive vectors of a panel are exactly a `TDPBF16PS` `b` tile (row `q`:
/// the pair of k rows `2q`, `2q + 1` for 16 columns), so the weights are read in place, no second
/// copy. `dst` is row-major `[m, 16 * panels]`, only written.
///
/// # Safety
/// `dst` has room for `m * 16 * panels` values and nothing else accesses them during the call.
///
/// # Panics
/// Unless AMX is [`available`], `steps` is a multiple of 16, `panels` is even, `w` holds
/// `panels * steps * 16` values and `a` covers `[m, 2 * steps]`.
pub unsafe fn matmul_panels(
    dst: *mut f32,
    m: usize,
    a: View,
    w: &[u32],
    steps: usize,
    panels: usize,
) {
    assert!(available(), "AMX-BF16 is not available on this CPU");
    assert!(steps.is_multiple_of(16) && panels.is_multiple_of(2));
    assert!(w.len() >= panels * steps * 16);
    let k = 2 * steps;
    assert!(a.covers(m, k));
    if m == 0 || panels == 0 || steps == 0 {
        return;
    }
    let n = 16 * panels;
    let chunks = steps / 16;
    let pa = pack_a(a, m, k);
    let (blocks, col_blocks) = (m.div_ceil(BLOCK), panels / 2);
    // Every row block against a run of column blocks: the weights stream once.
    let tasks = col_blocks.div_ceil(TASK_PANELS);
    let out = SendPtr(dst);
    // u16 view of the weights (a u32 holds its pair as two little-endian u16s).
    let words: &[u16] = bytemuck::cast_slice(w);
    (0..tasks).into_par_iter().for_each(|t| {
        let out = &out;
        let mut scratch = [0f32; BLOCK * BLOCK];
        // SAFETY: AMX is available (asserted); configured on this thread before any tile
        // instruction and released after.
        unsafe { tiles::configure() };
        for j in t * TASK_PANELS..col_blocks.min((t + 1) * TASK_PANELS) {
            // Panels 2j and 2j + 1; the even column of a pair comes first, as a `b` tile row
            // wants it.
            let b = tiles::BTiles {
                half: [
                    words[2 * j * steps * 32..].as_ptr(),
                    words[(2 * j + 1) * steps * 32..].as_ptr(),
                ],
                chunk_stride: 16 * 32,
            };
            for i in 0..blocks {
                let block = &pa[i * chunks * CHUNK..];
                let rows = BLOCK.min(m - i * BLOCK);
                // SAFETY: (i, j) is this task's own output block; a whole one is inside `dst`
                // (row stride n), a partial one goes through the scratch block.
                unsafe {
                    let corner = out.0.add(i * BLOCK * n + j * BLOCK);
                    if rows == BLOCK {
                        tiles::block(block, b, chunks, corner, n, false);
                    } else {
                        tiles::block(block, b, chunks, scratch.as_mut_ptr(), BLOCK, false);
                        for r in 0..rows {
                            std::ptr::copy_nonoverlapping(
                                scratch.as_ptr().add(r * BLOCK),
                                corner.add(r * n),
                                BLOCK,
                            );
                        }
                    }
                }
            }
        }
        // SAFETY: configured above on this thread.
        unsafe { tiles::release() };
    });
}

struct SendPtr<O>(*mut O);
// SAFETY: the tasks of `matmul` write disjoint output blocks through it.
unsafe impl<O> Sync for SendPtr<O> {}

/// `a` as bf16 tiles: 32-row block `i`, k chunk `c` and 16-row half `h` is the 16 x 32 tile at
/// `((i * chunks + c) * 2 + h) * 512`, row-major (64-byte rows).
fn pack_a<T: Elem>(a: View<T>, m: usize, k: usize) -> super::Aligned<u16> {
    // SAFETY: AVX-512 comes with AMX (checked by `available`, which every caller passed); `a`
    // covers [m, k] (asserted by `matmul`).
    pack_groups(m, k, |r0, rows, block| unsafe {
        convert::pack_a_block(a, r0, rows, k, block)
    })
}

/// `b` as bf16 tiles in pairs: 32-column panel `j`, k chunk `c` and 16-column half `h` is the
/// tile at `((j * chunks + c) * 2 + h) * 512`, whose row `q` holds `(b[2q][col], b[2q+1][col])`
/// for its 16 columns, k counted from the chunk's start.
fn pack_b<T: Elem>(b: View<T>, k: usize, n: usize) -> super::Aligned<u16> {
    // SAFETY: as in `pack_a`; `b` covers [k, n] (asserted by `Packed::new`).
    pack_groups(n, k, |c0, cols, panel| unsafe {
        convert::pack_b_panel(b, c0, cols, k, panel)
    })
}

/// A zero-padded buffer of `len.div_ceil(32)` groups (row blocks or column panels) of k's
/// chunks, each filled in parallel by `fill(first, count, group)`.
fn pack_groups(
    len: usize,
    k: usize,
    fill: impl Fn(usize, usize, &mut [u16]) + Sync,
) -> super::Aligned<u16> {
    let group = k.div_ceil(TILE_K) * CHUNK;
    super::Aligned::filled_by_group(len.div_ceil(BLOCK), group, |g, buf| {
        fill(g * BLOCK, BLOCK.min(len - g * BLOCK), buf)
    })
}

/// Packing into bf16 tiles, 16 or 32 values at a time on AVX-512 (every AMX CPU has F, BW and
/// VL), from f32 (rounded) or bf16 sources. The two layouts training uses are vectorized:
/// row-major (`x`, `g`, the weight for `g W`) and transposed (the weight for `x W^T`, `g^T` for
/// `g^T x`); other strides take a scalar loop.
#[cfg(target_arch = "x86_64")]
mod convert {
    use super::super::Elem;
    use super::{View, BLOCK, CHUNK, TILE_K};
    use std::arch::x86_64::*;

    /// Transposes 16 x 16 32-bit values in place: lane `j` of `r[i]` goes to lane `i` of `r[j]`.
    #[target_feature(enable = "avx512f")]
    fn transpose_16x16(r: &mut [__m512i; 16]) {
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        for i in 0..4 {
            r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        for i in 0..2 {
            for j in 0..4 {
                let (a, b) = (r[8 * i + j], r[8 * i + 4 + j]);
                t[8 * i + j] = _mm512_shuffle_i32x4::<0x88>(a, b);
                t[8 * i + 4 + j] = _mm512_shuffle_i32x4::<0xdd>(a, b);
            }
        }
        for j in 0..8 {
            r[j] = _mm512_shuffle_i32x4::<0x88>(t[j], t[8 + j]);
            r[8 + j] = _mm512_shuffle_i32x4::<0xdd>(t[j], t[8 + j]);
        }
    }

    /// Rows `r0..r0 + rows` of `a: [_, k]` into one 32-row block (see `pack_a`).
    ///
    /// # Safety
    /// AVX-512 F, BW and VL (every AMX CPU has them); `a` covers rows `r0..r0 + rows` of k
    /// columns; `block` holds the block's chunks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn pack_a_block<T: Elem>(
        a: View<T>,
        r0: usize,
        rows: usize,
        k: usize,
        block: &mut [u16],
    ) {
        let chunks = k.div_ceil(TILE_K);
        assert!(block.len() >= chunks * CHUNK && rows <= BLOCK);
        let at = |r: usize, c: usize| (c * BLOCK + r) * TILE_K;
        if a.cs == 1 {
            for r in 0..rows {
                let src = a.data[(r0 + r) * a.rs..][..k].as_ptr();
                for c in 0..chunks {
                    let n = TILE_K.min(k - c * TILE_K);
                    // SAFETY: n floats from the row's chunk; 64 bytes into the block's tile row.
                    unsafe {
                        let v = T::bf16_x32(src.add(c * TILE_K), n);
                        _mm512_storeu_si512(block[at(r, c)..][..TILE_K].as_mut_ptr().cast(), v);
                    }
                }
            }
        } else if a.rs == 1 {
            // Column-major source (`g^T`): the 32 k values of a row are 32 source rows apart, so
            // each 32 x 32 piece is read a source row (one k, 32 rows) at a time and transposed
            // in registers: source rows 2j and 2j + 1 interleave into the (k 2j, k 2j + 1) pairs
            // of every row, and two 16 x 16 transposes of those pairs give the block's rows.
            let zero = _mm512_setzero_si512();
            let mut src = [zero; TILE_K];
            for c in 0..chunks {
                let n = TILE_K.min(k - c * TILE_K);
                for (p, s) in src.iter_mut().enumerate().take(n) {
                    let row = a.data[r0 + (c * TILE_K + p) * a.cs..][..rows].as_ptr();
                    // SAFETY: `rows` floats of the source row.
                    *s = unsafe { T::bf16_x32(row, rows) };
                }
                src[n..].fill(zero);
                let (mut lo, mut hi) = ([zero; 16], [zero; 16]);
                for j in 0..16 {
                    // Per 128-bit lane of 8 rows: rows 0-3 of the lane in `lo`, 4-7 in `hi`.
                    lo[j] = _mm512_unpacklo_epi16(src[2 * j], src[2 * j + 1]);
                    hi[j] = _mm512_unpackhi_epi16(src[2 * j], src[2 * j + 1]);
                }
                transpose_16x16(&mut lo);
                transpose_16x16(&mut hi);
                for o in 0..16 {
                    let r = 8 * (o / 4) + o % 4;
                    for (r, v) in [(r, lo[o]), (r + 4, hi[o])] {
                        let dst = block[at(r, c)..][..TILE_K].as_mut_ptr();
                        // SAFETY: 64 bytes, the block's tile row r of chunk c.
                        unsafe { _mm512_storeu_si512(dst.cast(), v) };
                    }
                }
            }
        } else {
            for r in 0..rows {
                for p in 0..k {
                    block[at(r, p / TILE_K) + p % TILE_K] =
                        a.data[(r0 + r) * a.rs + p * a.cs].bf16_bits();
                }
            }
        }
    }

    /// Columns `c0..c0 + cols` of `b: [k, _]` into one 32-column panel (see `pack_b`).
    ///
    /// # Safety
    /// AVX-512 F, BW and VL; `b` covers k rows of columns `c0..c0 + cols`; `panel` holds the
    /// panel's chunks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn pack_b_panel<T: Elem>(
        b: View<T>,
        c0: usize,
        cols: usize,
        k: usize,
        panel: &mut [u16],
    ) {
        let chunks = k.div_ceil(TILE_K);
        assert!(panel.len() >= chunks * CHUNK && cols <= BLOCK);
        // Tile row `q` of half `h` in chunk `c`: 16 (even, odd) pairs, one per column.
        let row_at = |c: usize, h: usize, q: usize| ((c * 2 + h) * 16 + q) * 32;
        if b.cs == 1 {
            for p in (0..k).step_by(2) {
                let (c, q) = (p / TILE_K, p % TILE_K / 2);
                for h in 0..2 {
                    let n = cols.saturating_sub(h * 16).min(16);
                    if n == 0 {
                        continue;
                    }
                    let at = |row: usize| b.data[row * b.rs + c0 + h * 16..][..n].as_ptr();
                    // SAFETY: n floats of rows p and p + 1 (when inside k); 64 bytes into the
                    // tile row.
                    unsafe {
                        let even = T::bf16_x16(at(p), n);
                        let odd = if p + 1 < k {
                            T::bf16_x16(at(p + 1), n)
                        } else {
                            _mm512_setzero_si512()
                        };
                        let pairs = _mm512_or_si512(even, _mm512_slli_epi32::<16>(odd));
                        let dst = panel[row_at(c, h, q)..][..32].as_mut_ptr();
                        _mm512_storeu_si512(dst.cast(), pairs);
                    }
                }
            }
        } else if b.rs == 1 {
            // Column-major source (the weight in `x W^T`): a column's 32 k values of a chunk are
            // contiguous and become its 16 pairs, one per tile row, so 16 columns are converted
            // and then transposed.
            let mut tmp = [0u32; 16 * 16];
            for c in 0..chunks {
                let n = TILE_K.min(k - c * TILE_K);
                for h in 0..2 {
                    let width = cols.saturating_sub(h * 16).min(16);
                    for col in 0..width {
                        let src = b.data[(c0 + h * 16 + col) * b.cs + c * TILE_K..][..n].as_ptr();
                        // SAFETY: n floats of the column's chunk; 64 bytes into tmp's row.
                        unsafe {
                            let v = T::bf16_x32(src, n);
                            _mm512_storeu_si512(tmp[col * 16..][..16].as_mut_ptr().cast(), v);
                        }
                    }
                    for q in 0..n.div_ceil(2) {
                        let dst = &mut panel[row_at(c, h, q)..][..32];
                        for col in 0..width {
                            let pair = tmp[col * 16 + q];
                            dst[2 * col] = pair as u16;
                            dst[2 * col + 1] = (pair >> 16) as u16;
                        }
                    }
                }
            }
        } else {
            for col in 0..cols {
                for p in 0..k {
                    let (c, q, h) = (p / TILE_K, p % TILE_K, col / 16);
                    panel[row_at(c, h, q / 2) + (col % 16) * 2 + q % 2] =
                        b.data[p * b.rs + (c0 + col) * b.cs].bf16_bits();
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod convert {
    use super::super::Elem;
    use super::View;
    /// Never called: AMX exists only on x86_64, so `available()` is false here.
    ///
    /// # Safety
    /// As for the x86_64 version; this one only panics.
    pub unsafe fn pack_a_block<T: Elem>(_: View<T>, _: usize, _: usize, _: usize, _: &mut [u16]) {
        unreachable!("AMX exists only on x86_64")
    }
    /// Never called: AMX exists only on x86_64, so `available()` is false here.
    ///
    /// # Safety
    /// As for the x86_64 version; this one only panics.
    pub unsafe fn pack_b_panel<T: Elem>(_: View<T>, _: usize, _: usize, _: usize, _: &mut [u16]) {
        unreachable!("AMX exists only on x86_64")
    }
}

/// The tile instructions.
#[cfg(target_arch = "x86_64")]
mod tiles {
    use super::CHUNK;
    use std::arch::asm;

    /// Palette 1, all eight tiles 16 rows of 64 bytes: 0-3 accumulate f32 (a 32 x 32 output
    /// block as four 16 x 16 quarters), 4-5 hold `a`'s two 16-row halves, 6-7 `b`'s two
    /// 16-column halves.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    const CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
            c[48 + t] = 16; // rows
            t += 1;
        }
        Config(c)
    };

    /// # Safety
    /// AMX must be available and permitted (see [`super::available`]).
    pub unsafe fn configure() {
        // SAFETY: CONFIG is a valid palette-1 configuration, 64-byte aligned.
        unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
    }

    /// # Safety
    /// Called on a thread that ran [`configure`].
    pub unsafe fn release() {
        // SAFETY: see the caller's contract.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// Where a 32-column block's `b` tiles are: the tile of half `h` (16 columns) and chunk
    /// `i` starts at `half[h] + i * chunk_stride` (u16s), 16 rows of 64 bytes.
    #[derive(Clone, Copy)]
    pub struct BTiles {
        pub half: [*const u16; 2],
        pub chunk_stride: usize,
    }

    /// `c (+)= a_block @ b` for one 32 x 32 f32 block at `c` with row stride `ldc` (elements);
    /// `a_block` is packed as `pack_a` lays it out.
    ///
    /// # Safety
    /// [`configure`] ran on this thread; `c` addresses 32 rows of 32 writable f32 at stride
    /// `ldc`; `a_block` and `b`'s two halves hold `chunks` chunks.
    pub unsafe fn block(
        a_block: &[u16],
        b: BTiles,
        chunks: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        debug_assert!(a_block.len() >= chunks * CHUNK);
        let stride = ldc * 4;
        let half = CHUNK / 2;
        // SAFETY (every block below): the addresses are inside `c`'s 32 x 32 block or inside
        // the packs' `chunks` chunks, per the contract; tile rows are 64 bytes.
        let (c0, c1) = (c, unsafe { c.add(16) });
        let (c2, c3) = unsafe { (c.add(16 * ldc), c.add(16 * ldc + 16)) };
        if accumulate {
            unsafe {
                asm!(
                    "tileloadd tmm0, [{c0} + {s}*1]",
                    "tileloadd tmm1, [{c1} + {s}*1]",
                    "tileloadd tmm2, [{c2} + {s}*1]",
                    "tileloadd tmm3, [{c3} + {s}*1]",
                    c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3,
                    s = in(reg) stride,
                    options(nostack, readonly),
                )
            };
        } else {
            unsafe {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                )
            };
        }
        let a = a_block.as_ptr();
        for i in 0..chunks {
            unsafe {
                let (a0, b0, b1) = (
                    a.add(i * CHUNK),
                    b.half[0].add(i * b.chunk_stride),
                    b.half[1].add(i * b.chunk_stride),
                );
                asm!(
                    "tileloadd tmm4, [{a0} + {s}*1]",
                    "tileloadd tmm6, [{b0} + {s}*1]",
                    "tileloadd tmm5, [{a1} + {s}*1]",
                    "tileloadd tmm7, [{b1} + {s}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0, a1 = in(reg) a0.add(half),
                    b0 = in(reg) b0, b1 = in(reg) b1,
                    s = in(reg) 64usize,
                    options(nostack, readonly),
                )
            };
        }
        unsafe {
            asm!(
                "tilestored [{c0} + {s}*1], tmm0",
                "tilestored [{c1} + {s}*1], tmm1",
                "tilestored [{c2} + {s}*1], tmm2",
                "tilestored [{c3} + {s}*1], tmm3",
                c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3,
                s = in(reg) stride,
                options(nostack),
            )
        };
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod tiles {
    /// Does nothing: there are no tiles off x86_64.
    ///
    /// # Safety
    /// As for the x86_64 version; this one does nothing.
    pub unsafe fn configure() {}
    /// Does nothing: there are no tiles off x86_64.
    ///
    /// # Safety
    /// As for the x86_64 version; this one does nothing.
    pub unsafe fn release() {}
    /// Never called: AMX exists only on x86_64, so `available()` is false here.
    ///
    /// # Safety
    /// As for the x86_64 version; this one only panics.
    #[derive(Clone, Copy)]
    pub struct BTiles {
        pub half: [*const u16; 2],
        pub chunk_stride: usize,
    }
    pub unsafe fn block(_: &[u16], _: BTiles, _: usize, _: *mut f32, _: usize, _: bool) {
        unreachable!("AMX exists only on x86_64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16_value(x: f32) -> f64 {
        half::bf16::from_bits(to_bf16(x)).to_f64()
    }

    /// `a @ b` in f64 over the bf16-rounded inputs: what the tiles compute up to f32 summation.
    fn reference(m: usize, n: usize, k: usize, a: View, b: View) -> Vec<(f64, f64)> {
        (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                (0..k).fold((0.0, 0.0), |(s, abs), p| {
                    let x = bf16_value(a.data[i * a.rs + p * a.cs])
                        * bf16_value(b.data[p * b.rs + j * b.cs]);
                    (s + x, abs + x.abs())
                })
            })
            .collect()
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8;
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn rounding_is_to_nearest_even_and_keeps_nan() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert!(half::bf16::from_bits(to_bf16(f32::NAN)).is_nan());
        assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
    }

    #[test]
    fn products_match_f64_over_bf16_inputs_in_every_layout_and_edge() {
        if !available() {
            // The bf16 product still runs (and is checked) through gemm's rounding fallback.
            eprintln!("AMX-BF16 not available on this CPU: only the fallback path is tested");
            return;
        }
        // Whole blocks, ragged edges in every dimension, k below one chunk, a task grid larger
        // than one task each way, and k over several passes.
        for &(m, n, k) in &[
            (32, 32, 32),
            (37, 45, 70),
            (1, 1, 1),
            (5, 130, 33),
            (300, 150, 64),
            (96, 160, 1100),
        ] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let layouts = [
                (View::rows(&a, k), View::rows(&b, n)),
                (View::transposed(&at, m), View::transposed(&bt, k)),
            ];
            for (av, bv) in layouts {
                let want = reference(m, n, k, av, bv);
                let start = values(m * n, 3);
                for accumulate in [false, true] {
                    let mut got = start.clone();
                    let packed = Packed::new(bv, k, n);
                    // SAFETY: `got` holds m * n initialised values.
                    unsafe { matmul(got.as_mut_ptr(), accumulate, m, av, &packed) };
                    for (ij, (&g, &(w, abs))) in got.iter().zip(&want).enumerate() {
                        let w = w + if accumulate { start[ij] as f64 } else { 0.0 };
                        // f32 accumulation of exact bf16 products: error ~ k ulp of the terms.
                        let tol = 1e-6 * (abs + 1.0) * (k as f64).sqrt();
                        assert!(
                            (g as f64 - w).abs() <= tol,
                            "m={m} n={n} k={k} acc={accumulate} at {ij}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
