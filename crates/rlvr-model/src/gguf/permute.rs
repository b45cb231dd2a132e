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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bias_rows_return_to_half_split_order() {
        // Two heads of dim 4: GGUF rows per head are (i0r0, i0r1, i1r0, i1r1); HF wants
        // (r0: i0, i1; r1: i0, i1).
        let t = Tensor::arange(0f32, 8.0, &Device::Cpu).unwrap();
        let hf = unpermute_qk(&t, 2).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(hf, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        let w = Tensor::arange(0f32, 16.0, &Device::Cpu)
            .unwrap()
            .reshape((4, 4))
            .unwrap();
        let hf = unpermute_qk(&w, 1).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(hf[1], [8.0, 9.0, 10.0, 11.0]);
        assert!(unpermute_qk(&t, 3).is_err());
    }
}
