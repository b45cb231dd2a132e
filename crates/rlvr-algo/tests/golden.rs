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
    assert_eq!(summary.total(), expected_total, "some golden cases were not run");
    let last = report.lines().last().unwrap();
    assert_eq!(last, format!("{} passed, 0 failed", expected_total));
}
