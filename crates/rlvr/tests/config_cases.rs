//! The config through its public API, as tables of cases. Each line is the overrides a command
//! line passes (split at spaces; none for the defaults), `=>`, and what must come of them, split
//! at `; `. `tests/config.rs` checks the defaults against SkyRL's and runs the binary.

use rlvr::config::{flatten, ConfigBuilder, Origin, ResolvedConfig};
use serde_yaml::Value;

/// Accepted and valid; `key = yaml` is the key's value in the typed config (in the resolved tree
/// for keys the typed config does not hold), numbers compared by value.
const ACCEPTED: &str = r#"
 => trainer.algorithm.overlong_buffer = null
trainer.algorithm.eps_clip_high=0.28 => trainer.algorithm.eps_clip_high = 0.28
trainer.algorithm.clip_ratio_c=10 => trainer.algorithm.clip_ratio_c = 10.0
trainer.algorithm.dynamic_sampling.type=filter => trainer.algorithm.dynamic_sampling.type = filter
trainer.resume_mode=null => trainer.resume_mode = null
trainer.policy.optimizer_config.adam_betas=[0.8,0.95] => trainer.policy.optimizer_config.adam_betas = [0.8, 0.95]
trainer.run_name=2024 => trainer.run_name = '2024'
data.val_data="['a.parquet','b']" => data.val_data = [a.parquet, b]
trainer.logger=['console','jsonl'] => trainer.logger = console,jsonl
trainer.logger="['console','jsonl']" => trainer.logger = console,jsonl
trainer.logger=csv => trainer.logger = csv
generator.sampling_params.stop="['</s>','END']" => generator.sampling_params.stop = ['</s>', END]
generator.sampling_params.stop=['x'] => generator.sampling_params.stop = [x]
generator.sampling_params.stop=END => generator.sampling_params.stop = [END]
generator.sampling_params.stop=null => generator.sampling_params.stop = null
+trainer.algorithm.overlong_buffer.len=512 +trainer.algorithm.overlong_buffer.penalty_factor=1 => trainer.algorithm.overlong_buffer.len = 512; trainer.algorithm.overlong_buffer.penalty_factor = 1
+trainer.my_extension.alpha=0.5 trainer.my_extension.alpha=0.25 ++trainer.seed=7 => trainer.my_extension.alpha = 0.25; trainer.seed = 7
trainer.policy.model.path=/models/small trainer.max_prompt_length=256 generator.sampling_params.max_generate_length=300 => generator.model_name = /models/small; trainer.ref.model.path = /models/small; generator.max_input_length = 256; generator.eval_sampling_params.max_generate_length = 300
generator.sampling_params.max_generate_length=${trainer.max_prompt_length} => generator.sampling_params.max_generate_length = 512; generator.eval_sampling_params.max_generate_length = 512
+x.n=512 +x.l=[1,2] +x.z=null +y.n=${x.n} +y.l=${x.l} +y.z=${x.z} +y.c=${.n} => y.n = 512; y.l = [1, 2]; y.z = null; y.c = 512
+p=${q} +q=${oc.env:RLVR_TEST_DIR}/ckpt +l=['${oc.env:RLVR_TEST_DIR}/d.parquet'] => p = test-home/ckpt; l = ['test-home/d.parquet']
+d=${oc.env:RLVR_TEST_SURELY_UNSET,fallback} +e=cost\${nope_x}${n} +n=3 +w=${oc.env:RLVR_TEST_SURELY_UNSET,a$b} => d = fallback; e = cost${nope_x}3; w = a$b
+k=3 +f=1.0e-6 +g=1e-2 +b=true +z=null +s=filter +q="grpo" +t='10' +e= => k = 3; f = 1.0e-6; g = 0.01; b = true; z = null; s = filter; q = grpo; t = '10'; e = ''
+k=[0.9,0.999] +s=['x','y'] +t="['x']" => k = [0.9, 0.999]; s = [x, y]; t = "['x']"
+k="$RLVR_TEST_DIR/ckpts/x" +l="['$RLVR_TEST_DIR/d']" +m=${RLVR_TEST_DIR}/x => k = test-home/ckpts/x; l = "['test-home/d']"; m = test-home/x
+k=${RLVR_SURELY_UNSET_VAR_X:-/d}/x +u=$RLVR_SURELY_UNSET_VAR_X/a +c=cost$ +d=a$$b => k = /d/x; u = $RLVR_SURELY_UNSET_VAR_X/a; c = cost$; d = a$$b
trainer.ckpt_path=$RLVR_TEST_DIR/c +k=${trainer.ckpt_path}/w => k = test-home/c/w
trainer.micro_train_batch_size_per_gpu=64 =>
trainer.algorithm.advantage_estimator=gae trainer.critic.model.path=/c trainer.algorithm.value_clip=null =>
generator.eval_sampling_params.temperature=0 =>
"#;

