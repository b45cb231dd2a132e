//! The golden-vector conformance harness: runs every case of SkyRL's reference vectors
//! (`tests/golden/*.json`, schema in its README) through this library — values and gradients — and
//! reports per file.
//!
//! Output: one line per file, `file: P passed, F failed`, followed (when `F > 0`) by the first
//! failing case's name and mismatch; the last line is `N passed, M failed` over all files.
//!
//! A case passes only when the real library code reproduces it. Where REF had a bug that we
//! deliberately fix (KL without gradient, overlong filtering by last token = EOS is kept only as a
//! REF-compatible function, REF crashes on empty responses / `np.min([])`), the case checks OUR
//! documented behaviour instead; each such place says so in a comment.

mod advantages;
mod check;
mod dynamic_sampling;
mod entropy;
mod gsm8k;
mod kl;
mod overlong;
mod policy_losses;
mod reductions;
mod worker_losses;

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

/// Pass/fail counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
}

impl Summary {
    pub fn total(&self) -> usize {
        self.passed + self.failed
    }
}

impl std::ops::AddAssign for Summary {
    fn add_assign(&mut self, rhs: Self) {
        self.passed += rhs.passed;
        self.failed += rhs.failed;
    }
}

/// One case's result: `Err` carries what mismatched.
pub(crate) struct CaseOutcome {
    pub name: String,
    pub result: Result<(), String>,
}

impl CaseOutcome {
    pub(crate) fn new(name: impl Into<String>, result: Result<(), String>) -> Self {
        CaseOutcome {
            name: name.into(),
            result,
        }
    }
}

/// The golden files this harness knows, in reporting order.
pub const KNOWN_FILES: [&str; 10] = [
    "entropy_logprobs.json",
    "advantages.json",
    "kl.json",
    "policy_losses.json",
    "off_policy_ref.json",
    "reductions_head.json",
    "worker_losses_head.json",
    "dynamic_sampling.json",
    "overlong.json",
    "gsm8k_reward.json",
];

fn runner(file_name: &str) -> Option<fn(&Value) -> Vec<CaseOutcome>> {
    Some(match file_name {
        "entropy_logprobs.json" => entropy::run,
        "advantages.json" => advantages::run,
        "kl.json" => kl::run,
        "policy_losses.json" | "off_policy_ref.json" => policy_losses::run,
        "reductions_head.json" => reductions::run,
        "worker_losses_head.json" => worker_losses::run,
        "dynamic_sampling.json" => dynamic_sampling::run,
        "overlong.json" => overlong::run,
        "gsm8k_reward.json" => gsm8k::run,
        _ => return None,
    })
}

/// Runs every known golden file present in `dir` and prints the totals as the last line.
/// A directory holding none of them is an error.
pub fn run_dir(dir: &Path, out: &mut dyn Write) -> anyhow::Result<Summary> {
    let mut total = Summary::default();
    let mut found = 0;
    for name in KNOWN_FILES {
        let path = dir.join(name);
        if path.is_file() {
            found += 1;
            total += run_file_inner(&path, out)?;
        }
    }
    if found == 0 {
        anyhow::bail!(
            "{}: no golden files found (expected some of: {})",
            dir.display(),
            KNOWN_FILES.join(", ")
        );
    }
    writeln!(out, "{} passed, {} failed", total.passed, total.failed)?;
    Ok(total)
}

/// Runs one golden file (its name selects the schema) and prints its line plus the totals line.
pub fn run_file(path: &Path, out: &mut dyn Write) -> anyhow::Result<Summary> {
    let s = run_file_inner(path, out)?;
    writeln!(out, "{} passed, {} failed", s.passed, s.failed)?;
    Ok(s)
}

fn run_file_inner(path: &Path, out: &mut dyn Write) -> anyhow::Result<Summary> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let run = runner(file_name).with_context(|| {
        format!(
            "{}: unknown golden file (known: {})",
            path.display(),
            KNOWN_FILES.join(", ")
        )
    })?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let outcomes = run(&json);
    let failed: Vec<&CaseOutcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    let summary = Summary {
        passed: outcomes.len() - failed.len(),
        failed: failed.len(),
    };
    writeln!(
        out,
        "{file_name}: {} passed, {} failed",
        summary.passed, summary.failed
    )?;
    if let Some(first) = failed.first() {
        let why = first
            .result
            .as_ref()
            .err()
            .map(String::as_str)
            .unwrap_or("");
        writeln!(out, "  first failure: {}: {}", first.name, why)?;
    }
    Ok(summary)
}

/// Number of cases a golden JSON holds: the length of every top-level array.
pub fn count_cases(json: &Value) -> usize {
    json.as_object()
        .map(|o| o.values().filter_map(Value::as_array).map(Vec::len).sum())
        .unwrap_or(0)
}
