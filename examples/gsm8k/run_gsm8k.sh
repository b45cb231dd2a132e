#!/usr/bin/env bash
# GRPO on GSM8K: SkyRL's examples/gsm8k/run_gsm8k.sh settings, the baseline of
# examples/algorithms/dapo/run_dapo_gsm8k.sh. Same model (Qwen2.5-Coder-0.5B-Instruct), data,
# prompt, sizes and evaluation (examples/gsm8k/qwen_cpu_common.sh); SkyRL's plain GRPO instead of
# DAPO's additions: the regular PPO clip with a symmetric 0.2, no dynamic sampling, no overlong
# filtering or soft overlong punishment. Token-mean loss, as SkyRL's default. No KL loss, as in
# the DAPO run, so the two differ only in DAPO's components: SkyRL's default k3 KL loss would
# add a frozen reference copy (2.5 GB) that a 24 GB machine cannot hold beside this trainer
# (peak ~21 GB); add trainer.algorithm.use_kl_loss=true where memory allows.
# 9 steps give it about the DAPO run's training wall-clock (GRPO's steps draw one generation batch
# each; DAPO's draw 1-12); it reuses the DAPO run's evaluation before training (same model,
# prompt, greedy decoding, which is deterministic) and evaluates once, at its last step.
# Extra arguments are passed on as overrides.
set -euo pipefail
cd "$(dirname "$0")/../.."
source examples/gsm8k/qwen_cpu_common.sh
$RLVR train "${COMMON[@]}" \
  trainer.algorithm.advantage_estimator="grpo" \
  trainer.algorithm.policy_loss_type="regular" \
  trainer.algorithm.eps_clip_low=0.2 \
  trainer.algorithm.eps_clip_high=0.2 \
  trainer.algorithm.dynamic_sampling.type=null \
  trainer.algorithm.loss_reduction=token_mean \
  generator.apply_overlong_filtering=false \
  trainer.algorithm.use_kl_loss=false \
  +trainer.max_steps="${GRPO_STEPS:-9}" \
  trainer.eval_before_train=false \
  trainer.eval_interval="${GRPO_EVAL_INTERVAL:-9}" \
  trainer.run_name=gsm8k_qwen_grpo \
  trainer.ckpt_path="$RUN_DIR/gsm8k_qwen_grpo/ckpt" \
  trainer.export_path="$RUN_DIR/gsm8k_qwen_grpo/export" \
  trainer.hf_save_interval=1000 \
  "$@"
$RLVR plot "$RUN_DIR/gsm8k_qwen_grpo"
