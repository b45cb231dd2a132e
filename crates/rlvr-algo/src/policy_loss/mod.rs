//! Policy losses (`trainer.algorithm.policy_loss_type`) and their registry.
//!
//! A loss produces the per-token loss `[B,R]` (plus its metrics and, for off-policy correction, an
//! updated loss mask); the reduction is separate (see [`crate::reduction`]):
//! - the trainer pre-scales advantages per mini-batch and sums each micro-batch's
//!   `loss · mask` ([`crate::reduction::masked_sum`]);
//! - [`compute_policy_loss`] applies REF's per-call `reduce_loss` for single-call use.
//!
//! The PPO ratio is `exp(clamp(float32(logp - logp_old), ±20))` — always f32, like SkyRL's
//! `_safe_exp_delta` — for `regular`, `dual_clip` and `cispo`.

mod cispo;
mod clip_cov;
mod config;
mod gspo;
mod kl_cov;
mod off_policy;
mod ppo;
mod sapo;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use candle_core::Tensor;

use crate::error::Result;
use crate::reduction;
use crate::registry::Registry;

pub use cispo::Cispo;
pub use clip_cov::ClipCov;
pub use config::{
    CispoConfig, ClipCovConfig, KlCovConfig, OffPolicyCorrectionConfig, PolicyLossConfig,
    SapoConfig, SequenceMaskMetric, TisRatioType,
};
pub use gspo::Gspo;
pub use kl_cov::KlCov;
pub use off_policy::apply_off_policy_correction;
pub use ppo::{DualClip, Regular};
pub use sapo::Sapo;

/// What a policy loss sees. All tensors are `[B,R]`.
#[derive(Debug, Clone, Copy)]
pub struct PolicyLossInputs<'a> {
    /// Current policy log-probs (the only input gradients flow to).
    pub log_probs: &'a Tensor,
    pub old_log_probs: &'a Tensor,
    pub advantages: &'a Tensor,
    /// 1 = token counts; `None` = every token counts.
    pub loss_mask: Option<&'a Tensor>,
    /// Log-probs from the generation engine, for off-policy correction.
    pub rollout_log_probs: Option<&'a Tensor>,
}

/// A per-token loss before reduction.
#[derive(Debug, Clone)]
pub struct TokenLoss {
    /// `[B,R]` per-token loss.
    pub loss: Tensor,
    /// The mask the reduction must use (the input mask, possibly narrowed by off-policy correction).
    pub loss_mask: Option<Tensor>,
    /// Scalar metrics, e.g. `clip_ratio`, `clip_ratio_low`, `clip_ratio_high`.
    pub metrics: BTreeMap<String, f64>,
}

impl TokenLoss {
    /// A loss that clips nothing (`clip_ratio` 0, as SkyRL reports for SAPO and KL-Cov), over
    /// the input's own mask.
    pub(crate) fn unclipped(loss: Tensor, i: &PolicyLossInputs) -> TokenLoss {
        let metrics = BTreeMap::from([("clip_ratio".to_string(), 0.0)]);
        TokenLoss {
            loss,
            loss_mask: i.loss_mask.cloned(),
            metrics,
        }
    }
}

/// A reduced loss.
#[derive(Debug, Clone)]
pub struct PolicyLossOutput {
    /// Scalar loss.
    pub loss: Tensor,
    pub metrics: BTreeMap<String, f64>,
}

/// A policy loss; implement this to add your own and [`register`] it by name.
pub trait PolicyLoss: Send + Sync {
    fn token_loss(&self, inputs: &PolicyLossInputs, config: &PolicyLossConfig)
        -> Result<TokenLoss>;
}

fn registry() -> &'static Registry<dyn PolicyLoss> {
    static REGISTRY: OnceLock<Registry<dyn PolicyLoss>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        Registry::new(
            "policy loss",
            vec![
                ("regular", Arc::new(Regular) as Arc<dyn PolicyLoss>),
                ("dual_clip", Arc::new(DualClip)),
                ("gspo", Arc::new(Gspo)),
                ("cispo", Arc::new(Cispo)),
                ("sapo", Arc::new(Sapo)),
                ("kl_cov", Arc::new(KlCov)),
                ("clip_cov", Arc::new(ClipCov)),
            ],
        )
    })
}

/// Adds (or replaces) the policy loss called `name`.
pub fn register(name: &str, loss: Arc<dyn PolicyLoss>) {
    registry().register(name, loss)
}

/// Whether a policy loss called `name` exists.
pub fn is_registered(name: &str) -> bool {
    registry().contains(name)
}

/// All policy loss names, sorted.
pub fn registered_names() -> Vec<String> {
    registry().names()
}

/// The policy loss called `name`, or an error listing the available ones.
pub fn get(name: &str) -> Result<Arc<dyn PolicyLoss>> {
    registry().get(name)
}

/// Per-token loss of the policy loss called `name`.
pub fn compute_token_loss(
    name: &str,
    inputs: &PolicyLossInputs,
    config: &PolicyLossConfig,
) -> Result<TokenLoss> {
    check_shapes(inputs)?;
    get(name)?.token_loss(inputs, config)
}

/// REF-style single call: per-token loss reduced with `config.loss_reduction` (REF `reduce_loss`).
pub fn compute_policy_loss(
    name: &str,
    inputs: &PolicyLossInputs,
    config: &PolicyLossConfig,
) -> Result<PolicyLossOutput> {
    if config.loss_reduction == reduction::LossReduction::SeqMeanTokenSumNorm
        && config.max_seq_len.is_none()
    {
        return Err(crate::Error::invalid(
            "max_seq_len must be provided for seq_mean_token_sum_norm loss reduction",
        ));
    }
    let t = compute_token_loss(name, inputs, config)?;
    let loss = reduction::reduce_loss_ref(
        &t.loss,
        t.loss_mask.as_ref(),
        config.loss_reduction,
        config.max_seq_len,
    )?;
    Ok(PolicyLossOutput {
        loss,
        metrics: t.metrics,
    })
}

fn check_shapes(i: &PolicyLossInputs) -> Result<()> {
    let dims = i.log_probs.dims();
    let named = [
        ("old_log_probs", Some(i.old_log_probs)),
        ("advantages", Some(i.advantages)),
        ("loss_mask", i.loss_mask),
        ("rollout_log_probs", i.rollout_log_probs),
    ];
    for (name, t) in named {
        if let Some(t) = t {
            if t.dims() != dims {
                return Err(crate::Error::invalid(format!(
                    "{name} has shape {:?}, expected {dims:?} like log_probs",
                    t.dims()
                )));
            }
        }
    }
    Ok(())
}

/// Stable `1 / (1 + exp(-x))` with finite gradients everywhere.
pub(crate) fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    let e = x.abs()?.neg()?.exp()?;
    let one_plus = e.affine(1.0, 1.0)?;
    let pos = one_plus.recip()?;
    let neg = e.div(&one_plus)?;
    x.ge(0.0)?.where_cond(&pos, &neg)
}

/// `masked_mean(cond.float(), mask)` for a 0/1 condition tensor, in `like`'s dtype.
pub(crate) fn fraction(cond: &Tensor, mask: Option<&Tensor>, like: &Tensor) -> Result<f64> {
    let c = cond.to_dtype(like.dtype())?;
    Ok(crate::ops::scalar_f64(&crate::ops::masked_mean(&c, mask)?)?)
}

#[cfg(test)]
mod tests;
