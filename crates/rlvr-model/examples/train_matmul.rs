//! Throughput of training's matmuls in f32 (gemm) and bf16 (AMX tiles where the CPU has them,
//! else rounding + f32 gemm), packing included: the three products of a linear layer (`x W^T`,
//! `g W`, `g^T x`) on 8 x 384 tokens for the layer shapes of SmolLM2-135M and
//! Qwen2.5-0.5B.
//!
//! `cargo run --release -p rlvr-model --example train_matmul`
use rlvr_model::kernels::amx;
use rlvr_model::kernels::gemm::{matmul, Precision, View};
use std::time::Instant;

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn main() {
    let tokens = 8 * 384;
    let models = [
        (
            "SmolLM2-135M",
            [(576, 576), (192, 576), (1536, 576), (576, 1536)],
        ),
        (
            "Qwen2.5-0.5B",
            [(896, 896), (128, 896), (4864, 896), (896, 4864)],
        ),
    ];
    println!(
        "bf16 path: {}",
        if amx::available() {
            "AMX tiles"
        } else {
            "rounding + f32 gemm"
        }
    );
    for (name, shapes) in models {
        for (out, k) in shapes {
            let x = values(tokens * k, 1);
            let w = values(out * k, 2);
            let g = values(tokens * out, 3);
            let flop = 3.0 * 2.0 * (tokens * out * k) as f64;
            let mut line = format!("{name} [{out} x {k}]:");
            for p in [Precision::F32, Precision::Bf16] {
                let mut best = f64::INFINITY;
                for _ in 0..3 {
                    let t = Instant::now();
                    let y = matmul(
                        p,
                        tokens,
                        out,
                        k,
                        View::rows(&x, k),
                        View::transposed(&w, k),
                    );
                    let dx = matmul(p, tokens, k, out, View::rows(&g, out), View::rows(&w, k));
                    let dw = matmul(
                        p,
                        out,
                        k,
                        tokens,
                        View::transposed(&g, out),
                        View::rows(&x, k),
                    );
                    best = best.min(t.elapsed().as_secs_f64());
                    std::hint::black_box((y, dx, dw));
                }
                line += &format!(
                    "  {p:?} {:.1} ms {:.0} GFLOP/s",
                    best * 1e3,
                    flop / best / 1e9
                );
            }
            println!("{line}");
        }
    }
}
