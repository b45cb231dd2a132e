//! `dynamic_sampling.json`: the `filter`/`replace` strategies call by call, and
//! `zero_variance_filter`.

use serde_json::Value;

use super::check::*;
use super::CaseOutcome;
use crate::dynamic_sampling::{
    zero_variance_filter, DynamicSampler, DynamicSamplingConfig, Outcome, Strategy,
};

pub(crate) fn run(json: &Value) -> Vec<CaseOutcome> {
    run_lists(
        json,
        Naming::Prefixed,
        &[
            ("sequences", &sequence),
            ("direct_cases", &direct),
            ("zero_variance_filter_cases", &zero_variance),
        ],
    )
}

/// A reward or a token-level reward row (summed left to right like Python's `sum`).
fn reward(v: &Value) -> Result<f64, String> {
    match v {
        Value::Array(xs) => xs.iter().try_fold(0.0, |a, x| Ok(a + num(x)?)),
        other => num(other),
    }
}

fn sequence(c: &Value) -> CaseResult {
    let cfg = field(c, "config")?;
    let strategy: Option<Strategy> = match cfg.get("dynamic_sampling.type") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_str().ok_or("type")?.parse().map_err(err_str)?),
    };
    let int = |k: &str| {
        field(cfg, k)?
            .as_i64()
            .ok_or_else(|| format!("{k} must be an integer"))
    };
    let config = DynamicSamplingConfig {
        strategy,
        train_batch_size: int("train_batch_size")? as usize,
        n_samples_per_prompt: int("n_samples_per_prompt")? as usize,
        max_sample_batches: int("max_sample_batches")?,
        min_replace_ratio: num(field(cfg, "min_replace_ratio")?)?,
    };
    // Rows are identified by their tags; each carries its (possibly token-level) reward.
    let mut sampler: DynamicSampler<(String, Value)> = DynamicSampler::new(config, 0);
    for (k, call) in field(c, "calls")?
        .as_array()
        .ok_or("calls")?
        .iter()
        .enumerate()
    {
        let input = field(call, "input")?;
        let tags = strings(field(input, "row_tags")?)?;
        let uids = strings(field(input, "uids")?)?;
        let raw = field(input, "rewards")?
            .as_array()
            .ok_or("rewards")?
            .clone();
        let rewards: Vec<f64> = raw.iter().map(reward).collect::<Result<_, _>>()?;
        let rows: Vec<(String, Value)> = tags.iter().cloned().zip(raw).collect();
        let got = sampler
            .process(rows.clone(), uids.clone(), &rewards)
            .map_err(err_str);
        let ctx = |m: String| format!("call {k}: {m}");
        if let Some(e) = call.get("expected_error") {
            if is_ref_crash(e) {
                // REF crashed here (e.g. `np.min([])` when a batch keeps nothing after another
                // that kept nothing); rlvr's documented behaviour: no error, keep sampling with
                // what has been collected. REF's sequence ends at its crash.
                match got {
                    Ok(Outcome::KeepSampling) => break,
                    Err(e) if e.contains("dynamic sampling limit") => break,
                    other => {
                        return Err(ctx(format!(
                            "REF crashed here; expected rlvr to keep sampling, got {other:?}"
                        )))
                    }
                }
            }
            expect_error("process", got, e).map_err(ctx)?;
            continue;
        }
        let exp = field(call, "expected")?;
        let keep = field(exp, "keep_sampling")?
            .as_bool()
            .ok_or("keep_sampling")?;
        match got.map_err(ctx)? {
            Outcome::KeepSampling => {
                ensure(keep, || ctx("kept sampling, expected a batch".into()))?;
                // SkyRL hands the untouched input back when it keeps sampling; the trainer
                // discards it, so we return nothing. The golden data must agree it is the input.
                if let Some(r) = exp.get("returned_row_tags") {
                    ensure(strings(r)? == tags, || {
                        ctx("returned rows differ from the input".into())
                    })?;
                }
                let st = field(exp, "state_after")?;
                let count = st
                    .get("sample_batch_count")
                    .and_then(Value::as_u64)
                    .ok_or("sample_batch_count")?;
                ensure(sampler.sample_batch_count() as u64 == count, || {
                    ctx(format!(
                        "sample_batch_count {} != {count}",
                        sampler.sample_batch_count()
                    ))
                })?;
                if let Some(n) = st.get("num_prompts_in_batch").and_then(Value::as_u64) {
                    let fs = sampler
                        .filter_state()
                        .ok_or_else(|| ctx("no filter state".into()))?;
                    ensure(fs.num_prompts_in_batch as u64 == n, || {
                        ctx(format!(
                            "num_prompts_in_batch {} != {n}",
                            fs.num_prompts_in_batch
                        ))
                    })?;
                    let got_tags: Vec<String> = fs.rows.iter().map(|r| r.0.clone()).collect();
                    ensure(
                        got_tags == strings(field(st, "collected_row_tags")?)?,
                        || ctx(format!("collected rows {got_tags:?}")),
                    )?;
                    ensure(fs.uids == strings(field(st, "collected_uids")?)?, || {
                        ctx(format!("collected uids {:?}", fs.uids))
                    })?;
                }
            }
            Outcome::Ready {
                rows: out_rows,
                uids: out_uids,
            } => {
                ensure(!keep, || {
                    ctx("returned a batch, expected to keep sampling".into())
                })?;
                ensure(
                    sampler.filter_state().is_none() && sampler.sample_batch_count() == 0,
                    || ctx("state must be reset after a batch is returned".into()),
                )?;
                let out_tags: Vec<String> = out_rows.iter().map(|r| r.0.clone()).collect();
                if let Some(r) = exp.get("returned_row_tags") {
                    ensure(out_tags == strings(r)?, || {
                        ctx(format!("returned rows {out_tags:?}"))
                    })?;
                    ensure(out_uids == strings(field(exp, "returned_uids")?)?, || {
                        ctx(format!("returned uids {out_uids:?}"))
                    })?;
                }
                if let Some(r) = exp.get("returned_rewards").and_then(Value::as_array) {
                    let got: Vec<&Value> = out_rows.iter().map(|r| &r.1).collect();
                    ensure(
                        got.iter().zip(r).all(|(a, b)| *a == b) && got.len() == r.len(),
                        || ctx("returned rewards differ".into()),
                    )?;
                }
                if exp.get("good_uids").is_some_and(|g| !g.is_null()) {
                    check_replace(exp, &sampler, &tags, &uids, &out_tags, &out_uids)
                        .map_err(ctx)?;
                }
            }
        }
    }
    Ok(())
}

