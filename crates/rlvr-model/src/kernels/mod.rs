//! CPU kernels, f32 (and bf16 weights for decoding), each one or two passes over memory where the
//! composite tensor versions made many. Callers keep candle's tensor path for other devices and
//! dtypes, and every kernel picks its instruction path at run time ([`cpu`]).
//!
//! - [`cpu`]: which instructions this CPU has; [`Lanes`], the path a call takes.
//! - [`exp`]: a vectorized `exp` (the softmaxes and SiLU call it billions of times per step).
//! - [`vocab`]: the vocabulary softmax: log-probs, entropy and their gradient.
//! - [`softmax`]: masked attention softmax and its backward.
//! - [`attention`]: decoding attention over the KV cache.
//! - [`rms_norm`], [`swiglu`]: their forward and backward.
//! - [`gemm`]: training's matmuls and their gradients, f32 or bf16 ([`amx`]: on AMX tiles).
//! - [`skinny`]: `x @ w^T` for few rows (decoding, f32 weights).
//! - [`packed`]: weights packed for decoding on AVX-512, bf16 or f32.
//! - [`team`]: the worker threads the kernels split rows over.
//! - [`elem`]: the element types they read and write (f32, bf16 activations).
//! - `aligned`: buffers on cache-line boundaries (tile loads need them).

mod aligned;
pub mod amx;
pub mod attention;
pub mod cpu;
pub mod elem;
pub mod exp;
pub mod gemm;
pub mod packed;
pub mod rms_norm;
pub mod skinny;
pub mod softmax;
pub mod swiglu;
pub mod team;
pub mod vocab;

pub(crate) use aligned::Aligned;
pub use cpu::Lanes;
pub use elem::Elem;

use candle_core::{DType, Result, Storage, Tensor};

/// `len` zeros, written by every thread of the pool. A fresh output of many megabytes zeroed by
/// the calling thread alone (`vec![0; n]`) took ~5 % of a training step with the other core idle.
pub(crate) fn zeroed<T: bytemuck::Zeroable + Send>(len: usize) -> Vec<T> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(1 << 15)
        .for_each(|c| {
            for x in c {
                x.write(T::zeroed());
            }
        });
    // SAFETY: the first `len` elements were all written just above.
    unsafe { v.set_len(len) };
    v
}

/// Whether the kernels here apply to `t`.
pub fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// Runs `f` on the f32 elements of a CPU tensor (made contiguous first).
pub fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => {
            let o = layout.start_offset();
            Ok(f(&s.as_slice::<f32>()?[o..o + layout.shape().elem_count()]))
        }
        _ => candle_core::bail!("kernels: CPU tensor expected"),
    }
}

/// Runs `f` on the elements of a contiguous CPU tensor of element type `T` (the KV cache's
/// layers, f32 or bf16), without copying.
pub fn with_slice_of<T: candle_core::WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> R,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(s), Some((a, b))) => Ok(f(&s.as_slice::<T>()?[a..b])),
        _ => candle_core::bail!("kernels: contiguous CPU {:?} tensor expected", T::DTYPE),
    }
}
