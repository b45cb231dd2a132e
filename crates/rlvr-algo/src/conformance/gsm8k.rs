//! `gsm8k_reward.json`: strict and flexible scoring, custom scores, dataset ground truths.

use serde_json::Value;

use super::check::*;
use super::CaseOutcome;
use crate::rewards::gsm8k::{self, Method};

pub(crate) fn run(json: &Value) -> Vec<CaseOutcome> {
    let mut out = Vec::new();
    for (list, f) in [
        ("cases", score_case as fn(&Value) -> CaseResult),
        ("custom_score_cases", custom_case),
        ("dataset_cases", dataset_case),
    ] {
        for (i, c) in cases(json, list).iter().enumerate() {
            let label = c
                .get("solution_str")
                .or_else(|| c.get("answer_text"))
                .and_then(Value::as_str)
                .map(|s| format!("{list}[{i}] {:?}", s.chars().take(40).collect::<String>()))
                .unwrap_or_else(|| format!("{list}[{i}]"));
            out.push(CaseOutcome::new(label, f(c)));
        }
    }
    out
}

fn check_score(s: &gsm8k::Score, exp: &Value, score_key: &str) -> CaseResult {
    if let Some(e) = exp.get("extracted") {
        let want = e.as_str().map(str::to_string);
        ensure(s.extracted == want, || {
            format!("extracted {:?}, expected {want:?}", s.extracted)
        })?;
    }
    let want = num(field(exp, score_key)?)?;
    ensure(s.value == want, || {
        format!("score {}, expected {want}", s.value)
    })?;
    // Python returns int 0 exactly when nothing was extracted.
    if let Some(t) = exp.get("score_type").and_then(Value::as_str) {
        ensure((t == "int") == s.extracted.is_none(), || {
            format!("score type {t} vs extracted {:?}", s.extracted)
        })?;
    }
    Ok(())
}

fn score_case(c: &Value) -> CaseResult {
    let sol = field(c, "solution_str")?.as_str().ok_or("solution_str")?;
    let gt = field(c, "ground_truth")?;
    for (key, method) in [("strict", Method::Strict), ("flexible", Method::Flexible)] {
        let s = gsm8k::compute_score(sol, gt, method, 0.0, 1.0);
        check_score(&s, field(c, key)?, "score").map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(())
}

fn custom_case(c: &Value) -> CaseResult {
    let sol = field(c, "solution_str")?.as_str().ok_or("solution_str")?;
    let s = gsm8k::compute_score(
        sol,
        field(c, "ground_truth")?,
        Method::Strict,
        num(field(c, "format_score")?)?,
        num(field(c, "score")?)?,
    );
    check_score(&s, c, "expected_score")
}

fn dataset_case(c: &Value) -> CaseResult {
    let answer = field(c, "answer_text")?.as_str().ok_or("answer_text")?;
    let got = gsm8k::extract_ground_truth(answer).map_err(err_str);
    if let Some(e) = c.get("expected_error") {
        return expect_error("extract_ground_truth", got, e);
    }
    let want = field(c, "expected_ground_truth")?
        .as_str()
        .ok_or("expected_ground_truth")?;
    let got = got?;
    ensure(got == want, || {
        format!("ground truth {got:?}, expected {want:?}")
    })
}
