//! A training process killed with SIGKILL in the middle of a step resumes from its last
//! checkpoint, and the resumed run's steps equal those of an uninterrupted run with the same seed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// 128 toy prompts, 8 per step, one epoch.
const STEPS: usize = 16;

fn rlvr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
}

fn train_cmd(dir: &Path, extra: &[&str]) -> Command {
    let toy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/toy/dapo_toy.yaml");
    let mut cmd = rlvr();
    cmd.arg("train")
        .arg("--config")
        .arg(toy)
        .args(rlvr::toy::run_overrides(dir))
        .args([
            // Dynamic sampling draws more than one batch on some steps; 4 epochs of data
            // leave room for STEPS steps.
            "trainer.epochs=4",
            "trainer.eval_before_train=false",
            "trainer.eval_interval=-1",
            "trainer.ckpt_interval=1",
            "trainer.max_ckpts_to_keep=-1",
        ])
        .args(extra)
        .args(
            (!extra.iter().any(|a| a.starts_with("+trainer.max_steps=")))
                .then(|| format!("+trainer.max_steps={STEPS}")),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn setup(dir: &Path) {
    let ok = rlvr()
        .arg("toy")
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
}

/// step → metrics, keeping the last line logged for each step.
fn metrics(dir: &Path) -> BTreeMap<u64, serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(dir.join("logs/toy_dapo/metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(l).unwrap();
            (m["step"].as_u64().unwrap(), m)
        })
        .collect()
}

fn latest_checkpoint(dir: &Path) -> Option<usize> {
    std::fs::read_to_string(dir.join("ckpt/latest_ckpt_global_step.txt"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

type Metrics = BTreeMap<u64, serde_json::Map<String, serde_json::Value>>;

/// The uninterrupted run both tests compare against (run once).
fn reference() -> &'static Metrics {
    static REFERENCE: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    REFERENCE.get_or_init(|| {
        let full = tempfile::tempdir().unwrap();
        setup(full.path());
        assert!(train_cmd(full.path(), &[]).status().unwrap().success());
        let reference = metrics(full.path());
        assert_eq!(
            reference.len(),
            STEPS,
            "the uninterrupted run logs every step"
        );
        reference
    })
}

/// Steps `from..=STEPS` of `resumed` equal the uninterrupted run's.
fn assert_matches_reference(resumed: &Metrics, from: u64) {
    let reference = reference();
    assert_eq!(resumed.len(), STEPS);
    for step in from..=STEPS as u64 {
        for key in [
            "policy/policy_loss",
            "reward/avg_raw_reward",
            "policy/grad_norm",
            "policy/policy_entropy",
        ] {
            let (a, b) = (&reference[&step][key], &resumed[&step][key]);
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                "step {step} {key}: {a} vs {b} after resume"
            );
        }
    }
}

#[test]
fn sigkill_mid_step_then_resume_matches_an_uninterrupted_run() {
    reference();
    let killed = tempfile::tempdir().unwrap();
    setup(killed.path());
    let mut child = train_cmd(killed.path(), &[]).spawn().unwrap();
    // Kill right after checkpoint 3 lands, while step 4 is in flight.
    let start = Instant::now();
    while latest_checkpoint(killed.path()).unwrap_or(0) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let saved = latest_checkpoint(killed.path()).unwrap();
    assert!(saved < STEPS, "the run was killed before its end");
    let before = metrics(killed.path());
    assert!(before.len() < STEPS);

    let status = train_cmd(killed.path(), &["trainer.resume_mode=latest"])
        .status()
        .unwrap();
    assert!(status.success());
    // Resumed, not restarted: at most the killed step is logged twice.
    assert!(metrics_lines(killed.path()) <= STEPS + 1);
    assert_matches_reference(&metrics(killed.path()), saved as u64 + 1);
}

/// Ctrl-C (SIGINT) lets the step in flight finish, checkpoints it, and exits with 130; running
/// the same command again resumes there (SkyRL's default `resume_mode=latest`).
#[test]
fn ctrl_c_checkpoints_and_the_same_command_resumes() {
    reference();
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    // No periodic checkpoints: the one after Ctrl-C is the only one.
    let args = ["trainer.ckpt_interval=1000"];
    let mut child = train_cmd(dir.path(), &args).spawn().unwrap();
    let start = Instant::now();
    while metrics_lines(dir.path()) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no steps logged"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "Ctrl-C exits with 130");
    let logged = metrics(dir.path());
    let last = *logged.keys().max().unwrap();
    assert!((3..STEPS as u64).contains(&last), "stopped at step {last}");
    assert_eq!(
        latest_checkpoint(dir.path()),
        Some(last as usize),
        "the last finished step is saved"
    );

    assert!(train_cmd(dir.path(), &args).status().unwrap().success());
    // Resumed, not restarted (which, with the same seed, would log the same numbers again).
    assert_eq!(metrics_lines(dir.path()), STEPS, "each step logged once");
    assert_matches_reference(&metrics(dir.path()), last + 1);
}

fn metrics_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("logs/toy_dapo/metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// The steps at which a line with `eval/all/avg_score` was logged, in order.
fn eval_steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("logs/toy_dapo/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m.get("eval/all/avg_score").is_some())
        .map(|m| m["step"].as_u64().unwrap())
        .collect()
}

/// SkyRL evaluates before training only when `eval_interval > 0`, and also after a resume, at
/// the resumed step.
#[test]
fn eval_before_train_needs_an_eval_interval_and_runs_after_a_resume() {
    let off = tempfile::tempdir().unwrap();
    setup(off.path());
    let args = ["trainer.eval_before_train=true", "+trainer.max_steps=1"];
    assert!(train_cmd(off.path(), &args).status().unwrap().success());
    assert_eq!(
        eval_steps(off.path()),
        Vec::<u64>::new(),
        "eval_interval=-1"
    );

    let on = tempfile::tempdir().unwrap();
    setup(on.path());
    let args = [
        "trainer.eval_before_train=true",
        "trainer.eval_interval=100",
    ];
    let first = [&args[..], &["+trainer.max_steps=2"]].concat();
    assert!(train_cmd(on.path(), &first).status().unwrap().success());
    // Before training, and at the run's last step.
    assert_eq!(eval_steps(on.path()), vec![0, 2]);
    let resumed = [
        &args[..],
        &["+trainer.max_steps=3", "trainer.resume_mode=latest"],
    ]
    .concat();
    assert!(train_cmd(on.path(), &resumed).status().unwrap().success());
    assert_eq!(eval_steps(on.path()), vec![0, 2, 2, 3]);
}

/// HF exports follow SkyRL's `trainer.hf_save_interval`: none when it is <= 0 (the default);
/// otherwise every N steps, at each epoch's end, and at the run's last step.
#[test]
fn hf_exports_follow_hf_save_interval() {
    let exported = |dir: &Path| -> Vec<usize> {
        let mut steps: Vec<usize> = std::fs::read_dir(dir.join("export"))
            .map(|rd| {
                rd.filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    name.strip_prefix("global_step_")?.parse().ok()
                })
                .collect()
            })
            .unwrap_or_default();
        steps.sort();
        for s in &steps {
            let config = dir.join(format!("export/global_step_{s}/policy/config.json"));
            assert!(config.exists(), "{} missing", config.display());
        }
        steps
    };
    let off = tempfile::tempdir().unwrap();
    setup(off.path());
    let args = ["+trainer.max_steps=2"];
    assert!(train_cmd(off.path(), &args).status().unwrap().success());
    assert_eq!(exported(off.path()), Vec::<usize>::new());

    let on = tempfile::tempdir().unwrap();
    setup(on.path());
    let args = ["+trainer.max_steps=5", "trainer.hf_save_interval=2"];
    assert!(train_cmd(on.path(), &args).status().unwrap().success());
    assert_eq!(exported(on.path()), vec![2, 4, 5]);
}

#[test]
fn a_diverged_run_saves_no_checkpoint_and_stops_after_consecutive_skipped_steps() {
    // An absurd learning rate: the first update sends weights to ±inf or ~1e38, and every
    // gradient norm after it is NaN.
    let diverge = |extra: &[&str]| -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        let mut args = vec![
            "trainer.policy.optimizer_config.lr=1e38",
            "trainer.algorithm.dynamic_sampling.type=null",
            "trainer.max_consecutive_skipped_steps=2",
            "+trainer.max_steps=6",
        ];
        args.extend_from_slice(extra);
        let out = train_cmd(dir.path(), &args)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(!out.status.success());
        (dir, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // Checkpoint after every step: the step-1 weights hold inf, so nothing is saved.
    let (dir, err) = diverge(&[]);
    assert!(err.contains("not saving the step-1 checkpoint"), "{err}");
    assert!(err.contains("holds NaN or infinite values"), "{err}");
    assert_eq!(latest_checkpoint(dir.path()), None);
    assert!(!dir.path().join("ckpt/global_step_1").exists());
    // No checkpoint in the way: the run stops at the second skipped step, saying why.
    let (_dir, err) = diverge(&["trainer.ckpt_interval=100"]);
    assert!(
        err.contains("2 optimizer steps in a row had a non-finite gradient norm"),
        "{err}"
    );
}