/// `replace`: good/bad groups, untouched rows, and replaced rows copied from one good group each.
fn check_replace(
    exp: &Value,
    sampler: &DynamicSampler<(String, Value)>,
    in_tags: &[String],
    in_uids: &[String],
    out_tags: &[String],
    out_uids: &[String],
) -> CaseResult {
    let report = sampler.last_replace().ok_or("no replace report")?;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    ensure(
        sorted(report.good_uids.clone()) == sorted(strings(field(exp, "good_uids")?)?),
        || format!("good uids {:?}", report.good_uids),
    )?;
    ensure(
        sorted(report.bad_uids.clone()) == sorted(strings(field(exp, "bad_uids")?)?),
        || format!("bad uids {:?}", report.bad_uids),
    )?;
    let idx = |k: &str| -> Result<Vec<usize>, String> {
        field(exp, k)?
            .as_array()
            .ok_or(k)?
            .iter()
            .map(|v| v.as_u64().map(|x| x as usize).ok_or_else(|| k.to_string()))
            .collect()
    };
    for r in idx("rows_unchanged")? {
        ensure(
            out_tags[r] == in_tags[r] && out_uids[r] == in_uids[r],
            || format!("row {r} changed"),
        )?;
    }
    let unchanged_uids: Vec<String> = idx("rows_unchanged")?
        .iter()
        .map(|&r| out_uids[r].clone())
        .collect();
    ensure(
        unchanged_uids == strings(field(exp, "unchanged_rows_uids")?)?,
        || "unchanged rows' uids differ".into(),
    )?;
    for r in idx("rows_replaced")? {
        let src = in_tags
            .iter()
            .position(|t| *t == out_tags[r])
            .ok_or("replacement row not from this batch")?;
        ensure(
            report.good_uids.contains(&in_uids[src]) && out_uids[r] == in_uids[src],
            || {
                format!(
                    "row {r} replaced by {} (uid {}), not a good group",
                    out_tags[r], out_uids[r]
                )
            },
        )?;
    }
    Ok(())
}

