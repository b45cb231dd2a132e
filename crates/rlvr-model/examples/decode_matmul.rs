//! Throughput of the decoding matmuls on SmolLM2-135M's shapes: the f32 skinny kernel and the
//! packed bf16 and f32 kernels, over one token's worth of weights (30 layers' q, k, v, o, gate, up, down
//! and the tied head), at the row counts of batch-1, -8 and -32 decoding and of a prefill.
//!
//! `cargo run --release -p rlvr-model --example decode_matmul`
use candle_core::DType;
use candle_core::{Device, Result, Tensor};
use rlvr_model::kernels::packed::{self, Packed};
use rlvr_model::kernels::skinny::try_matmul_t;
use std::time::Instant;

const HIDDEN: usize = 576;

fn main() -> Result<()> {
    let (kv, inter, vocab, layers) = (192, 1536, 49152, 30);
    let shapes = [
        (HIDDEN, HIDDEN),
        (kv, HIDDEN),
        (kv, HIDDEN),
        (HIDDEN, HIDDEN),
        (inter, HIDDEN),
        (inter, HIDDEN),
        (HIDDEN, inter),
    ];
    let mut ws = Vec::new();
    for _ in 0..layers {
        for &(n, k) in &shapes {
            ws.push(Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu)?);
        }
    }
    ws.push(Tensor::randn(0f32, 0.02, (vocab, HIDDEN), &Device::Cpu)?);
    let params: usize = ws.iter().map(|w| w.elem_count()).sum();

    let pack = |dtype: DType| -> Result<Vec<Packed>> {
        if !packed::available() {
            return Ok(Vec::new());
        }
        let t = Instant::now();
        let p = ws
            .iter()
            .map(|w| Packed::pack(w, dtype))
            .collect::<Result<Vec<_>>>()?;
        println!(
            "packing {params} weights in {dtype:?}: {:.3} s",
            t.elapsed().as_secs_f64()
        );
        Ok(p)
    };
    if !packed::available() {
        eprintln!("note: no AVX-512 here, packed kernels not measured");
    }
    let packed_bf16 = pack(DType::BF16)?;
    let packed_f32 = pack(DType::F32)?;

    for m in [1usize, 8, 32, 128] {
        let xs = [
            Tensor::randn(0f32, 1.0, (m, HIDDEN), &Device::Cpu)?,
            Tensor::randn(0f32, 1.0, (m, inter), &Device::Cpu)?,
        ];
        let x_for = |w: &Tensor| -> Result<&Tensor> {
            Ok(if w.dim(1)? == HIDDEN { &xs[0] } else { &xs[1] })
        };
        if m <= rlvr_model::kernels::skinny::MAX_ROWS_AVX512 {
            let secs = best_of(5, || {
                for w in &ws {
                    if try_matmul_t(x_for(w)?, w)?.is_none() {
                        candle_core::bail!("skinny kernel not available here")
                    }
                }
                Ok(())
            })?;
            report("f32 skinny", m, secs, params, 4);
        }
        for (name, packed, bytes) in [
            ("bf16 packed", &packed_bf16, 2),
            ("f32 packed", &packed_f32, 4),
        ] {
            if packed.is_empty() {
                continue;
            }
            let secs = best_of(5, || {
                for (w, p) in ws.iter().zip(packed) {
                    p.matmul_t(x_for(w)?)?;
                }
                Ok(())
            })?;
            report(name, m, secs, params, bytes);
        }
    }
    Ok(())
}

fn best_of(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn report(name: &str, m: usize, secs: f64, params: usize, bytes_per_weight: usize) {
    println!(
        "{name:>11} rows {m:3}: {:6.2} ms  {:5.1} GB/s of weights  {:5.1} GFLOP/s",
        secs * 1e3,
        (params * bytes_per_weight) as f64 / secs / 1e9,
        2.0 * (m * params) as f64 / secs / 1e9,
    );
}