/// Refused; each text is in the error, each `!text` is not. Texts quote the message itself, not
/// just a key: an error quotes the override it came from, so a bare key would match any error.
const REFUSED: &str = r#"
trainer.algorithm.eps_clip_hgih=0.3 => override `trainer.algorithm.eps_clip_hgih=0.3`: unknown config key `trainer.algorithm.eps_clip_hgih`; did you mean `trainer.algorithm.eps_clip_high`? (to add a new key write `+trainer.algorithm.eps_clip_hgih=...`)
trainer.eps_clip_high=0.3 => did you mean `trainer.algorithm.eps_clip_high`?
trainer.optimizer_config.lr=1 => did you mean `trainer.policy.optimizer_config.lr`?
zzzzzzzzzzzzzzzzzzzzzzzzzzzzz=1 => unknown config key; !did you mean
trainer.train_batch_size=abc => override `trainer.train_batch_size=abc`: `trainer.train_batch_size` expects a non-negative integer, got a string "abc"
trainer.algorithm.eps_clip_low=high => `trainer.algorithm.eps_clip_low` expects a number, got a string "high"
trainer.algorithm.use_kl_loss=1 => `trainer.algorithm.use_kl_loss` expects a boolean (true/false), got an integer 1
trainer.epochs=2.5 => `trainer.epochs` expects a non-negative integer, got a float 2.5
trainer.epochs='7' => `trainer.epochs` expects a non-negative integer, got a string "7"
trainer.train_batch_size=null => `trainer.train_batch_size` expects a non-negative integer, got null
trainer.algorithm=3 => `trainer.algorithm` expects a section (mapping), got an integer
generator.backend=trt => override `generator.backend=trt`: `generator.backend` expects one of vllm, sglang, got a string "trt"
trainer.resume_mode=sometimes => `trainer.resume_mode` expects one of none, latest, from_path
trainer.logger=[1,2] => `trainer.logger` expects a name or a list of names (e.g. ['a','b']), got a list
+trainer.seed=1 => `trainer.seed` already exists; drop the `+` to override it (or write `++trainer.seed=...`)
+trainer.seed.x=1 => cannot set `trainer.seed.x`: `trainer.seed` is an integer, not a section
+trainer.algorithm.overlong_buffer.len=long => `trainer.algorithm.overlong_buffer.len` expects a non-negative integer, got a string "long"
+trainer.algorithm.overlong_buffer.len=512 => `trainer.algorithm.overlong_buffer.penalty_factor` is missing: `trainer.algorithm.overlong_buffer` needs it once any of its keys is set
generator.max_input_length=${trainer.run_name} => override `generator.max_input_length=${trainer.run_name}`: `generator.max_input_length` expects a non-negative integer, got a string "test_run"
a.b => bad override: expected `key=value`
a..b=1 => bad override: `a..b` is not a dotted key
~a.b => bad override: deleting keys (`~key`) is not supported
+k=[1,2 => bad override: cannot parse `[1,2`
+a.b=${a.nope} => cannot resolve `a.b`: `${a.nope}` refers to `a.nope`, which does not exist
+a=${b} +b=${a} => cannot resolve `a`: interpolation cycle: b -> a -> b
+a=${oc.env:RLVR_TEST_SURELY_UNSET} => cannot resolve `a`: environment variable `RLVR_TEST_SURELY_UNSET` is not set
+a=${oc.decode:x} => cannot resolve `a`: unknown resolver `oc.decode`
+a=${b.${c}} => cannot resolve `a`: nested `${` in "${b.${c}}" is not supported
+a=x${b => cannot resolve `a`: unclosed `${` in "x${b"
trainer.train_batch_size=1000 => trainer.train_batch_size % trainer.policy_mini_batch_size != 0 (1000 % 256 = 232): a training batch must split into whole mini-batches
trainer.policy_mini_batch_size=0 => `trainer.policy_mini_batch_size` must be > 0
trainer.micro_train_batch_size_per_gpu=3 => trainer.policy_mini_batch_size * generator.n_samples_per_prompt % trainer.micro_train_batch_size_per_gpu != 0 (256 * 5 = 1280 rows per mini-batch, micro-batch 3)
generator.n_samples_per_prompt=0 => `generator.n_samples_per_prompt` must be > 0
trainer.critic.model.path=/m trainer.critic_mini_batch_size=1000 => trainer.train_batch_size % trainer.critic_mini_batch_size != 0 (1024 % 1000 = 24)
trainer.algorithm.use_kl_in_reward=true => `trainer.algorithm.use_kl_in_reward` and `trainer.algorithm.use_kl_loss` are both true
trainer.algorithm.advantage_estimator=nope => `trainer.algorithm.advantage_estimator` = "nope" is not a registered advantage estimator (one of gae, grpo, reinforce++, rloo)
trainer.algorithm.advantage_estimator=gae => `trainer.algorithm.advantage_estimator` = "gae" needs a critic: set `trainer.critic.model.path`
trainer.algorithm.value_clip=-0.5 => `trainer.algorithm.value_clip` must be >= 0 (or null for an unclipped value loss), got -0.5
trainer.algorithm.policy_loss_type=nope => `trainer.algorithm.policy_loss_type` = "nope" is not a registered policy loss (one of cispo, clip_cov, dual_clip, gspo, kl_cov, regular, sapo)
trainer.algorithm.loss_reduction=mean => `trainer.algorithm.loss_reduction` expects one of token_mean, token_mean_legacy, sequence_mean, seq_mean_token_sum_norm, prompt_mean, got a string "mean"
trainer.algorithm.dynamic_sampling.type=drop => `trainer.algorithm.dynamic_sampling.type` expects one of filter, replace, got a string "drop"
trainer.algorithm.dynamic_sampling.type=filter generator.n_samples_per_prompt=1 => `generator.n_samples_per_prompt` must be >= 2 for `trainer.algorithm.dynamic_sampling.type` = filter
trainer.algorithm.kl_estimator_type=k4 => `trainer.algorithm.kl_estimator_type` expects one of k1, k2, k3, abs, got a string "k4"
trainer.algorithm.policy_loss_type=dual_clip trainer.algorithm.clip_ratio_c=1.0 => `trainer.algorithm.clip_ratio_c` must be > 1 for policy_loss_type=dual_clip, got 1
trainer.algorithm.eps_clip_low=1.5 => `trainer.algorithm.eps_clip_low` must be in [0, 1] (the ratio is clipped to [1 - eps_clip_low, 1 + eps_clip_high]), got 1.5
trainer.algorithm.off_policy_correction.tis_ratio_type=tokens => `trainer.algorithm.off_policy_correction.tis_ratio_type` expects one of token, sequence, got a string "tokens"
+trainer.algorithm.overlong_buffer.len=2048 +trainer.algorithm.overlong_buffer.penalty_factor=1.0 => `trainer.algorithm.overlong_buffer.len` must be in 1..=generator.sampling_params.max_generate_length (1024), got 2048
trainer.policy.optimizer_config.lr=.nan => `trainer.policy.optimizer_config.lr` must be a finite number, got NaN
generator.sampling_params.temperature=.inf => `generator.sampling_params.temperature` must be a finite number, got inf
trainer.algorithm.eps_clip_high=-.inf => `trainer.algorithm.eps_clip_high` must be a finite number, got -inf
trainer.algorithm.max_seq_len=0 => `trainer.algorithm.max_seq_len` must be > 0 (or null)
generator.sampling_params.temperature=0 => `generator.sampling_params.temperature` must be > 0 for training rollouts (log-probs are computed from logits / temperature), got 0
generator.eval_sampling_params.top_p=0 => `generator.eval_sampling_params.top_p` must be in (0, 1], got 0
generator.sampling_params.top_k=0 => `generator.sampling_params.top_k` must be -1 (off) or >= 1, got 0
generator.max_input_length=100 => `generator.max_input_length` (100) must equal `trainer.max_prompt_length` (512)
trainer.max_ckpts_to_keep=0 => `trainer.max_ckpts_to_keep` must be > 0 (keep the last N) or negative (keep all), got 0
trainer.resume_mode=from_path => `trainer.resume_mode` = from_path needs `trainer.resume_path`
trainer.policy.optimizer_config.adam_betas=[0.9] => `trainer.policy.optimizer_config.adam_betas` must be two numbers in [0, 1), got [0.9]
trainer.policy.optimizer_config.scheduler=polynomial => `trainer.policy.optimizer_config.scheduler` expects one of constant, constant_with_warmup, linear, cosine, got a string "polynomial"
environment.skyrl_gym.gsm8k.method=fuzzy => `environment.skyrl_gym.gsm8k.method` expects one of strict, flexible, numeric, got a string "fuzzy"
data.train_data=[] => `data.train_data` is empty; give at least one file
trainer.train_batch_size=1000 generator.sampling_params.top_p=2 => trainer.train_batch_size % trainer.policy_mini_batch_size != 0; `generator.sampling_params.top_p` must be in (0, 1], got 2
generator.step_wise_trajectories=true => `generator.step_wise_trajectories=true`: step-wise trajectories are not supported by rlvr; use false
trainer.policy.model.lora.rank=8 => `trainer.policy.model.lora.rank=8`: LoRA is not supported by rlvr; training would update all weights instead; use 0
generator.max_turns=2 => `generator.max_turns=2`: multi-turn generation is not supported by rlvr; use 1
generator.sampling_params.repetition_penalty=1.1 => `generator.sampling_params.repetition_penalty=1.1`: rlvr's engines sample without a repetition penalty; use 1.0
generator.eval_sampling_params.repetition_penalty=1.05 => `generator.eval_sampling_params.repetition_penalty=1.05`: rlvr's engines sample without a repetition penalty; use 1.0
trainer.update_ref_every_epoch=true => `trainer.update_ref_every_epoch=true`: rlvr keeps the reference model frozen for the whole run; use false
trainer.dump_data_batch=true => `trainer.dump_data_batch=true`: rlvr does not dump training batches
"#;

/// Valid, with exactly these warnings in this order (each text starts its line).
const WARNED: &str = r#"
 =>
trainer.algorithm.loss_reduction=seq_mean_token_sum_norm => `trainer.algorithm.max_seq_len` is null: seq_mean_token_sum_norm divides by generator.max_input_length + generator.sampling_params.max_generate_length = 1536
trainer.algorithm.loss_reduction=seq_mean_token_sum_norm trainer.algorithm.max_seq_len=4096 =>
trainer.sequence_parallel_backend=ring => `trainer.sequence_parallel_backend=ring`
generator.backend=vllm trainer.placement.policy_num_gpus_per_node=4 generator.inference_engine_tensor_parallel_size=1 => `generator.backend=vllm`: local engines are rlvr's embedded engine; `trainer.placement.policy_num_gpus_per_node=4`
"#;

/// Build, resolve and validate: the config and its warnings, or the error as a user reads it.
fn check(args: &[&str]) -> Result<(ResolvedConfig, Vec<String>), String> {
    let mut builder = ConfigBuilder::new();
    builder.apply_overrides(args).map_err(|e| e.to_string())?;
    let r = builder.resolve().map_err(|e| e.to_string())?;
    let warnings = r.validate().map_err(|e| e.to_string())?;
    Ok((r, warnings))
}

/// The cases of a table: (the line, its overrides, its texts).
fn cases(table: &str) -> impl Iterator<Item = (&str, Vec<&str>, Vec<&str>)> {
    std::env::set_var("RLVR_TEST_DIR", "test-home");
    table.lines().filter(|l| !l.trim().is_empty()).map(|line| {
        let (args, texts) = line
            .split_once(" =>")
            .expect("a case is `overrides => texts`");
        let texts = texts.split("; ").map(str::trim).filter(|t| !t.is_empty());
        (line, args.split_whitespace().collect(), texts.collect())
    })
}

/// Equal as config values: numbers by value.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[test]
fn accepted_overrides_give_their_values() {
    for (line, args, texts) in cases(ACCEPTED) {
        let (r, _) = check(&args).unwrap_or_else(|e| panic!("{line}\nrefused: {e}"));
        let typed = serde_yaml::to_value(&r.config).unwrap();
        let typed = flatten(&typed);
        for text in texts {
            let (key, want) = text.split_once(" = ").expect("a check is `key = yaml`");
            let want: Value = serde_yaml::from_str(want).unwrap();
            let got = typed.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
            let got = got.or_else(|| r.get(key));
            assert!(
                got.is_some_and(|g| same(g, &want)),
                "{line}\n`{key}`: {got:?}"
            );
        }
    }
    for reduction in rlvr_algo::LossReduction::NAMES {
        let arg = format!("trainer.algorithm.loss_reduction={reduction}");
        assert!(check(&[&arg]).is_ok(), "{arg}");
    }
}

#[test]
fn refused_overrides_say_why() {
    for (line, args, texts) in cases(REFUSED) {
        let Err(e) = check(&args) else {
            panic!("{line}\nwas accepted")
        };
        for text in texts {
            match text.strip_prefix('!') {
                Some(absent) => assert!(!e.contains(absent), "{line}\n{e}"),
                None => assert!(e.contains(text), "{line}\n{e}"),
            }
        }
    }
    // One line per value: the range rules leave non-finite numbers to the check of every number.
    let e = check(&["trainer.policy.optimizer_config.lr=.nan"]).unwrap_err();
    assert_eq!(e.matches("optimizer_config.lr").count(), 1, "{e}");
}

#[test]
fn warnings_are_one_line_per_key() {
    for (line, args, texts) in cases(WARNED) {
        let (_, warnings) = check(&args).unwrap_or_else(|e| panic!("{line}\nrefused: {e}"));
        assert_eq!(warnings.len(), texts.len(), "{line}\n{warnings:#?}");
        for (w, text) in warnings.iter().zip(texts) {
            assert!(w.starts_with(text) && !w.contains('\n'), "{line}\n{w}");
        }
    }
}

/// Values with spaces, as a shell passes them after removing the quotes.
#[test]
fn values_with_spaces() {
    let args = [
        "generator.sampling_params.stop=['</s>', 'END']",
        "generator.chat_template_kwargs={enable_thinking: false}",
        "+k=a: b",
    ];
    let (r, _) = check(&args).unwrap();
    let stop = &r.config.generator.sampling_params.stop;
    assert_eq!(
        stop.as_deref(),
        Some(&["</s>".to_string(), "END".into()][..])
    );
    let kwargs = &r.config.generator.chat_template_kwargs;
    assert_eq!(kwargs.get("enable_thinking"), Some(&Value::from(false)));
    assert_eq!(r.get("k"), Some(&Value::from("a: b")));
    // A string spelling a list, spaces inside (quotes a script passed on as they were).
    let (r, _) = check(&["generator.sampling_params.stop=\"['</s>', 'END']\""]).unwrap();
    assert_eq!(
        r.config.generator.sampling_params.stop_strings(),
        ["</s>", "END"]
    );
}

#[test]
fn yaml_file_merges_with_the_same_checks() {
    let file = || Origin::File("my.yaml".into());
    let mut b = ConfigBuilder::new();
    let yaml = "defaults: [ppo_base_config, _self_]\ntrainer:\n  algorithm:\n    eps_clip_high: 0.28\n    overlong_buffer: {len: 64, penalty_factor: 0.5}\n  policy:\n    model_config_kwargs: {attn: eager}\n";
    b.merge_yaml(yaml, file()).unwrap();
    b.apply_override("trainer.algorithm.eps_clip_high=0.3")
        .unwrap();
    let r = b.resolve().unwrap();
    let a = &r.config.trainer.algorithm;
    assert_eq!(a.eps_clip_high, 0.3);
    assert_eq!(a.overlong_buffer.as_ref().unwrap().len, 64);
    let attn = r.get("trainer.policy.model_config_kwargs.attn");
    assert_eq!(attn, Some(&Value::from("eager")));
    let refused = |yaml: &str| match ConfigBuilder::new().merge_yaml(yaml, file()) {
        Ok(b) => b.resolve().unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    for (yaml, texts) in [
        (
            "generator:\n  sampling_params:\n    temprature: 0.5\n",
            [
                "config file my.yaml",
                "generator.sampling_params.temperature",
            ],
        ),
        (
            "trainer: {epochs: many}",
            ["config file my.yaml", "trainer.epochs"],
        ),
        (
            "trainer: {algoritm: {gamma: 1}}",
            ["did you mean `trainer.algorithm`", "my.yaml"],
        ),
        ("defaults: [grpo_config]", ["Hydra `defaults:`", "my.yaml"]),
        ("- a\n- b", ["the top level must be a mapping", "a list"]),
    ] {
        let e = refused(yaml);
        assert!(texts.iter().all(|t| e.contains(t)), "{yaml}\n{e}");
    }
}
