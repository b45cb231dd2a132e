//! CPU kernels for training's element-wise work: a vectorized `exp`, the vocabulary softmax
//! (log-probs, entropy and their gradient) and SwiGLU, each one or two passes over memory where
//! the composite tensor versions made many. f32 on the CPU only; callers keep the tensor path for
//! other devices and dtypes.

pub mod attention;
pub mod exp;
pub mod gemm;
pub mod rms_norm;
pub mod softmax;
pub mod swiglu;
pub mod team;
pub mod vocab;

use candle_core::{DType, Result, Storage, Tensor};

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
