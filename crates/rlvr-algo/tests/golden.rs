//! Runs the conformance harness on the golden vectors shipped in `tests/golden/` and requires every
//! case to pass, and every case of every file to be counted (nothing silently skipped).

use std::path::Path;

use rlvr_algo::conformance::{self, count_cases, KNOWN_FILES};

#[test]
fn every_golden_case_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out = Vec::new();
    let summary = conformance::run_dir(&dir, &mut out).expect("harness runs");
    let report = String::from_utf8(out).unwrap();
    println!("{report}");

    let mut expected_total = 0;
    for name in KNOWN_FILES {
        let text = std::fs::read_to_string(dir.join(name)).expect("golden file present");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        expected_total += count_cases(&json);
    }
    assert_eq!(summary.failed, 0, "golden failures:\n{report}");
    assert_eq!(
        summary.total(),
        expected_total,
        "some golden cases were not run"
    );
    let last = report.lines().last().unwrap();
    assert_eq!(last, format!("{} passed, 0 failed", expected_total));
}

/// The harness must notice a wrong number: perturb one expected value and one expected gradient.
#[test]
fn a_perturbed_golden_value_is_reported() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/kl.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    let case = &mut json["cases_head"][2];
    let name = case["name"].as_str().unwrap().to_string();
    let g = case["expected"]["grad_log_probs_of_sum"][0][1]
        .as_f64()
        .unwrap();
    case["expected"]["grad_log_probs_of_sum"][0][1] = serde_json::json!(g + 1e-3);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kl.json"), json.to_string()).unwrap();

    let mut out = Vec::new();
    let summary = conformance::run_dir(dir.path(), &mut out).unwrap();
    let report = String::from_utf8(out).unwrap();
    assert_eq!(summary.failed, 1, "{report}");
    assert!(
        report.contains(&format!("first failure: cases_head/{name}")),
        "{report}"
    );
    assert!(report.contains("grad_log_probs_of_sum"), "{report}");
    assert_eq!(
        report.lines().last().unwrap(),
        format!("{} passed, 1 failed", summary.passed)
    );
}

#[test]
fn a_directory_without_golden_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = conformance::run_dir(dir.path(), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("no golden files"), "{err}");
}
