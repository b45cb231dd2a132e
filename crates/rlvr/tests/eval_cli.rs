//! `rlvr eval` evaluates `data.val_data` alone: it needs no training set, and a missing
//! validation file is an error that names it.

use std::path::Path;
use std::process::{Command, Output};

fn rlvr(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run rlvr")
}

fn eval_args(dir: &Path, val: &str) -> Vec<String> {
    let toy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/toy/dapo_toy.yaml");
    let d = dir.display();
    vec![
        "eval".into(),
        "--config".into(),
        toy.display().to_string(),
        format!("trainer.policy.model.path={d}/model"),
        // Absent on purpose: evaluation must not open it.
        format!("data.train_data=['{d}/no_such_train.parquet']"),
        format!("data.val_data=['{val}']"),
        format!("trainer.log_path={d}/logs"),
        format!("trainer.ckpt_path={d}/ckpt"),
        "trainer.logger=jsonl".into(),
    ]
}

#[test]
fn eval_reads_only_the_validation_set() {
    let dir = tempfile::tempdir().unwrap();
    rlvr::toy::write(dir.path(), 5).unwrap();
    let val = dir.path().join("data/validation.parquet");
    let out = rlvr(&eval_args(dir.path(), &val.display().to_string()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rlvr eval failed: {stderr}");
    let metrics: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let score = metrics["eval/all/avg_score"]
        .as_f64()
        .unwrap_or_else(|| panic!("no eval/all/avg_score in {metrics}"));
    assert!((0.0..=1.0).contains(&score), "score {score}");
    assert!(metrics["timing/eval"].as_f64().unwrap() > 0.0);
}

#[test]
fn eval_names_a_missing_validation_file() {
    let dir = tempfile::tempdir().unwrap();
    rlvr::toy::write(dir.path(), 5).unwrap();
    let missing = dir.path().join("data/missing.parquet");
    let out = rlvr(&eval_args(dir.path(), &missing.display().to_string()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("missing.parquet"),
        "the error should name the file: {stderr}"
    );
}

/// Rollouts stop on `generation_config.json`'s EOS ids too, as vLLM and `rlvr serve` do: with
/// every token id listed there, each response is one token long.
#[test]
fn generation_config_eos_ids_stop_rollouts() {
    let dir = tempfile::tempdir().unwrap();
    rlvr::toy::write(dir.path(), 5).unwrap();
    let model = dir.path().join("model");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let vocab = config["vocab_size"].as_u64().unwrap();
    let all: Vec<u64> = (0..vocab).collect();
    std::fs::write(
        model.join("generation_config.json"),
        serde_json::json!({ "eos_token_id": all }).to_string(),
    )
    .unwrap();
    let val = dir.path().join("data/validation.parquet");
    let out = rlvr(&eval_args(dir.path(), &val.display().to_string()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rlvr eval failed: {stderr}");
    let metrics: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        metrics["eval/all/response_length"].as_f64(),
        Some(1.0),
        "{metrics}"
    );
}
