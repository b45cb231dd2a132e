//! DAPO on the toy task with generation on two `rlvr serve` processes as remote engines: weights
//! are synced after every step and verified by version; one server is killed in the middle of a
//! step, and the step (and the run) completes on the other.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn rlvr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
}

/// A running `rlvr serve`; its stderr lines arrive on `lines`. Killed on drop.
struct Served {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(model: &Path, name: &str) -> Served {
    let mut child = rlvr()
        .args(["serve", "--port", "0", "--served-model-name", name])
        .arg("--model")
        .arg(model)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rlvr serve did not start");
        };
        if let Some(at) = line.find("on http://") {
            let addr = line[at + "on http://".len()..].trim().to_string();
            return Served { child, addr, lines };
        }
    }
}

fn train(
    dir: &Path,
    backend: &str,
    urls: &[&str],
    sync: &Path,
    steps: usize,
    extra: &[&str],
) -> Child {
    let toy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/toy/dapo_toy.yaml");
    let urls = urls
        .iter()
        .map(|u| format!("'{u}'"))
        .collect::<Vec<_>>()
        .join(",");
    rlvr()
        .arg("train")
        .arg("--config")
        .arg(toy)
        .args(rlvr::toy::run_overrides(dir))
        .args([
            "trainer.eval_before_train=false".into(),
            format!("+trainer.max_steps={steps}"),
            "generator.run_engines_locally=false".into(),
            format!("generator.backend={backend}"),
            format!("generator.remote_inference_engine_urls=[{urls}]"),
            "generator.served_model_name=toy-policy".into(),
            format!("generator.weight_sync_dir={}", sync.display()),
            // One group in flight per engine, so each engine works through its groups in turn.
            "generator.max_num_seqs=16".into(),
            "generator.remote_max_retries=2".into(),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn setup(dir: &Path) {
    assert!(rlvr()
        .arg("toy")
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn get(url: &str) -> serde_json::Value {
    ureq::get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

/// Waits for `child`, failing after `limit`; returns its stderr.
fn finish(mut child: Child, limit: Duration) -> (bool, String) {
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("training did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.success(), reader.join().unwrap())
}

fn logged_steps(dir: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join("logs/toy_dapo/metrics.jsonl")).unwrap();
    let mut steps: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    steps.dedup();
    steps
}

#[test]
fn dapo_on_two_vllm_style_servers_survives_losing_one_mid_step() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    // vLLM reloads the checkpoint it was started on, so both servers serve the sync directory.
    let sync = dir.path().join("sync");
    copy_dir(&dir.path().join("model"), &sync);
    let a = serve(&sync, "toy-policy");
    let mut b = serve(&sync, "toy-policy");
    let trainer = train(dir.path(), "vllm", &[&a.addr, &b.addr], &sync, 4, &[]);

    // Kill server B once it has answered requests of step 3 (after the sync to version 2).
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut synced_2 = false;
    loop {
        let line = b
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("server B never served step 3");
        synced_2 |= line.contains("weight version 2");
        if synced_2 && line.contains("generated") {
            b.child.kill().unwrap();
            break;
        }
    }
    let (ok, log) = finish(trainer, Duration::from_secs(240));
    assert!(ok, "training failed:\n{log}");
    assert_eq!(logged_steps(dir.path()), vec![1, 2, 3, 4], "{log}");
    // The dispatcher noticed mid-step and moved B's groups to A ...
    let down = log
        .find("is down")
        .unwrap_or_else(|| panic!("no failover in the log:\n{log}"));
    assert!(
        log[down..].contains("its prompt groups go to the others"),
        "{log}"
    );
    // ... during step 3, before the weights of step 3 were synced (to A alone).
    let synced_3 = log
        .find("weights synced to 1 engine(s) as version 3")
        .unwrap_or_else(|| panic!("step 3 not synced to A alone:\n{log}"));
    assert!(down < synced_3, "{log}");
    // Every sync was verified; A serves the last step's weights.
    assert!(
        log.contains("weights synced to 2 engine(s) as version 2"),
        "{log}"
    );
    let v = get(&format!("http://{}/weight_info", a.addr));
    assert_eq!(v["weight_version"], "4");
}

#[test]
fn dapo_on_two_sglang_style_servers_syncs_weights_every_step() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let model = dir.path().join("model");
    let servers = [serve(&model, "toy-policy"), serve(&model, "toy-policy")];
    let sync = dir.path().join("sync");
    // With off-policy correction on: the servers' log-probs are those the trainer computes, so
    // the importance ratios are 1 and nothing is masked. The servers decode in f32, so the
    // trainer does too (bf16 products would differ from them by ~3e-4).
    let trainer = train(
        dir.path(),
        "sglang",
        &[&servers[0].addr, &servers[1].addr],
        &sync,
        2,
        &[
            "trainer.bf16=false",
            "trainer.algorithm.off_policy_correction.tis_ratio_type=token",
            "trainer.algorithm.off_policy_correction.sequence_mask_metric=geometric",
        ],
    );
    let (ok, log) = finish(trainer, Duration::from_secs(240));
    assert!(ok, "training failed:\n{log}");
    assert_eq!(logged_steps(dir.path()), vec![1, 2], "{log}");
    for version in 0..=2 {
        assert!(
            log.contains(&format!(
                "weights synced to 2 engine(s) as version {version}"
            )),
            "{log}"
        );
    }
    for s in &servers {
        let v = get(&format!("http://{}/get_weight_version", s.addr));
        assert_eq!(v["weight_version"], "2");
    }
    let text = std::fs::read_to_string(dir.path().join("logs/toy_dapo/metrics.jsonl")).unwrap();
    for line in text.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let diff = m["policy/rollout_train_logprobs_abs_diff_mean"]
            .as_f64()
            .unwrap();
        assert!(diff < 1e-4, "{line}");
        let ratio = m["policy/loss_metrics/is_ratio_mean"].as_f64().unwrap();
        assert!((ratio - 1.0).abs() < 1e-3, "{line}");
        let masked = m["policy/loss_metrics/geo_sequence_mask_masked_ratio"]
            .as_f64()
            .unwrap();
        assert_eq!(masked, 0.0, "{line}");
    }
}
