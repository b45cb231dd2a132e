//! `worker_losses_head.json`: the critic's value loss and the policy worker's KL and entropy
//! terms over the micro-batches of a mini-batch, values and gradients.

use candle_core::{Tensor, Var};
use serde_json::Value;

use super::check::*;
use super::CaseOutcome;
use crate::critic_loss::ppo_critic_loss;
use crate::reduction::{kl_entropy_terms, KlEntropySettings};

pub(crate) fn run(json: &Value) -> Vec<CaseOutcome> {
    run_lists(
        json,
        Naming::Prefixed,
        &[
            ("critic_loss", &critic_case),
            ("kl_entropy_terms", &terms_case),
        ],
    )
}

fn scalar(t: &Tensor) -> Result<f64, String> {
    crate::ops::scalar_f64(t).map_err(err_str)
}

fn critic_case(c: &Value) -> CaseResult {
    let dtype = dtype_of(c)?;
    let tol = Tol::for_dtype(dtype);
    let i = field(c, "inputs")?;
    let exp = field(c, "expected")?;
    let values = Var::from_tensor(&tensor(field(i, "values")?, dtype)?).map_err(err_str)?;
    let old = tensor(field(i, "old_values")?, dtype)?;
    let returns = tensor(field(i, "returns")?, dtype)?;
    let mask = opt_tensor(i.get("loss_mask"), dtype)?;
    let clip = match field(field(c, "call")?, "value_clip")? {
        Value::Null => None,
        v => Some(num(v)?),
    };
    let out = ppo_critic_loss(values.as_tensor(), &old, &returns, clip, mask.as_ref())
        .map_err(err_str)?;
    close("loss", &[scalar(&out.loss)?], field(exp, "loss")?, tol)?;
    match (out.clipfrac, field(exp, "clipfrac")?) {
        (None, Value::Null) => {}
        (Some(got), want @ Value::Number(_)) => close("clipfrac", &[got], want, tol)?,
        (got, want) => return Err(format!("clipfrac: got {got:?}, expected {want}")),
    }
    let grads = out.loss.backward().map_err(err_str)?;
    let g = grads
        .get(values.as_tensor())
        .ok_or("no gradient for values")?;
    close_t("grad_values", g, field(exp, "grad_values")?, tol)
}

/// The micro-batch loop of the trainer (`trainer::update`), on the golden inputs.
fn terms_case(c: &Value) -> CaseResult {
    let dtype = dtype_of(c)?;
    let tol = Tol::for_dtype(dtype);
    let i = field(c, "inputs")?;
    let call = field(c, "call")?;
    let exp = field(c, "expected")?;
    let lp = Var::from_tensor(&tensor(field(i, "log_probs")?, dtype)?).map_err(err_str)?;
    let ent = Var::from_tensor(&tensor(field(i, "entropy")?, dtype)?).map_err(err_str)?;
    let base = tensor(field(i, "base_log_probs")?, dtype)?;
    let mask = tensor(field(i, "loss_mask")?, dtype)?;
    let flag = |k: &str| field(call, k).map(|v| v.as_bool() == Some(true));
    let settings = KlEntropySettings {
        kl: if flag("use_kl_loss")? {
            let est = field(call, "kl_estimator_type")?
                .as_str()
                .ok_or("kl_estimator_type")?
                .parse()
                .map_err(err_str)?;
            Some((est, num(field(call, "kl_loss_coef")?)?))
        } else {
            None
        },
        entropy_coef: if flag("use_entropy_loss")? {
            Some(num(field(call, "entropy_loss_coef")?)?)
        } else {
            None
        },
    };
    let micro = num(field(call, "micro_batch_size")?)? as usize;
    let rows = lp.dims()[0];
    let mut total: Option<Tensor> = None;
    let (mut kls, mut ents) = (Vec::new(), Vec::new());
    for start in (0..rows).step_by(micro.max(1)) {
        let end = (start + micro).min(rows);
        let take = |t: &Tensor| t.narrow(0, start, end - start).map_err(err_str);
        let terms = kl_entropy_terms(
            &take(lp.as_tensor())?,
            Some(&take(&base)?),
            &take(ent.as_tensor())?,
            &take(&mask)?,
            &settings,
            (end - start) as f64 / rows as f64,
        )
        .map_err(err_str)?;
        if let Some(kl) = &terms.kl {
            kls.push(scalar(kl)?);
        }
        ents.push(scalar(&terms.entropy)?);
        total = Some(match total {
            None => terms.loss,
            Some(t) => (t + terms.loss).map_err(err_str)?,
        });
    }
    let total = total.ok_or("no rows")?;
    close("loss", &[scalar(&total)?], field(exp, "loss")?, tol)?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    match field(exp, "policy_kl")? {
        Value::Null => ensure(kls.is_empty(), || {
            "policy_kl reported with the KL loss off".into()
        })?,
        want => close("policy_kl", &[mean(&kls)], want, tol)?,
    }
    close(
        "policy_entropy",
        &[mean(&ents)],
        field(exp, "policy_entropy")?,
        tol,
    )?;
    let grads = total.backward().map_err(err_str)?;
    for (name, var) in [("grad_log_probs", &lp), ("grad_entropy", &ent)] {
        let g = match grads.get(var.as_tensor()) {
            Some(g) => g.clone(),
            None => var.as_tensor().zeros_like().map_err(err_str)?,
        };
        close_t(name, &g, field(exp, name)?, tol)?;
    }
    Ok(())
}
