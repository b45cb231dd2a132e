//! `kl.json`: REF values, HEAD values and gradients, and the REF worker reduction.

use candle_core::{DType, Tensor, Var};
use serde_json::Value;

use super::check::*;
use super::CaseOutcome;
use crate::kl::{self, KlEstimator};

pub(crate) fn run(json: &Value) -> Vec<CaseOutcome> {
    let ref_cases = cases(json, "cases");
    run_lists(
        json,
        Naming::Prefixed,
        &[
            ("cases", &ref_case),
            ("cases_head", &head_case),
            ("worker_kl_loss_ref", &|c: &Value| worker_case(c, ref_cases)),
        ],
    )
}

struct Inputs {
    dtype: DType,
    lp: Tensor,
    base: Tensor,
    mask: Option<Tensor>,
    est: KlEstimator,
}

fn inputs(c: &Value, est: &Value) -> Result<Inputs, String> {
    let dtype = dtype_of(c)?;
    let i = field(c, "inputs")?;
    Ok(Inputs {
        dtype,
        lp: tensor(field(i, "log_probs")?, dtype)?,
        base: tensor(field(i, "log_probs_base")?, dtype)?,
        mask: opt_tensor(i.get("loss_mask"), dtype)?,
        est: est
            .as_str()
            .ok_or("kl_estimator_type")?
            .parse()
            .map_err(err_str)?,
    })
}

/// REF values. REF's result never required grad (`@torch.no_grad()`); we deliberately keep the
/// gradient (HEAD's fix), so instead of "no gradient" this checks that ours has one.
fn ref_case(c: &Value) -> CaseResult {
    let x = inputs(c, field(field(c, "call")?, "kl_estimator_type")?)?;
    let got = kl::approx_kl_ref(&x.lp, &x.base, x.mask.as_ref(), x.est).map_err(err_str)?;
    close_t(
        "kl",
        &got,
        field(field(c, "expected")?, "kl")?,
        Tol::for_dtype(x.dtype),
    )?;
    let var = Var::from_tensor(&x.lp).map_err(err_str)?;
    let ours = kl::approx_kl(var.as_tensor(), &x.base, x.mask.as_ref(), x.est).map_err(err_str)?;
    let grads = ours.sum_all().and_then(|s| s.backward()).map_err(err_str)?;
    ensure(grads.get(var.as_tensor()).is_some(), || {
        "our KL must be differentiable (HEAD behaviour)".into()
    })
}

fn head_case(c: &Value) -> CaseResult {
    let x = inputs(c, field(field(c, "call")?, "kl_estimator_type")?)?;
    let tol = Tol::for_dtype(x.dtype);
    let exp = field(c, "expected")?;
    let var = Var::from_tensor(&x.lp).map_err(err_str)?;
    let got = kl::approx_kl(var.as_tensor(), &x.base, x.mask.as_ref(), x.est).map_err(err_str)?;
    close_t("kl", &got, field(exp, "kl")?, tol)?;
    let grads = got.sum_all().and_then(|s| s.backward()).map_err(err_str)?;
    let g = grads.get(var.as_tensor()).ok_or("no gradient")?;
    close_t(
        "grad_log_probs_of_sum",
        g,
        field(exp, "grad_log_probs_of_sum")?,
        tol,
    )
}

/// `masked_mean(kl, mask, dim=-1).mean()` on the named REF case. REF's loss had no gradient; ours
/// does (documented fix), which is checked instead of `kl_loss_requires_grad == false`.
fn worker_case(c: &Value, ref_cases: &[Value]) -> CaseResult {
    let from = field(c, "inputs_from_case")?
        .as_str()
        .ok_or("inputs_from_case")?;
    let dtype = dtype_of(c)?;
    let src = ref_cases
        .iter()
        .find(|r| {
            r.get("name").and_then(Value::as_str) == Some(from) && dtype_of(r).ok() == Some(dtype)
        })
        .ok_or_else(|| format!("no REF case named {from}"))?;
    let x = inputs(src, field(c, "kl_estimator_type")?)?;
    let kl_ref = kl::approx_kl_ref(&x.lp, &x.base, x.mask.as_ref(), x.est).map_err(err_str)?;
    let loss = kl::kl_loss_sequence_mean(&kl_ref, x.mask.as_ref()).map_err(err_str)?;
    close(
        "kl_loss_seq_mean",
        &values(&loss)?,
        field(c, "kl_loss_seq_mean")?,
        Tol::for_dtype(x.dtype),
    )?;
    let var = Var::from_tensor(&x.lp).map_err(err_str)?;
    let ours = kl::approx_kl(var.as_tensor(), &x.base, x.mask.as_ref(), x.est)
        .and_then(|k| kl::kl_loss_sequence_mean(&k, x.mask.as_ref()))
        .map_err(err_str)?;
    let grads = ours.backward().map_err(err_str)?;
    ensure(grads.get(var.as_tensor()).is_some(), || {
        "our KL loss must have a gradient".into()
    })
}
