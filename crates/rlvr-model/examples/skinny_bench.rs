//! Throughput of the decoding matmul on SmolLM2-135M's shapes: one token's worth of weights
//! (30 layers' q, k, v, o, gate, up, down and the head) per "token", at several batch sizes.
use candle_core::{DType, Device, Tensor};
use rlvr_model::model::packed::PackedBf16;
use rlvr_model::model::skinny::try_matmul_t;
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    if std::env::var("SMALL").is_ok() {
        return small();
    }
    let (h, kv, inter, vocab, layers) = (576, 192, 1536, 49152, 30);
    let shapes = [
        (h, h),
        (kv, h),
        (kv, h),
        (h, h),
        (inter, h),
        (inter, h),
        (h, inter),
    ];
    for (dtype, pack) in [
        (DType::F32, false),
        (DType::BF16, false),
        (DType::BF16, true),
    ] {
        let mut ws = Vec::new();
        for _ in 0..layers {
            for &(n, k) in &shapes {
                ws.push(Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu)?.to_dtype(dtype)?);
            }
        }
        ws.push(Tensor::randn(0f32, 0.02, (vocab, h), &Device::Cpu)?.to_dtype(dtype)?);
        let packed: Vec<PackedBf16> = if pack {
            ws.iter()
                .map(PackedBf16::pack)
                .collect::<candle_core::Result<_>>()?
        } else {
            Vec::new()
        };
        let bytes: usize = ws
            .iter()
            .map(|w| w.elem_count() * dtype.size_in_bytes())
            .sum();
        for m in [1usize, 8, 32] {
            let xs: Vec<Tensor> = [h, inter]
                .iter()
                .map(|&k| Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu))
                .collect::<candle_core::Result<_>>()?;
            let mut best = f64::MAX;
            for _ in 0..8 {
                let t = Instant::now();
                for (l, w) in ws.iter().enumerate() {
                    let k = w.dim(1)?;
                    let x = if k == h { &xs[0] } else { &xs[1] };
                    if pack {
                        packed[l].matmul_t(x)?;
                    } else {
                        try_matmul_t(x, w)?.expect("fast path");
                    }
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{dtype:?}{} m={m:2}: {:.2} ms/step, {:.1} GB/s, {:.1} GFLOP/s, {} MB",
                if pack { " packed" } else { "" },
                best * 1e3,
                bytes as f64 / best / 1e9,
                2.0 * m as f64 * (bytes / dtype.size_in_bytes()) as f64 / best / 1e9,
                bytes >> 20
            );
        }
    }
    Ok(())
}

#[allow(dead_code)]
fn small() -> candle_core::Result<()> {
    for (n, k) in [(1536usize, 576usize), (576, 1536), (49152, 576)] {
        let w = Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu)?;
        let p = PackedBf16::pack(&w)?;
        for m in [1usize, 8, 32, 100, 155] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
            let reps = (2e10 / (2.0 * (m * n * k) as f64)) as usize + 1;
            let t = Instant::now();
            for _ in 0..reps {
                p.matmul_t(&x)?;
            }
            let dt = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "n={n} k={k} m={m}: {:.1} GFLOP/s",
                2.0 * (m * n * k) as f64 / dt / 1e9
            );
        }
    }
    Ok(())
}
