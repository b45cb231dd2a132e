//! `reductions_head.json`: HEAD's mini-batch reduction by advantage pre-scaling, checked end to
//! end: boundaries, normalised advantages, per-micro-batch masked-sum losses and metrics, gradients
//! accumulated over micro-batches, and REF's per-micro-batch semantics (`cross_check_ref`).

use candle_core::{DType, Tensor, Var};
use serde_json::Value;

use super::check::*;
use super::CaseOutcome;
use crate::policy_loss::{self, PolicyLossConfig, PolicyLossInputs};
use crate::reduction::{self, LossReduction, NormalizeOptions};

pub(crate) fn run(json: &Value) -> Vec<CaseOutcome> {
    run_lists(
        json,
        Naming::Prefixed,
        &[
            ("cases", &pipeline_case),
            ("direct_cases", &direct_case),
            ("boundary_cases", &boundary_case),
        ],
    )
}

fn usize_of(v: &Value, key: &str) -> Result<usize, String> {
    field(v, key)?
        .as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| format!("{key} must be a non-negative integer"))
}

fn pairs(v: &Value) -> Result<Vec<(usize, usize)>, String> {
    v.as_array()
        .ok_or("expected a list of pairs")?
        .iter()
        .map(|p| {
            let a = p.as_array().ok_or("expected a pair")?;
            match (
                a.first().and_then(Value::as_u64),
                a.get(1).and_then(Value::as_u64),
            ) {
                (Some(s), Some(e)) => Ok((s as usize, e as usize)),
                _ => Err("bad pair".to_string()),
            }
        })
        .collect()
}

fn same_pairs(what: &str, got: &[(usize, usize)], expected: &Value) -> CaseResult {
    let exp = pairs(expected)?;
    ensure(got == exp.as_slice(), || {
        format!("{what}: got {got:?}, expected {exp:?}")
    })
}

fn tol(dtype: DType) -> Tol {
    match dtype {
        DType::F64 => Tol::RATIO64,
        d => Tol::for_dtype(d),
    }
}

fn rows(t: &Tensor, start: usize, end: usize) -> Result<Tensor, String> {
    t.narrow(0, start, end - start).map_err(err_str)
}

/// Scalar value of a tensor.
fn scalar(t: &Tensor) -> Result<f64, String> {
    crate::ops::scalar_f64(t).map_err(err_str)
}

