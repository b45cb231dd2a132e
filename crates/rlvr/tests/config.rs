//! The config system against SkyRL's reference files (copied into tests/data) and through the
//! built `rlvr` binary, the way a user runs it.

use rlvr::config::{flatten, ConfigBuilder};
use serde_yaml::Value;
use std::process::{Command, Output};

const DEFAULTS: &str = include_str!("data/skyrl_base_config_defaults.txt");
const DAPO: &str = include_str!("data/skyrl_dapo_gsm8k_overrides.txt");

/// Keys rlvr adds to SkyRL's base config (each marked in base.yaml).
const RLVR_ADDED: &[&str] = &[
    "trainer.device",
    "trainer.max_consecutive_skipped_steps",
    "trainer.algorithm.overlong_buffer",
    "generator.weight_sync_dir",
    "generator.remote_request_timeout_s",
    "generator.remote_max_retries",
    "generator.remote_api_key",
    // Composed by SkyRL from skyrl_gym_config/default.yaml (not in ppo_base_config.yaml).
    "environment.skyrl_gym.",
];

fn reference_lines(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_once('=').expect("key=value"))
        .collect()
}

/// Equal as config values: numbers by value (an integer default may be stored as a float).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Sequence(x), Value::Sequence(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Mapping(x), Value::Mapping(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn defaults_equal_skyrl_reference_for_every_key() {
    let builder = ConfigBuilder::new();
    let tree = builder.unresolved();
    let reference = reference_lines(DEFAULTS);
    assert!(
        reference.len() > 180,
        "reference has {} keys",
        reference.len()
    );
    for (key, json) in &reference {
        let expected: Value = serde_json::from_str(json).unwrap();
        let ours = rlvr::config::flatten(tree)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("base.yaml lacks `{key}`"));
        // SkyRL's YAML writes `weight_decay: 1e-2`; PyYAML (which wrote the reference) reads that
        // as a string, OmegaConf (which SkyRL runs) as the float 0.01. rlvr stores the float.
        let expected = match expected {
            Value::String(s) if key.ends_with("weight_decay") => {
                Value::from(s.parse::<f64>().expect("numeric text"))
            }
            other => other,
        };
        assert!(
            same(&ours, &expected),
            "`{key}`: base.yaml has {ours:?}, SkyRL has {expected:?}"
        );
    }
    for (key, _) in flatten(tree) {
        let in_reference = reference.iter().any(|(k, _)| *k == key);
        let added = RLVR_ADDED.iter().any(|p| key == *p || key.starts_with(p));
        assert!(
            in_reference || added,
            "base.yaml has `{key}`, which is neither SkyRL's nor listed as rlvr-added"
        );
    }
}

/// Every typed field holds its key's resolved value (what the typed config leaves out is
/// `skyrl_compat.yaml`'s; the unit tests of `config::compat` check that the two split the keys).
#[test]
fn typed_config_reads_the_resolved_tree() {
    let dapo: Vec<&str> = DAPO
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    for args in [Vec::new(), dapo] {
        let r = ConfigBuilder::new()
            .apply_overrides(&args)
            .unwrap()
            .resolve()
            .unwrap();
        let typed = serde_yaml::to_value(&r.config).unwrap();
        let typed_leaves = flatten(&typed);
        assert!(typed_leaves.len() > 80, "{}", typed_leaves.len());
        for (key, v) in typed_leaves {
            let tree = r.get(&key);
            assert!(
                tree.is_some_and(|t| same(v, t)),
                "`{key}`: typed {v:?} vs tree {tree:?}"
            );
        }
    }
}

/// A `$HOME` of the test's own for the child, so the `~` and `$HOME` expansions are checked on
/// every machine, whatever its environment.
fn home() -> &'static str {
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().unwrap())
        .path()
        .to_str()
        .expect("a UTF-8 temporary directory")
}

fn rlvr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("HOME", home())
        .output()
        .expect("run rlvr")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What `rlvr config show $(grep -v '^#' file)` receives: each line as one argument, quotes and
/// `$HOME` untouched (command substitution does word splitting only).
fn dapo_args_via_command_substitution() -> Vec<String> {
    DAPO.lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .map(str::to_string)
        .collect()
}

