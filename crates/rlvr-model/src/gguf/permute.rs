//! llama.cpp's converter reorders the rows of Llama's q/k projections so that RoPE can rotate
//! adjacent pairs (GPT-J style): per head, HF row `r*half + i` (r ∈ {0,1}) goes to GGUF row
//! `2*i + r`. HF's `rotate_half` RoPE needs the original order back.

use anyhow::{bail, Result};
use candle_core::Tensor;

/// Undoes the llama.cpp q/k row permutation: `t` is `[n_head * head_dim, ...]` (weight or bias).
pub fn unpermute_qk(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let Some(&rows) = dims.first() else {
        bail!("cannot un-permute a scalar");
    };
    if n_head == 0 || rows % (2 * n_head) != 0 {
        bail!("{rows} rows do not split into {n_head} heads of even size");
    }
    let half = rows / n_head / 2;
    let rest: usize = dims[1..].iter().product();
    // GGUF rows per head are [half, 2]; HF rows are [2, half].
    let out = t
        .reshape((n_head, half, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?;
    Ok(out)
}