fn pipeline_case(c: &Value) -> CaseResult {
    let dtype = dtype_of(c)?;
    let cfg = field(c, "config")?;
    let i = field(c, "inputs")?;
    let key = |k: &str| field(cfg, k);
    let reduction: Result<LossReduction, String> = key("trainer.algorithm.loss_reduction")?
        .as_str()
        .ok_or("loss_reduction")?
        .parse()
        .map_err(err_str);
    let uids = strings(field(i, "uids")?)?;
    let mini = usize_of(cfg, "trainer.policy_mini_batch_size")?;
    let tbs = usize_of(cfg, "trainer.train_batch_size")?;
    let n = usize_of(cfg, "generator.n_samples_per_prompt")?;
    let micro = usize_of(cfg, "trainer.micro_train_batch_size_per_gpu")?;
    let boundaries = reduction::mini_batch_boundaries(&uids, mini, tbs, false, n).map_err(err_str);
    let prompts = reduction::prompt_boundaries(&uids).map_err(err_str);
    if let Some(e) = c.get("expected_error") {
        // Whichever step SkyRL failed at must fail here too.
        let first_err = match (&reduction, &boundaries, &prompts) {
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e.clone()),
            _ => Ok(()),
        };
        return expect_error("reduction pipeline", first_err, e);
    }
    let reduction = reduction?;
    let boundaries = boundaries?;
    let prompts = prompts?;
    same_pairs(
        "mini_batch_boundaries",
        &boundaries,
        field(c, "mini_batch_boundaries")?,
    )?;
    same_pairs(
        "prompt_boundaries",
        &prompts,
        field(c, "prompt_boundaries")?,
    )?;

    let adv = tensor(field(i, "advantages")?, dtype)?;
    let loss_mask = tensor(field(i, "loss_mask")?, dtype)?;
    let response_mask = tensor(field(i, "response_mask")?, dtype)?;
    let lp = tensor(field(i, "log_probs")?, dtype)?;
    let old = tensor(field(i, "old_log_probs")?, dtype)?;
    let max_seq_len = cfg
        .get("trainer.algorithm.max_seq_len")
        .and_then(Value::as_u64)
        .map(|x| x as usize);
    let opts = NormalizeOptions {
        reduction,
        advantage_batch_normalize: key("trainer.algorithm.advantage_batch_normalize")?
            .as_bool()
            .unwrap_or(false),
        micro_batch_size: micro,
        max_seq_len,
        mini_batch_boundaries: &boundaries,
        prompt_boundaries: Some(&prompts),
    };
    let normalized = reduction::normalize_advantages(&adv, &response_mask, &loss_mask, &opts)
        .map_err(err_str)?;
    let exp = field(c, "expected")?;
    let tol = tol(dtype);
    close_t(
        "normalized_advantages",
        &normalized,
        field(exp, "normalized_advantages")?,
        tol,
    )?;

    let loss_name = key("trainer.algorithm.policy_loss_type")?
        .as_str()
        .ok_or("policy_loss_type")?;
    let pcfg = PolicyLossConfig {
        eps_clip_low: num(key("trainer.algorithm.eps_clip_low")?)?,
        eps_clip_high: num(key("trainer.algorithm.eps_clip_high")?)?,
        clip_ratio_c: num(key("trainer.algorithm.clip_ratio_c")?)?,
        loss_reduction: reduction,
        max_seq_len,
        ..Default::default()
    };
    let per_mb = field(exp, "per_mini_batch")?
        .as_array()
        .ok_or("per_mini_batch")?;
    let xref = c.get("cross_check_ref").and_then(Value::as_array);
    let mut all_grads = Vec::new();
    for (m, &(start, end)) in boundaries.iter().enumerate() {
        let e = per_mb.get(m).ok_or("missing per_mini_batch entry")?;
        let mb_lp = Var::from_tensor(&rows(&lp, start, end)?).map_err(err_str)?;
        let mb_old = rows(&old, start, end)?;
        let mb_adv = rows(&normalized, start, end)?;
        let mb_mask = rows(&loss_mask, start, end)?;
        let micro_losses =
            |adv: &Tensor, reduce: &dyn Fn(&policy_loss::TokenLoss) -> Result<Tensor, String>| {
                let mut losses = Vec::new();
                let mut metrics = Vec::new();
                let mut s = 0;
                while s < end - start {
                    let e = (s + micro).min(end - start);
                    let lp_m = mb_lp.as_tensor().narrow(0, s, e - s).map_err(err_str)?;
                    let (old_m, adv_m, mask_m) = (
                        rows(&mb_old, s, e)?,
                        rows(adv, s, e)?,
                        rows(&mb_mask, s, e)?,
                    );
                    let inputs = PolicyLossInputs {
                        log_probs: &lp_m,
                        old_log_probs: &old_m,
                        advantages: &adv_m,
                        loss_mask: Some(&mask_m),
                        rollout_log_probs: None,
                    };
                    let t = policy_loss::compute_token_loss(loss_name, &inputs, &pcfg)
                        .map_err(err_str)?;
                    losses.push(reduce(&t)?);
                    metrics.push(t.metrics);
                    s = e;
                }
                Ok::<_, String>((losses, metrics))
            };
        // HEAD: masked sums of pre-scaled advantages, gradients summed over micro-batches.
        let head_reduce = |t: &policy_loss::TokenLoss| {
            reduction::masked_sum(&t.loss, t.loss_mask.as_ref()).map_err(err_str)
        };
        let (losses, metrics) = micro_losses(&mb_adv, &head_reduce)?;
        let vals: Vec<f64> = losses.iter().map(scalar).collect::<Result<_, _>>()?;
        close(
            "micro_batch_sum_losses",
            &vals,
            field(e, "micro_batch_sum_losses")?,
            tol,
        )?;
        let exp_metrics = field(e, "micro_batch_metrics")?
            .as_array()
            .ok_or("micro_batch_metrics")?;
        for (k, (ours, theirs)) in metrics.iter().zip(exp_metrics).enumerate() {
            let cr = *ours.get("clip_ratio").ok_or("clip_ratio missing")?;
            close(
                &format!("micro {k} clip_ratio"),
                &[cr],
                field(theirs, "clip_ratio")?,
                Tol::F32,
            )?;
        }
        let total = losses
            .iter()
            .skip(1)
            .try_fold(losses[0].clone(), |a, b| a.add(b))
            .map_err(err_str)?;
        close(
            "sum_of_micro_losses",
            &[scalar(&total)?],
            field(e, "sum_of_micro_losses")?,
            tol,
        )?;
        let grads = total.backward().map_err(err_str)?;
        let g = grads.get(mb_lp.as_tensor()).ok_or("no gradient")?.clone();
        close_t("grad_log_probs", &g, field(e, "grad_log_probs")?, tol)?;
        all_grads.push(g);
        let whole_inputs = PolicyLossInputs {
            log_probs: mb_lp.as_tensor(),
            old_log_probs: &mb_old,
            advantages: &mb_adv,
            loss_mask: Some(&mb_mask),
            rollout_log_probs: None,
        };
        let whole = policy_loss::compute_token_loss(loss_name, &whole_inputs, &pcfg)
            .and_then(|t| reduction::masked_sum(&t.loss, t.loss_mask.as_ref()))
            .map_err(err_str)?;
        close(
            "whole_minibatch_sum_loss",
            &[scalar(&whole)?],
            field(e, "whole_minibatch_sum_loss")?,
            tol,
        )?;

        // REF: reduce_loss per micro-batch on the raw advantages, mean over micro-batches.
        if let Some(x) = xref.and_then(|x| x.get(m)) {
            let red: LossReduction = field(x, "ref_reduction")?
                .as_str()
                .ok_or("ref_reduction")?
                .parse()
                .map_err(err_str)?;
            let raw_adv = rows(&adv, start, end)?;
            let ref_reduce = |t: &policy_loss::TokenLoss| {
                reduction::reduce_loss_ref(&t.loss, t.loss_mask.as_ref(), red, max_seq_len)
                    .map_err(err_str)
            };
            let (losses, _) = micro_losses(&raw_adv, &ref_reduce)?;
            let vals: Vec<f64> = losses.iter().map(scalar).collect::<Result<_, _>>()?;
            close(
                "ref_micro_batch_losses",
                &vals,
                field(x, "ref_micro_batch_losses")?,
                tol,
            )?;
            let sum = losses
                .iter()
                .skip(1)
                .try_fold(losses[0].clone(), |a, b| a.add(b))
                .map_err(err_str)?;
            let mean = sum
                .affine(1.0 / losses.len() as f64, 0.0)
                .map_err(err_str)?;
            close(
                "ref_effective_loss_mean_over_micro",
                &[scalar(&mean)?],
                field(x, "ref_effective_loss_mean_over_micro")?,
                tol,
            )?;
            let g = mean.backward().map_err(err_str)?;
            close_t(
                "ref_effective_grad_log_probs",
                g.get(mb_lp.as_tensor()).ok_or("no gradient")?,
                field(x, "ref_effective_grad_log_probs")?,
                tol,
            )?;
            let whole_ref = PolicyLossInputs {
                advantages: &raw_adv,
                ..whole_inputs
            };
            let whole = policy_loss::compute_token_loss(loss_name, &whole_ref, &pcfg)
                .and_then(|t| {
                    reduction::reduce_loss_ref(&t.loss, t.loss_mask.as_ref(), red, max_seq_len)
                })
                .map_err(err_str)?;
            close(
                "ref_whole_minibatch_loss",
                &[scalar(&whole)?],
                field(x, "ref_whole_minibatch_loss")?,
                tol,
            )?;
            let g = whole.backward().map_err(err_str)?;
            close_t(
                "ref_whole_minibatch_grad_log_probs",
                g.get(mb_lp.as_tensor()).ok_or("no gradient")?,
                field(x, "ref_whole_minibatch_grad_log_probs")?,
                tol,
            )?;
        }
    }
    let all = Tensor::cat(&all_grads, 0).map_err(err_str)?;
    close_t(
        "grad_log_probs_accumulated_over_micro_batches",
        &all,
        field(exp, "grad_log_probs_accumulated_over_micro_batches")?,
        tol,
    )
}