/// What a shell script passing the lines directly gives: quotes removed, `$HOME` expanded.
fn dapo_args_via_shell(home: &str) -> Vec<String> {
    dapo_args_via_command_substitution()
        .into_iter()
        .map(|a| a.replace('"', "").replace("$HOME", home))
        .collect()
}

#[test]
fn config_show_accepts_every_dapo_override() {
    let home = home();
    let mut outputs = Vec::new();
    for args in [
        dapo_args_via_command_substitution(),
        dapo_args_via_shell(home),
    ] {
        let mut argv = vec!["config", "show"];
        argv.extend(args.iter().map(String::as_str));
        let out = rlvr(&argv);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "rlvr config show failed: {stderr}");
        let shown: Value = serde_yaml::from_slice(&out.stdout).unwrap();
        let at = |k: &str| {
            rlvr::config::flatten(&shown)
                .into_iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("`{k}` missing from the output"))
        };
        let train = format!("{home}/data/gsm8k/train.parquet");
        assert_eq!(
            at("data.train_data"),
            Value::Sequence(vec![Value::from(train)])
        );
        assert_eq!(
            at("trainer.algorithm.policy_loss_type"),
            Value::from("dual_clip")
        );
        assert_eq!(at("trainer.algorithm.eps_clip_high"), Value::from(0.28));
        assert_eq!(at("trainer.algorithm.clip_ratio_c"), Value::from(10.0));
        assert_eq!(
            at("trainer.algorithm.overlong_buffer.len"),
            Value::from(512)
        );
        assert_eq!(
            at("trainer.algorithm.overlong_buffer.penalty_factor"),
            Value::from(1.0)
        );
        assert_eq!(
            at("trainer.algorithm.dynamic_sampling.type"),
            Value::from("filter")
        );
        assert_eq!(at("trainer.algorithm.use_kl_loss"), Value::from(false));
        assert_eq!(at("trainer.resume_mode"), Value::Null);
        assert_eq!(
            at("trainer.policy.optimizer_config.weight_decay"),
            Value::from(0.1)
        );
        assert_eq!(
            at("trainer.micro_train_batch_size_per_gpu"),
            Value::from(64)
        );
        assert_eq!(at("generator.eval_sampling_params.top_p"), Value::from(0.7));
        assert_eq!(at("trainer.project_name"), Value::from("gsm8k"));
        assert_eq!(
            at("trainer.ckpt_path"),
            Value::from(format!("{home}/ckpts/gsm8k_1.5B_ckpt"))
        );
        // One line per GPU-stack key rlvr does not honour, e.g. the vLLM backend.
        assert!(
            stderr.contains("`generator.backend=vllm`: local engines are rlvr's embedded engine"),
            "{stderr}"
        );
        assert!(
            stderr.lines().all(|l| l.starts_with("warning: ")),
            "{stderr}"
        );
        outputs.push(out.stdout);
    }
    assert_eq!(outputs[0], outputs[1], "quoting style changed the result");
}

