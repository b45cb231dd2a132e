//! `overlong.json`: overlong filtering (REF by last token, HEAD by stop reason) and DAPO's soft
//! overlong punishment with the reward metrics after it.

use serde_json::Value;

use super::check::*;
use super::CaseOutcome;
use crate::overlong;

pub(crate) fn run(json: &Value) -> Vec<CaseOutcome> {
    run_lists(
        json,
        Naming::Prefixed,
        &[
            ("overlong_filtering_ref", &filtering_ref),
            ("overlong_filtering_head", &filtering_head),
            ("soft_punishment_ref", &punishment),
            ("soft_punishment_head", &punishment),
        ],
    )
}

fn masks(v: &Value) -> Result<Vec<Vec<u8>>, String> {
    v.as_array()
        .ok_or("expected a list of masks")?
        .iter()
        .map(|row| {
            row.as_array()
                .ok_or("expected a mask row")?
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|b| b as u8)
                        .ok_or_else(|| "mask entries must be 0/1".to_string())
                })
                .collect()
        })
        .collect()
}

fn same_masks(got: Result<Vec<Vec<u8>>, String>, c: &Value) -> CaseResult {
    if let Some(e) = c.get("expected_error") {
        return expect_error("overlong filtering", got, e);
    }
    let exp = masks(field(field(c, "expected")?, "loss_masks")?)?;
    let got = got?;
    ensure(got == exp, || format!("masks {got:?}, expected {exp:?}"))
}

/// REF's last-token-is-EOS rule, kept as a REF-compatible function (we use the stop reason).
fn filtering_ref(c: &Value) -> CaseResult {
    let i = field(c, "inputs")?;
    let ids: Vec<Vec<u32>> = field(i, "response_ids")?
        .as_array()
        .ok_or("response_ids")?
        .iter()
        .map(|r| {
            r.as_array()
                .ok_or("response row")?
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|v| v as u32)
                        .ok_or_else(|| "token id".to_string())
                })
                .collect()
        })
        .collect::<Result<_, String>>()?;
    let eos = field(i, "eos_token_id")?.as_u64().ok_or("eos_token_id")? as u32;
    let got =
        overlong::apply_overlong_filtering_by_eos(&masks(field(i, "loss_masks")?)?, &ids, eos);
    same_masks(got.map_err(err_str), c)
}

fn filtering_head(c: &Value) -> CaseResult {
    let i = field(c, "inputs")?;
    let reasons: Vec<Option<String>> = field(i, "stop_reasons")?
        .as_array()
        .ok_or("stop_reasons")?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect();
    let got = overlong::apply_overlong_filtering(&masks(field(i, "loss_masks")?)?, &reasons);
    same_masks(got.map_err(err_str), c)
}

fn punishment(c: &Value) -> CaseResult {
    let cfg = field(c, "config")?;
    let i = field(c, "inputs")?;
    let buffer = overlong::OverlongBuffer {
        max_generate_length: field(cfg, "max_generate_length")?
            .as_u64()
            .ok_or("max_generate_length")? as usize,
        len: field(cfg, "overlong_buffer_len")?
            .as_u64()
            .ok_or("overlong_buffer_len")? as usize,
        penalty_factor: num(field(cfg, "overlong_buffer_penalty_factor")?)?,
    };
    let lengths: Vec<usize> = field(i, "response_lengths")?
        .as_array()
        .ok_or("response_lengths")?
        .iter()
        .map(|v| {
            v.as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| "length".to_string())
        })
        .collect::<Result<_, _>>()?;
    let rewards = numbers(field(i, "rewards")?)?;
    let uids = strings(field(i, "uids")?)?;
    let punished =
        overlong::soft_overlong_punishment(&rewards, &lengths, &buffer).map_err(err_str)?;
    let per_token = overlong::token_level_rewards(&punished, &lengths);
    if c.get("expected_error").is_some() {
        // REF (and HEAD's example) crash with IndexError on a length-0 response. We deliberately
        // handle it: an empty response is not punished and gets an empty reward row.
        for (k, &l) in lengths.iter().enumerate() {
            ensure(per_token[k].len() == l, || {
                format!(
                    "row {k}: {} token rewards for length {l}",
                    per_token[k].len()
                )
            })?;
            if l == 0 {
                ensure(punished[k] == rewards[k], || {
                    format!("empty response {k} was punished")
                })?;
            } else {
                ensure(punished[k] == buffer.punish(rewards[k], l), || {
                    format!("row {k} punished inconsistently")
                })?;
            }
        }
        return Ok(());
    }
    let exp = field(c, "expected")?;
    close(
        "rewards_after_punishment",
        &punished,
        field(exp, "rewards_after_punishment")?,
        Tol::F64,
    )?;
    let lens: Vec<f64> = per_token.iter().map(|r| r.len() as f64).collect();
    close(
        "per_token_lengths",
        &lens,
        field(exp, "per_token_lengths")?,
        Tol::EXACT,
    )?;
    let nonlast_zero = per_token
        .iter()
        .all(|r| r.iter().rev().skip(1).all(|&x| x == 0.0));
    ensure(
        Some(nonlast_zero)
            == exp
                .get("per_token_rewards_nonlast_all_zero")
                .and_then(Value::as_bool),
        || "per-token rewards must be zero except on the last token".into(),
    )?;
    let mut group_sizes = std::collections::HashMap::new();
    for u in &uids {
        *group_sizes.entry(u).or_insert(0usize) += 1;
    }
    let n = group_sizes.values().copied().max().unwrap_or(1);
    let metrics = overlong::reward_metrics(&punished, &uids, n);
    for (k, v) in field(exp, "metrics")?.as_object().ok_or("metrics")? {
        let ours = metrics
            .get(k)
            .ok_or_else(|| format!("metric {k} missing"))?;
        close(k, &[*ours], v, Tol::F64)?;
    }
    Ok(())
}