fn direct_case(c: &Value) -> CaseResult {
    let dtype = dtype_of(c)?;
    let call = field(c, "call")?;
    let i = field(c, "inputs")?;
    let adv = tensor(field(i, "advantages")?, dtype)?;
    let mask = tensor(field(i, "loss_mask")?, dtype)?;
    let pb = match call.get("prompt_boundaries") {
        None | Some(Value::Null) => None,
        Some(v) => Some(pairs(v)?),
    };
    let got = field(call, "loss_reduction")?
        .as_str()
        .ok_or("loss_reduction")?
        .parse::<LossReduction>()
        .and_then(|r| {
            reduction::scale_advantages_minibatch(
                &adv,
                &mask,
                r,
                usize_of(call, "micro_batch_size").unwrap_or(1),
                call.get("max_seq_len")
                    .and_then(Value::as_u64)
                    .map(|x| x as usize),
                pb.as_deref(),
            )
        })
        .map_err(err_str);
    if let Some(e) = c.get("expected_error") {
        return expect_error("scale_advantages_minibatch", got, e);
    }
    close_t(
        "normalized_advantages",
        &got?,
        field(field(c, "expected")?, "normalized_advantages")?,
        Tol::for_dtype(dtype),
    )
}

fn boundary_case(c: &Value) -> CaseResult {
    let uids = strings(field(c, "uids")?)?;
    let mb = reduction::mini_batch_boundaries(
        &uids,
        usize_of(c, "mini_batch_size")?,
        usize_of(c, "train_batch_size")?,
        field(c, "is_stepwise")?.as_bool().unwrap_or(false),
        usize_of(c, "n_samples_per_prompt")?,
    )
    .map_err(err_str);
    match c.get("expected_mini_batch_boundaries_error") {
        Some(e) => expect_error("mini_batch_boundaries", mb, e)?,
        None => same_pairs(
            "mini_batch_boundaries",
            &mb?,
            field(c, "expected_mini_batch_boundaries")?,
        )?,
    }
    let pb = reduction::prompt_boundaries(&uids).map_err(err_str);
    match c.get("expected_prompt_boundaries_error") {
        Some(e) => expect_error("prompt_boundaries", pb, e),
        None => same_pairs(
            "prompt_boundaries",
            &pb?,
            field(c, "expected_prompt_boundaries")?,
        ),
    }
}
