//! `mpirun -n 2 rlvr train …` (the `mpi` feature, an MPI installation with `mpirun`):
//! - two ranks train the toy DAPO task as one process does: the same losses and gradient norms
//!   at each of 3 steps and the same checkpointed weights;
//! - a rank killed mid-step ends the job, with the launcher naming it, within 60 s;
//! - a rank that hangs (stopped) ends the job, the other rank naming it, within the collective
//!   timeout;
//! - an error on one rank only (rank 0 alone writes the run's files) ends the job at once;
//! - a two-rank run stopped after step 2 and started again resumes from its checkpoint and ends
//!   where the uninterrupted one-process run does.
#![cfg(feature = "mpi")]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn toy_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/toy/dapo_toy.yaml")
}

/// `rlvr train` on the toy task in `dir`, under `mpirun -n ranks` when `ranks` > 1.
fn train_command(dir: &Path, run: &str, ranks: usize, extra: &[&str]) -> Command {
    let exe = env!("CARGO_BIN_EXE_rlvr");
    let mut cmd = if ranks > 1 {
        let mut c = Command::new("mpirun");
        // --oversubscribe: CI machines may have fewer cores than ranks.
        c.args(["-n", &ranks.to_string(), "--oversubscribe", exe]);
        c
    } else {
        Command::new(exe)
    };
    cmd.arg("train")
        .arg("--config")
        .arg(toy_config())
        .args(rlvr::toy::run_overrides(dir))
        .args([
            format!("trainer.run_name={run}"),
            format!("trainer.ckpt_path={}/ckpt_{run}", dir.display()),
            "trainer.eval_before_train=false".into(),
            "trainer.eval_interval=-1".into(),
            // In f32, as `tests/data_parallel.rs` explains: only summation order may differ.
            "trainer.bf16=false".into(),
        ])
        .args(extra)
        // Containers run as root; Open MPI refuses that unless told.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env("RUST_LOG", "warn");
    cmd
}

fn run_ok(mut cmd: Command) {
    let out = cmd
        .output()
        .expect("starting the command (is mpirun on PATH?)");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metrics(dir: &Path, run: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("logs").join(run).join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn weights(file: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(file, &candle_core::Device::Cpu).unwrap()
}

#[test]
fn two_mpi_ranks_train_as_one_process() {
    let dir = tempfile::tempdir().unwrap();
    rlvr::toy::write(dir.path(), 0).unwrap();
    let three = ["+trainer.max_steps=3", "trainer.ckpt_interval=3"];
    run_ok(train_command(dir.path(), "solo", 1, &three));
    run_ok(train_command(dir.path(), "dp2", 2, &three));

    let (solo, dp) = (metrics(dir.path(), "solo"), metrics(dir.path(), "dp2"));
    assert_eq!(solo.len(), 3);
    assert_eq!(dp.len(), 3, "rank 0 alone logs, once per step");
    for (a, b) in solo.iter().zip(&dp) {
        for key in [
            "policy/policy_loss",
            "policy/grad_norm",
            "reward/avg_raw_reward",
            "generate/avg_num_tokens",
            "dynamic_sampling/num_gen_batches",
        ] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                "step {}: {key}: one process {x}, two ranks {y}",
                a["step"]
            );
        }
    }
    let ckpt = |run: &str| {
        dir.path()
            .join(format!("ckpt_{run}"))
            .join("global_step_3/model.safetensors")
    };
    let diff = max_weight_diff(&ckpt("solo"), &ckpt("dp2"));
    assert!(diff < 1e-5, "two-rank weights differ by {diff}");
}

fn max_weight_diff(a: &Path, b: &Path) -> f32 {
    let (w1, w2) = (weights(a), weights(b));
    assert_eq!(w1.len(), w2.len());
    w1.iter()
        .map(|(name, x)| common::max_abs_diff(x, &w2[name]))
        .fold(0.0, f32::max)
}

