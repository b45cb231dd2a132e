//! `policy_losses.json`: REF policy losses (value, metrics, d loss / d log_probs).

use candle_core::{DType, Var};
use serde_json::Value;

use super::check::*;
use super::CaseOutcome;
use crate::policy_loss::{self, PolicyLossConfig, PolicyLossInputs};

pub(crate) fn run(json: &Value) -> Vec<CaseOutcome> {
    run_lists(json, Naming::Plain, &[("cases", &case)])
}

fn f(v: &Value, key: &str) -> Result<f64, String> {
    num(field(v, key)?)
}

fn opt_f(v: &Value, key: &str) -> Result<Option<f64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => num(x).map(Some),
    }
}

fn opt_enum<T: serde::de::DeserializeOwned>(v: &Value, key: &str) -> Result<Option<T>, String> {
    let value = v.get(key).cloned().unwrap_or(Value::Null);
    serde_json::from_value(value).map_err(|e| format!("`{key}`: {e}"))
}

/// The golden `config` block as our config (missing sub-blocks keep SkyRL's defaults).
pub(crate) fn config(c: &Value) -> Result<PolicyLossConfig, String> {
    let mut cfg = PolicyLossConfig {
        eps_clip_low: f(c, "eps_clip_low")?,
        eps_clip_high: f(c, "eps_clip_high")?,
        clip_ratio_c: f(c, "clip_ratio_c")?,
        loss_reduction: field(c, "loss_reduction")?
            .as_str()
            .ok_or("loss_reduction")?
            .parse()
            .map_err(err_str)?,
        max_seq_len: opt_f(c, "max_seq_len")?.map(|x| x as usize),
        ..Default::default()
    };
    if let Some(s) = c.get("sapo") {
        cfg.sapo.tau_pos = f(s, "tau_pos")?;
        cfg.sapo.tau_neg = f(s, "tau_neg")?;
    }
    if let Some(s) = c.get("cispo") {
        cfg.cispo.cispo_eps_clip_low = f(s, "cispo_eps_clip_low")?;
        cfg.cispo.cispo_eps_clip_high = f(s, "cispo_eps_clip_high")?;
    }
    if let Some(s) = c.get("clip_cov") {
        cfg.clip_cov.clip_ratio = f(s, "clip_ratio")?;
        cfg.clip_cov.clip_cov_lb = f(s, "clip_cov_lb")?;
        cfg.clip_cov.clip_cov_ub = f(s, "clip_cov_ub")?;
    }
    if let Some(s) = c.get("kl_cov") {
        cfg.kl_cov.kl_cov_frac = f(s, "kl_cov_frac")?;
        cfg.kl_cov.ppo_kl_coef = f(s, "ppo_kl_coef")?;
    }
    if let Some(s) = c.get("off_policy_correction") {
        let o = &mut cfg.off_policy_correction;
        o.tis_ratio_type = opt_enum(s, "tis_ratio_type")?;
        o.token_tis_ratio_clip_high = f(s, "token_tis_ratio_clip_high")?;
        o.sequence_tis_ratio_clip_high = f(s, "sequence_tis_ratio_clip_high")?;
        o.sequence_mask_metric = opt_enum(s, "sequence_mask_metric")?;
        o.geo_mask_high = f(s, "geo_mask_high")?;
        o.geo_mask_low = f(s, "geo_mask_low")?;
        o.product_mask_high = f(s, "product_mask_high")?;
        o.product_mask_low = f(s, "product_mask_low")?;
        o.outlier_token_is_threshold_low = opt_f(s, "outlier_token_is_threshold_low")?;
        o.outlier_token_is_threshold_high = opt_f(s, "outlier_token_is_threshold_high")?;
    }
    Ok(cfg)
}

