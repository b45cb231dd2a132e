//! Rotary position embedding tables (Hugging Face `rotate_half` layout), with the `linear` and
//! `llama3` frequency scalings.

use crate::config::{ModelConfig, RopeScaling};
use candle_core::{DType, Device, Result, Tensor};

/// cos/sin tables of shape `[max_positions, head_dim / 2]`.
#[derive(Debug, Clone)]
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
}

/// Inverse frequencies per rotated pair, after scaling, as HF's `rope_init_fn`s compute them.
pub fn inv_freq(cfg: &ModelConfig) -> Vec<f64> {
    let dim = cfg.head_dim();
    let base = cfg.rope_theta;
    let raw: Vec<f64> = (0..dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64))
        .collect();
    match &cfg.rope_scaling {
        None => raw,
        Some(RopeScaling::Linear { factor }) => raw.iter().map(|f| f / factor).collect(),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            let old = *original_max_position_embeddings as f64;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            raw.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

impl RopeTables {
    pub fn new(cfg: &ModelConfig, max_positions: usize, device: &Device) -> Result<Self> {
        let freqs = inv_freq(cfg);
        let half = freqs.len();
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for &f in &freqs {
                // HF computes the angle in f32; doing it in f64 differs by < 1 ulp of the result.
                let a = (p as f32 * f as f32) as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_positions, half), device)?,
            sin: Tensor::from_vec(sin, (max_positions, half), device)?,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    /// Tables gathered at `positions` (`[B, S]` u32): `[B, S, head_dim / 2]` each.
    pub fn gather(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, s) = positions.dims2()?;
        let max = self.max_positions();
        let flat = positions.flatten_all()?;
        let top = flat.max(0)?.to_dtype(DType::U32)?.to_scalar::<u32>()? as usize;
        if top >= max {
            candle_core::bail!("position {top} is beyond the rope table ({max} positions)")
        }
        let cos = self.cos.index_select(&flat, 0)?.reshape((b, s, ()))?;
        let sin = self.sin.index_select(&flat, 0)?.reshape((b, s, ()))?;
        Ok((cos, sin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(scaling: Option<RopeScaling>) -> ModelConfig {
        serde_json::from_value(serde_json::json!({
            "vocab_size": 8, "hidden_size": 64, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "rope_theta": 500000.0,
        }))
        .map(|mut c: ModelConfig| {
            c.rope_scaling = scaling;
            c
        })
        .unwrap()
    }

    #[test]
    fn plain_frequencies_follow_the_base() {
        let f = inv_freq(&cfg(None));
        assert_eq!(f.len(), 16);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 500000f64.powf(-2.0 / 32.0)).abs() < 1e-15);
    }

    #[test]
    fn linear_scaling_divides_every_frequency() {
        let plain = inv_freq(&cfg(None));
        let lin = inv_freq(&cfg(Some(RopeScaling::Linear { factor: 4.0 })));
        for (a, b) in plain.iter().zip(&lin) {
            assert!((a / 4.0 - b).abs() < 1e-18);
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_divides_low_and_blends_middle() {
        let plain = inv_freq(&cfg(None));
        let l3 = inv_freq(&cfg(Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        })));
        let two_pi = 2.0 * std::f64::consts::PI;
        let (mut hi, mut lo, mut mid) = (0, 0, 0);
        for (a, b) in plain.iter().zip(&l3) {
            let wl = two_pi / a;
            if wl < 8192.0 / 4.0 {
                assert_eq!(a, b);
                hi += 1;
            } else if wl > 8192.0 {
                assert!((a / 8.0 - b).abs() < 1e-18);
                lo += 1;
            } else {
                assert!(*b < *a && *b > a / 8.0);
                mid += 1;
            }
        }
        assert!(hi > 0 && lo > 0 && mid > 0, "{hi} {lo} {mid}");
    }
}
