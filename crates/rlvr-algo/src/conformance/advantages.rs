//! `advantages.json`: every estimator through the registry dispatcher, and batch normalisation.

use candle_core::DType;
use serde_json::Value;

use super::check::*;
use super::CaseOutcome;
use crate::advantages::{self, AdvantageInputs, AdvantageParams};

pub(crate) fn run(json: &Value) -> Vec<CaseOutcome> {
    run_lists(
        json,
        Naming::Plain,
        &[
            ("cases", &estimator_case),
            ("batch_normalize_cases", &batch_normalize_case),
        ],
    )
}

/// float64 advantages: rtol 1e-10 plus atol 1e-9 for all-equal non-dyadic GRPO groups.
fn tol(dtype: DType) -> Tol {
    match dtype {
        DType::F64 => Tol {
            rtol: 1e-10,
            atol: 1e-9,
        },
        d => Tol::for_dtype(d),
    }
}

fn estimator_case(c: &Value) -> CaseResult {
    let dtype = dtype_of(c)?;
    let call = field(c, "call")?;
    let inputs = field(c, "inputs")?;
    let rewards = tensor(field(inputs, "token_level_rewards")?, dtype)?;
    let mask = tensor(field(inputs, "response_mask")?, dtype)?;
    let values = opt_tensor(inputs.get("values"), dtype)?;
    // REINFORCE++ and GAE ignore groups; SkyRL's tests pass `index=None` for them.
    let uids = match field(inputs, "index")? {
        Value::Null => vec![String::new(); rewards.dims().first().copied().unwrap_or(0)],
        v => strings(v)?,
    };
    let name = field(call, "adv_estimator")?
        .as_str()
        .ok_or("adv_estimator")?;
    let params = AdvantageParams {
        gamma: num(field(call, "gamma")?)?,
        lambd: num(field(call, "lambd")?)?,
        grpo_norm_by_std: field(call, "grpo_norm_by_std")?.as_bool().unwrap_or(true),
        epsilon: call
            .get("epsilon_grpo_default")
            .map(num)
            .transpose()?
            .unwrap_or(1e-6),
    };
    let inputs = AdvantageInputs {
        token_level_rewards: &rewards,
        response_mask: &mask,
        uids: &uids,
        values: values.as_ref(),
    };
    let got = advantages::compute_advantages_and_returns(name, &inputs, &params).map_err(err_str);
    if let Some(e) = c.get("expected_error") {
        return expect_error("advantages", got, e);
    }
    let (adv, ret) = got?;
    let exp = field(c, "expected")?;
    close_t("advantages", &adv, field(exp, "advantages")?, tol(dtype))?;
    close_t("returns", &ret, field(exp, "returns")?, tol(dtype))
}

fn batch_normalize_case(c: &Value) -> CaseResult {
    let dtype = dtype_of(c)?;
    let inputs = field(c, "inputs")?;
    let adv = tensor(field(inputs, "advantages")?, dtype)?;
    let mask = tensor(field(inputs, "response_mask")?, dtype)?;
    let got = advantages::advantage_batch_normalize(&adv, &mask).map_err(err_str)?;
    close_t(
        "advantages",
        &got,
        field(field(c, "expected")?, "advantages")?,
        tol(dtype),
    )
}
