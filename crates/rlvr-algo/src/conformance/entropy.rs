//! `entropy_logprobs.json`: log-probs, entropy and their gradients w.r.t. the raw logits.

use candle_core::{DType, Var};
use serde_json::Value;

use super::check::*;
use super::CaseOutcome;
use crate::logprobs;

pub(crate) fn run(json: &Value) -> Vec<CaseOutcome> {
    run_lists(json, Naming::Plain, &[("cases", &case)])
}

fn case(c: &Value) -> CaseResult {
    let dtype = dtype_of(c)?;
    let tol = Tol::for_dtype(dtype);
    let t = num(field(c, "temperature")?)?;
    let inputs = field(c, "inputs")?;
    let exp = field(c, "expected")?;
    let logits = tensor(field(inputs, "logits_raw")?, dtype)?;
    let labels = tensor(field(inputs, "labels")?, DType::F64)?
        .to_dtype(DType::U32)
        .map_err(err_str)?;
    let mask = opt_tensor(inputs.get("attention_mask"), dtype)?;

    // Scaling is one correctly rounded division: exact up to float32 tolerance in every dtype.
    let scaled_tol = if dtype == DType::F64 { tol } else { Tol::F32 };
    close_t(
        "scaled_logits",
        &logprobs::scale_logits(&logits, t).map_err(err_str)?,
        field(exp, "scaled_logits")?,
        scaled_tol,
    )?;

    let var = Var::from_tensor(&logits).map_err(err_str)?;
    let lp = logprobs::log_probs_from_logits(var.as_tensor(), &labels, t).map_err(err_str)?;
    close_t("logprobs", &lp, field(exp, "logprobs")?, tol)?;
    let g = lp.sum_all().and_then(|s| s.backward()).map_err(err_str)?;
    let g = g.get(var.as_tensor()).ok_or("no gradient for the logits")?;
    close_t(
        "grad_raw_logits_of_sum_logprobs",
        g,
        field(exp, "grad_raw_logits_of_sum_logprobs")?,
        tol,
    )?;

    let var = Var::from_tensor(&logits).map_err(err_str)?;
    let ent = match &mask {
        Some(m) => logprobs::masked_entropy_from_logits(var.as_tensor(), t, m),
        None => logprobs::entropy_from_logits(var.as_tensor(), t),
    }
    .map_err(err_str)?;
    close_t("entropy", &ent, field(exp, "entropy")?, tol)?;
    let g = ent.sum_all().and_then(|s| s.backward()).map_err(err_str)?;
    let g = g.get(var.as_tensor()).ok_or("no gradient for the logits")?;
    close_t(
        "grad_raw_logits_of_sum_entropy",
        g,
        field(exp, "grad_raw_logits_of_sum_entropy")?,
        tol,
    )?;

    let scaled = logprobs::scale_logits(&logits, t).map_err(err_str)?;
    let full_lp = logprobs::log_softmax(&scaled).map_err(err_str)?;
    let e2 = logprobs::entropy_from_log_probs(&full_lp).map_err(err_str)?;
    close_t(
        "entropy_from_log_probs",
        &e2,
        field(exp, "entropy_from_log_probs")?,
        tol,
    )
}
