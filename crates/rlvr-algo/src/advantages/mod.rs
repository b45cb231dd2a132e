//! Advantage estimators (`trainer.algorithm.advantage_estimator`) and their registry.
//!
//! Every estimator takes per-token rewards `[B,R]` (an outcome reward sits on the last response
//! token), the response mask `[B,R]`, one group uid per row, optional critic values, and returns
//! `(advantages, returns)`, both `[B,R]` in the rewards' dtype. No gradient flows through them.

mod gae;
mod grpo;
mod reinforce_pp;
mod rloo;
mod whiten;

use std::sync::{Arc, OnceLock};

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::registry::Registry;

pub use gae::Gae;
pub use grpo::Grpo;
pub use reinforce_pp::ReinforcePlusPlus;
pub use rloo::Rloo;
pub use whiten::{advantage_batch_normalize, masked_var, masked_whiten};

/// What an estimator sees.
#[derive(Debug, Clone, Copy)]
pub struct AdvantageInputs<'a> {
    /// `[B,R]` per-token rewards.
    pub token_level_rewards: &'a Tensor,
    /// `[B,R]` 1 for response tokens, 0 for padding.
    pub response_mask: &'a Tensor,
    /// One group id per row (at least `B`; extra ids are ignored): rows sharing a uid are samples
    /// of the same prompt.
    pub uids: &'a [String],
    /// `[B,R]` critic values (GAE only).
    pub values: Option<&'a Tensor>,
}

/// Estimator hyper-parameters (SkyRL defaults: gamma 1, lambd 1, grpo_norm_by_std true, eps 1e-6).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdvantageParams {
    pub gamma: f64,
    pub lambd: f64,
    pub grpo_norm_by_std: bool,
    pub epsilon: f64,
}

impl Default for AdvantageParams {
    fn default() -> Self {
        AdvantageParams {
            gamma: 1.0,
            lambd: 1.0,
            grpo_norm_by_std: true,
            epsilon: 1e-6,
        }
    }
}

/// An advantage estimator; implement this to add your own and [`register`] it by name.
pub trait AdvantageEstimator: Send + Sync {
    /// Returns `(advantages, returns)`, both `[B,R]`.
    fn compute(
        &self,
        inputs: &AdvantageInputs,
        params: &AdvantageParams,
    ) -> Result<(Tensor, Tensor)>;
}

fn registry() -> &'static Registry<dyn AdvantageEstimator> {
    static REGISTRY: OnceLock<Registry<dyn AdvantageEstimator>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        Registry::new(
            "advantage estimator",
            vec![
                ("grpo", Arc::new(Grpo) as Arc<dyn AdvantageEstimator>),
                ("rloo", Arc::new(Rloo)),
                ("reinforce++", Arc::new(ReinforcePlusPlus)),
                ("gae", Arc::new(Gae)),
            ],
        )
    })
}

/// Adds (or replaces) the estimator called `name`.
pub fn register(name: &str, estimator: Arc<dyn AdvantageEstimator>) {
    registry().register(name, estimator)
}

/// Whether an estimator called `name` exists.
pub fn is_registered(name: &str) -> bool {
    registry().contains(name)
}

/// All estimator names, sorted.
pub fn registered_names() -> Vec<String> {
    registry().names()
}

/// The estimator called `name`, or an error listing the available ones.
pub fn get(name: &str) -> Result<Arc<dyn AdvantageEstimator>> {
    registry().get(name)
}

/// Dispatches to the estimator called `name` (SkyRL's `compute_advantages_and_returns`).
pub fn compute_advantages_and_returns(
    name: &str,
    inputs: &AdvantageInputs,
    params: &AdvantageParams,
) -> Result<(Tensor, Tensor)> {
    check_inputs(inputs)?;
    get(name)?.compute(inputs, params)
}

fn check_inputs(inputs: &AdvantageInputs) -> Result<()> {
    let (b, r) = inputs.token_level_rewards.dims2()?;
    if inputs.response_mask.dims() != [b, r] {
        return Err(crate::Error::invalid(format!(
            "response_mask has shape {:?}, expected [{b}, {r}] like token_level_rewards",
            inputs.response_mask.dims()
        )));
    }
    // Like SkyRL, only the first B uids are read; fewer is an error.
    if inputs.uids.len() < b {
        return Err(crate::Error::invalid(format!(
            "got {} uids for {b} rows of token_level_rewards",
            inputs.uids.len()
        )));
    }
    Ok(())
}

/// Rounds an f64 to the precision of `dtype`, so host-side arithmetic reproduces torch's per-op
/// rounding in that dtype (every op here is a single correctly rounded +,-,*,/).
#[derive(Clone, Copy)]
pub(crate) struct Precision(DType);

impl Precision {
    pub(crate) fn of(t: &Tensor) -> Self {
        Precision(t.dtype())
    }
    pub(crate) fn is_f32(self) -> bool {
        self.0 == DType::F32
    }
    pub(crate) fn r(self, x: f64) -> f64 {
        match self.0 {
            DType::F64 => x,
            DType::BF16 => half::bf16::from_f64(x).to_f64(),
            DType::F16 => half::f16::from_f64(x).to_f64(),
            _ => x as f32 as f64,
        }
    }
}

/// Rows `[B][R]` of f64 back into a tensor of `like`'s dtype and device.
pub(crate) fn from_rows(rows: &[Vec<f64>], like: &Tensor) -> Result<Tensor> {
    let b = rows.len();
    let r = rows.first().map_or(0, |x| x.len());
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (b, r), like.device())?.to_dtype(like.dtype())?)
}

/// Row indices of the first `rows` rows grouped by uid, in order of first appearance.
pub(crate) fn group_rows(uids: &[String], rows: usize) -> Vec<(&str, Vec<usize>)> {
    crate::ops::group_by_uid(&uids[..rows.min(uids.len())])
}

/// Per-row sum of the reward row (the sequence score), rounded like a torch sum in the dtype.
pub(crate) fn scores(rewards: &[Vec<f64>], p: Precision) -> Vec<f64> {
    rewards
        .iter()
        .map(|row| {
            if p.is_f32() {
                let r32: Vec<f32> = row.iter().map(|&x| x as f32).collect();
                crate::torch_sum::sum_f32(&r32) as f64
            } else {
                row.iter().fold(0.0, |acc, &x| p.r(acc + x))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    struct Zero;
    impl AdvantageEstimator for Zero {
        fn compute(&self, i: &AdvantageInputs, _: &AdvantageParams) -> Result<(Tensor, Tensor)> {
            let z = i.token_level_rewards.zeros_like()?;
            Ok((z.clone(), z))
        }
    }

    #[test]
    fn custom_estimator_can_be_registered_and_dispatched() -> Result<()> {
        assert!(!is_registered("zero_for_test"));
        register("zero_for_test", Arc::new(Zero));
        assert!(is_registered("zero_for_test"));
        assert!(registered_names().contains(&"grpo".to_string()));
        let rewards = Tensor::ones((2, 3), DType::F32, &Device::Cpu)?;
        let uids = vec!["a".to_string(), "a".to_string()];
        let inputs = AdvantageInputs {
            token_level_rewards: &rewards,
            response_mask: &rewards,
            uids: &uids,
            values: None,
        };
        let (adv, _) =
            compute_advantages_and_returns("zero_for_test", &inputs, &AdvantageParams::default())?;
        assert_eq!(crate::ops::to_vec_f64(&adv)?, vec![0.0; 6]);
        let err = get("nope").err().unwrap().to_string();
        assert!(err.contains("Unknown advantage estimator 'nope'"), "{err}");
        Ok(())
    }
}