fn direct(c: &Value) -> CaseResult {
    let ty = field(field(c, "sampling_config")?, "type")?;
    let strategy: Result<Option<Strategy>, String> = match ty {
        Value::Null => Ok(None),
        v => v.as_str().ok_or("type")?.parse().map(Some).map_err(err_str),
    };
    if let Some(e) = c.get("expected_error") {
        return expect_error("dynamic sampling type", strategy, e);
    }
    let exp = field(c, "expected")?;
    let uids = strings(field(exp, "returned_uids")?)?;
    let mut sampler = DynamicSampler::new(
        DynamicSamplingConfig {
            strategy: strategy?,
            train_batch_size: 1,
            n_samples_per_prompt: 1,
            max_sample_batches: 30,
            min_replace_ratio: 0.3,
        },
        0,
    );
    let rows: Vec<usize> = (0..uids.len()).collect();
    let got = sampler
        .process(rows.clone(), uids.clone(), &vec![0.0; uids.len()])
        .map_err(err_str)?;
    ensure(got == Outcome::Ready { rows, uids }, || {
        "passthrough changed the batch".into()
    })
}

fn zero_variance(c: &Value) -> CaseResult {
    let i = field(c, "inputs")?;
    let rewards = numbers(field(i, "rewards")?)?;
    let uids = strings(field(i, "uids")?)?;
    let got = zero_variance_filter(&rewards, &uids);
    let exp: Vec<usize> = field(field(c, "expected")?, "kept_indices")?
        .as_array()
        .ok_or("kept_indices")?
        .iter()
        .filter_map(|v| v.as_u64().map(|x| x as usize))
        .collect();
    ensure(got == exp, || format!("kept {got:?}, expected {exp:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequence on which REF crashes (`np.min([])`: two batches in a row keep nothing), under a
    /// name that says nothing about it: recognised by the error's kind, checked against rlvr's
    /// behaviour (keep sampling); a deliberate SkyRL error is still checked as an error.
    #[test]
    fn ref_crashes_are_recognised_by_kind_not_by_name() {
        let case = serde_json::json!({
            "name": "seq_17",
            "config": {"dynamic_sampling.type": "filter", "train_batch_size": 2,
                       "n_samples_per_prompt": 2, "max_sample_batches": 30, "min_replace_ratio": 0.3},
            "calls": [
                {"input": {"rewards": [1.0, 1.0], "uids": ["a", "a"], "row_tags": ["r0", "r1"]},
                 "expected": {"keep_sampling": true, "state_after": {"sample_batch_count": 1,
                   "num_prompts_in_batch": 0, "collected_row_tags": [], "collected_uids": []}}},
                {"input": {"rewards": [0.0, 0.0], "uids": ["b", "b"], "row_tags": ["r2", "r3"]},
                 "expected_error": {"type": "ValueError",
                   "message": "zero-size array to reduction operation minimum which has no identity"}}
            ]
        });
        assert_eq!(sequence(&case), Ok(()));
        assert!(is_ref_crash(
            &serde_json::json!({"type": "IndexError", "message": "list index out of range"})
        ));
        assert!(!is_ref_crash(&serde_json::json!({"type": "ValueError",
            "message": "Invalid dynamic sampling type: invalid_strategy"})));
        assert!(!is_ref_crash(&serde_json::json!({"type": "RuntimeError",
            "message": "Exiting training loop due to hitting dynamic sampling limit"})));
    }
}