/// Losses built on the float32 PPO ratio need rtol 2e-7 in float64.
/// The loss's tolerance. Where float32 ratios enter a float64 loss, each token's term carries the
/// float32 exp's rounding, and SkyRL's exp is MKL's (PyTorch's CPU `exp` calls MKL VML, within 1
/// ulp but not correctly rounded, and CPU-dependent; ours is correctly rounded: they differ on ~1 %
/// of inputs, measured with torch 2.13 on a Xeon). A reduction whose terms cancel can turn those
/// per-token ulps into a larger relative error of the sum, so its bound is absolute: two float32
/// ulps of the same reduction of |token loss|.
fn loss_tol(
    tol: Tol,
    name: &str,
    inputs: &PolicyLossInputs,
    cfg: &PolicyLossConfig,
) -> Result<Tol, String> {
    if tol.rtol != Tol::RATIO64.rtol {
        return Ok(tol);
    }
    let token = policy_loss::compute_token_loss(name, inputs, cfg).map_err(err_str)?;
    let abs = token.loss.detach().abs().map_err(err_str)?;
    let scale = crate::reduction::reduce_loss_ref(
        &abs,
        token.loss_mask.as_ref(),
        cfg.loss_reduction,
        cfg.max_seq_len,
    )
    .ok()
    .and_then(|t| crate::ops::scalar_f64(&t).ok())
    .unwrap_or(0.0);
    Ok(Tol {
        rtol: tol.rtol,
        atol: tol.atol.max(2.0 * f64::from(f32::EPSILON) * scale),
    })
}

fn tol(dtype: DType, name: &str, has_rollout: bool) -> Tol {
    match dtype {
        DType::F64 if matches!(name, "regular" | "dual_clip" | "cispo") || has_rollout => {
            Tol::RATIO64
        }
        d => Tol::for_dtype(d),
    }
}

fn case(c: &Value) -> CaseResult {
    let dtype = dtype_of(c)?;
    let name = field(c, "policy_loss_type")?
        .as_str()
        .ok_or("policy_loss_type")?;
    let cfg = config(field(c, "config")?)?;
    let i = field(c, "inputs")?;
    let lp = tensor(field(i, "log_probs")?, dtype)?;
    let old = tensor(field(i, "old_log_probs")?, dtype)?;
    let adv = tensor(field(i, "advantages")?, dtype)?;
    let mask = opt_tensor(i.get("loss_mask"), dtype)?;
    let rollout = opt_tensor(i.get("rollout_logprobs"), dtype)?;
    let var = Var::from_tensor(&lp).map_err(err_str)?;
    let inputs = PolicyLossInputs {
        log_probs: var.as_tensor(),
        old_log_probs: &old,
        advantages: &adv,
        loss_mask: mask.as_ref(),
        rollout_log_probs: rollout.as_ref(),
    };
    let got = policy_loss::compute_policy_loss(name, &inputs, &cfg).map_err(err_str);
    if let Some(e) = c.get("expected_error") {
        return expect_error("policy loss", got, e);
    }
    let out = got?;
    let exp = field(c, "expected")?;
    let tol = tol(dtype, name, rollout.is_some());
    close(
        "loss",
        &values(&out.loss)?,
        field(exp, "loss")?,
        loss_tol(tol, name, &inputs, &cfg)?,
    )?;
    // Metrics are Python floats from `.item()`, often of float32 tensors.
    let mtol = Tol {
        rtol: 1e-6,
        atol: 1e-7,
    };
    for (k, v) in field(exp, "metrics")?.as_object().ok_or("metrics")? {
        let ours = out
            .metrics
            .get(k)
            .ok_or_else(|| format!("metric {k} missing"))?;
        close(&format!("metric {k}"), &[*ours], v, mtol)?;
    }
    let grads = out.loss.backward().map_err(err_str)?;
    let g = grads
        .get(var.as_tensor())
        .ok_or("no gradient for log_probs")?;
    close_t("grad_log_probs", g, field(exp, "grad_log_probs")?, tol)
}
