//! `rlvr conformance DIR` through the built binary: the exit status follows the summary line.

use std::path::Path;
use std::process::Command;

fn rlvr(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(args)
        .output()
        .expect("run rlvr")
}

#[test]
fn exit_status_follows_the_summary_line() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rlvr-algo/tests/golden");
    let out = rlvr(&["conformance", golden.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let counts: Vec<usize> = last
        .strip_suffix(" failed")
        .and_then(|s| s.split_once(" passed, "))
        .map(|(p, f)| vec![p.parse().unwrap(), f.parse().unwrap()])
        .unwrap_or_else(|| {
            panic!(
                "last line {last:?} is not `N passed, M failed`; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(counts[0] + counts[1] > 0, "{stdout}");
    assert_eq!(out.status.success(), counts[1] == 0, "{stdout}");
}

#[test]
fn a_directory_without_golden_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = rlvr(&["conformance", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(!out.stderr.is_empty());
}