#[test]
fn misspelt_key_fails_naming_the_nearest_key() {
    let out = rlvr(&["config", "show", "trainer.algorithm.eps_clip_hgih=0.3"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("eps_clip_hgih")
            && stderr.contains("did you mean `trainer.algorithm.eps_clip_high`"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn type_and_validation_errors_exit_nonzero() {
    let out = rlvr(&["config", "show", "trainer.train_batch_size=lots"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("trainer.train_batch_size") && stderr.contains("non-negative integer"),
        "{stderr}"
    );
    let out = rlvr(&["config", "show", "trainer.train_batch_size=1000"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("train_batch_size % trainer.policy_mini_batch_size"),
        "{}",
        text(&out.stderr)
    );
    // The real algorithm registries are consulted.
    let out = rlvr(&["config", "show", "trainer.algorithm.policy_loss_type=bogus"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("policy_loss_type") && stderr.contains("dual_clip"),
        "{stderr}"
    );
    let out = rlvr(&[
        "config",
        "show",
        "trainer.algorithm.advantage_estimator=rloo",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn config_file_is_merged_before_overrides_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("run.yaml");
    std::fs::write(
        &good,
        "trainer:\n  algorithm:\n    eps_clip_high: 0.28\n    loss_reduction: sequence_mean\n",
    )
    .unwrap();
    let out = rlvr(&[
        "config",
        "show",
        "--config",
        good.to_str().unwrap(),
        "trainer.algorithm.eps_clip_high=0.3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("eps_clip_high: 0.3\n"), "{stdout}");
    assert!(
        stdout.contains("loss_reduction: sequence_mean\n"),
        "{stdout}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "generator:\n  n_sample_per_prompt: 8\n").unwrap();
    let out = rlvr(&["config", "show", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("generator.n_samples_per_prompt"),
        "{stderr}"
    );
}

/// Keys of SkyRL's config that rlvr acts on as SkyRL does (each is read by the trainer,
/// generator, data or logging code; tests elsewhere check what it does).
const HONOURED: &[&str] = &[
    "data.train_data",
    "data.val_data",
    "trainer.policy.model.path",
    "trainer.policy.optimizer_config.",
    "trainer.ref.model.path",
    "trainer.critic.model.path",
    "trainer.algorithm.",
    "trainer.seed",
    "trainer.resume_mode",
    "trainer.resume_path",
    "trainer.log_path",
    "trainer.ckpt_path",
    "trainer.max_ckpts_to_keep",
    "trainer.ckpt_interval",
    "trainer.hf_save_interval",
    "trainer.export_path",
    "trainer.bf16",
    "trainer.epochs",
    "trainer.update_epochs_per_batch",
    "trainer.train_batch_size",
    "trainer.policy_mini_batch_size",
    "trainer.micro_train_batch_size_per_gpu",
    "trainer.micro_forward_batch_size_per_gpu",
    "trainer.eval_batch_size",
    "trainer.eval_before_train",
    "trainer.eval_interval",
    "trainer.max_prompt_length",
    "trainer.run_name",
    "trainer.logger",
    "trainer.dump_eval_results",
    "generator.model_name",
    "generator.model_dtype",
    "generator.run_engines_locally",
    "generator.n_samples_per_prompt",
    "generator.max_num_seqs",
    "generator.max_input_length",
    "generator.chat_template.source",
    "generator.chat_template_kwargs",
    "generator.sampling_params.",
    "generator.eval_sampling_params.",
    "generator.eval_n_samples_per_prompt",
    "generator.zero_reward_on_non_stop",
    "generator.apply_overlong_filtering",
    "environment.env_class",
];

/// A value other than `default`, of the same kind.
fn other_value(default: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(default) {
        Ok(serde_json::Value::Bool(b)) => (!b).to_string(),
        Ok(serde_json::Value::Number(n)) if n.is_u64() || n.is_i64() => {
            (n.as_i64().unwrap() + 3).to_string()
        }
        Ok(serde_json::Value::Number(n)) => (n.as_f64().unwrap() * 0.5 + 0.01).to_string(),
        Ok(serde_json::Value::Null) => "3".into(),
        Ok(serde_json::Value::Array(a)) if a.iter().all(|x| x.is_number()) => {
            format!("{:?}", vec![0.5; a.len().max(1)])
        }
        Ok(serde_json::Value::Array(_)) => "['other']".into(),
        Ok(serde_json::Value::Object(_)) => "{other_key: 1}".into(),
        _ => "other".into(),
    }
}

#[test]
fn no_skyrl_key_is_silently_ignored() {
    let mut silent = Vec::new();
    for (key, default) in reference_lines(DEFAULTS) {
        if HONOURED
            .iter()
            .any(|h| key == *h || (h.ends_with('.') && key.starts_with(h)))
        {
            continue;
        }
        let value = other_value(default);
        let mut b = ConfigBuilder::new();
        let outcome = b
            .apply_override(&format!("{key}={value}"))
            .map_err(|e| e.to_string())
            .and_then(|b| b.resolve().map_err(|e| e.to_string()))
            .and_then(|r| r.validate().map_err(|e| e.to_string()));
        let said = match &outcome {
            Ok(warnings) => warnings.iter().any(|w| w.contains(&format!("`{key}="))),
            Err(e) => e.contains(key),
        };
        if !said {
            silent.push(format!("{key}={value}: {outcome:?}"));
        }
    }
    assert!(
        silent.is_empty(),
        "keys set to another value with no effect and no message:\n{}",
        silent.join("\n")
    );
}