#[test]
fn a_two_rank_run_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    rlvr::toy::write(dir.path(), 0).unwrap();
    let d = dir.path();
    run_ok(train_command(
        d,
        "solo",
        1,
        &["+trainer.max_steps=3", "trainer.ckpt_interval=3"],
    ));
    // Two ranks: two steps, then the same run again (resume_mode=latest) to step 3.
    let every_step = ["trainer.ckpt_interval=1", "trainer.resume_mode=latest"];
    run_ok(train_command(
        d,
        "dp2",
        2,
        &[&["+trainer.max_steps=2"][..], &every_step].concat(),
    ));
    assert!(d.join("ckpt_dp2/global_step_2/model.safetensors").is_file());
    run_ok(train_command(
        d,
        "dp2",
        2,
        &[&["+trainer.max_steps=3"][..], &every_step].concat(),
    ));
    // The log is appended to: a resumed run adds step 3 only, a fresh start would add 1 to 3.
    let steps: Vec<u64> = metrics(d, "dp2")
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3], "the second run did not resume at step 3");
    let step3 = |run: &str| d.join(format!("ckpt_{run}/global_step_3/model.safetensors"));
    let diff = max_weight_diff(&step3("solo"), &step3("dp2"));
    assert!(diff < 1e-5, "resumed two-rank weights differ by {diff}");
}

/// The pid of `rank` among the processes `mpirun` (pid `launcher`) started.
fn rank_pid(launcher: u32, rank: usize) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Field 4, after the parenthesised command name, is the parent's pid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(launcher) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        if env.split(|&b| b == 0).any(|v| v == wanted.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// Starts a long 2-rank run, waits until rank 0 has logged step 1 (the ranks are then in step 2),
/// sends `signal` to rank 1, and returns how long the job took to end and what it printed.
fn signal_rank_one_mid_run(signal: i32, extra: &[&str]) -> (Duration, String) {
    let dir = tempfile::tempdir().unwrap();
    rlvr::toy::write(dir.path(), 0).unwrap();
    let mut args = vec!["trainer.ckpt_interval=-1"];
    args.extend(extra);
    let mut cmd = train_command(dir.path(), "doomed", 2, &args);
    let mut child: Child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = dir.path().join("logs/doomed/metrics.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&log).map_or(true, |t| t.lines().count() < 1) {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            panic!(
                "the run ended ({status}) before its first step:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no step logged in 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rank_pid(child.id(), 1).expect("rank 1's process");
    // SAFETY: a plain signal to a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
    let hit = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if hit.elapsed() > Duration::from_secs(90) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            child.kill().unwrap();
            panic!("the job was still running 90 s after rank 1 got signal {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = hit.elapsed();
    // A stopped rank that the launcher has not reaped yet.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(!status.success(), "the job succeeded after losing a rank");
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    (took, text)
}

#[test]
fn a_killed_rank_ends_the_job_within_a_minute() {
    let (took, text) = signal_rank_one_mid_run(libc::SIGKILL, &[]);
    println!("the job ended {took:?} after rank 1 was killed:\n{text}");
    assert!(took < Duration::from_secs(60), "took {took:?}\n{text}");
    assert!(
        text.contains("rank 1"),
        "the output does not name rank 1:\n{text}"
    );
}

#[test]
fn a_hung_rank_is_named_by_the_others_within_the_timeout() {
    // SIGSTOP: rank 1 stays alive and never reaches the next collective. The timeout leaves room
    // for the ranks' start-up skew when every test's ranks share two cores.
    let (took, text) =
        signal_rank_one_mid_run(libc::SIGSTOP, &["+trainer.collective_timeout_s=20"]);
    println!("the job ended {took:?} after rank 1 was stopped:\n{text}");
    assert!(took < Duration::from_secs(60), "took {took:?}\n{text}");
    // Stopped before a collective, or inside one after reaching it.
    assert!(
        text.contains("rank(s) [1] did not reach collective")
            || text.contains("rank(s) [1] stopped answering"),
        "rank 0 did not name rank 1:\n{text}"
    );
}

#[test]
fn an_error_on_one_rank_ends_the_job_at_once() {
    let dir = tempfile::tempdir().unwrap();
    rlvr::toy::write(dir.path(), 0).unwrap();
    // Rank 0 alone creates the run directory; under a file it cannot. The other rank is then
    // waiting for it at a collective, and must not wait out the timeout.
    let mut cmd = train_command(dir.path(), "broken", 2, &["trainer.log_path=/dev/null/x"]);
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&out.stderr);
    println!("the job ended after {took:?}:\n{text}");
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(
        text.contains("error: rank 0: creating /dev/null/x"),
        "{text}"
    );
}
