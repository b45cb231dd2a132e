//! Per-token KL estimators between the policy and a reference policy (Schulman's k1/k2/k3).
//!
//! With `d = log_probs - log_probs_base`:
//! `k1 = d`, `abs = |d|`, `k2 = d²/2`, `k3 = clamp(exp(-d') + d' - 1, ±10)` where
//! `d' = clamp(-d, ±20)` (SkyRL computes `kl = base - logp`, then `exp(kl) - kl - 1`).
//!
//! This is HEAD's `compute_approx_kl`: differentiable w.r.t. `log_probs`, and masked positions are
//! routed to exactly 0 (so a NaN/inf at a padded position cannot leak into the loss). REF ran the
//! same formula under `torch.no_grad()`, so REF's KL loss had no gradient at all; that was a bug and
//! is not reproduced ([`approx_kl_ref`] reproduces only REF's *values*).

use std::fmt;
use std::str::FromStr;

use candle_core::{Result, Tensor};

use crate::ops;

/// Which KL estimator (`trainer.algorithm.kl_estimator_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    K1,
    K2,
    #[default]
    K3,
    Abs,
}

impl KlEstimator {
    pub const NAMES: [&'static str; 4] = ["k1", "k2", "k3", "abs"];

    pub fn name(self) -> &'static str {
        match self {
            KlEstimator::K1 => "k1",
            KlEstimator::K2 => "k2",
            KlEstimator::K3 => "k3",
            KlEstimator::Abs => "abs",
        }
    }
}

impl fmt::Display for KlEstimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KlEstimator {
    type Err = crate::Error;

    /// SkyRL accepts exactly `k1`, `k2`, `k3`, `abs` (no `low_var_kl`/`mse` aliases).
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "k1" => Ok(KlEstimator::K1),
            "k2" => Ok(KlEstimator::K2),
            "k3" => Ok(KlEstimator::K3),
            "abs" => Ok(KlEstimator::Abs),
            other => Err(crate::Error::InvalidValue(format!(
                "Invalid KL estimator type: {other} (expected one of: {})",
                Self::NAMES.join(", ")
            ))),
        }
    }
}

/// The unmasked per-token estimate.
fn estimate(log_probs: &Tensor, log_probs_base: &Tensor, estimator: KlEstimator) -> Result<Tensor> {
    match estimator {
        KlEstimator::K1 => log_probs.sub(log_probs_base),
        KlEstimator::Abs => ops::abs(&log_probs.sub(log_probs_base)?),
        KlEstimator::K2 => log_probs.sub(log_probs_base)?.sqr()?.affine(0.5, 0.0),
        KlEstimator::K3 => {
            let kl = ops::clamp(&log_probs_base.sub(log_probs)?, Some(-20.0), Some(20.0))?;
            let kld = kl.exp()?.sub(&kl)?.affine(1.0, -1.0)?;
            ops::clamp(&kld, Some(-10.0), Some(10.0))
        }
    }
}

/// Per-token KL (HEAD semantics): `where(mask != 0, kl * mask, 0)`; no mask = unmasked.
pub fn approx_kl(
    log_probs: &Tensor,
    log_probs_base: &Tensor,
    loss_mask: Option<&Tensor>,
    estimator: KlEstimator,
) -> Result<Tensor> {
    let kld = estimate(log_probs, log_probs_base, estimator)?;
    match loss_mask {
        None => Ok(kld),
        Some(mask) => {
            let mask = mask.to_dtype(kld.dtype())?;
            let keep = mask.ne(0.0)?;
            keep.where_cond(&kld.mul(&mask)?, &kld.zeros_like()?)
        }
    }
}

/// REF's values (`kl * mask`, NaN at masked positions stays NaN), detached: REF had no gradient.
pub fn approx_kl_ref(
    log_probs: &Tensor,
    log_probs_base: &Tensor,
    loss_mask: Option<&Tensor>,
    estimator: KlEstimator,
) -> Result<Tensor> {
    let kld = estimate(&log_probs.detach(), &log_probs_base.detach(), estimator)?;
    match loss_mask {
        None => Ok(kld),
        Some(mask) => kld.mul(&mask.to_dtype(kld.dtype())?),
    }
}

/// The worker's KL loss: per-row masked mean, then the mean over rows
/// (`masked_mean(kl, loss_mask, dim=-1).mean()`), before `kl_loss_coef`.
pub fn kl_loss_sequence_mean(kl: &Tensor, loss_mask: Option<&Tensor>) -> Result<Tensor> {
    ops::masked_mean_rows(kl, loss_mask)?.mean_all()
}

/// The coefficient of the KL penalty in the reward (`use_kl_in_reward`), SkyRL's
/// `kl_ctrl`: `fixed` keeps `kl_loss_coef`; `adaptive` (Ziegler et al. 2019) moves it toward
/// `kl_target`, each update by `clip(kl / target - 1, ±0.2) * n_steps / horizon` of itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KlController {
    Fixed {
        value: f64,
    },
    Adaptive {
        value: f64,
        target: f64,
        horizon: f64,
    },
}

/// `trainer.algorithm.kl_ctrl.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlCtrlType {
    #[default]
    Fixed,
    Adaptive,
}

impl KlController {
    /// `horizon` must be > 0 for `adaptive`.
    pub fn new(
        kind: KlCtrlType,
        init: f64,
        target: f64,
        horizon: usize,
    ) -> crate::error::Result<Self> {
        match kind {
            KlCtrlType::Fixed => Ok(KlController::Fixed { value: init }),
            KlCtrlType::Adaptive if horizon == 0 => Err(crate::Error::invalid(
                "horizon must be larger than 0. Got 0 (trainer.algorithm.kl_ctrl.horizon)",
            )),
            KlCtrlType::Adaptive => Ok(KlController::Adaptive {
                value: init,
                target,
                horizon: horizon as f64,
            }),
        }
    }

    pub fn value(&self) -> f64 {
        match *self {
            KlController::Fixed { value } | KlController::Adaptive { value, .. } => value,
        }
    }

    /// After a batch of `n_steps` sequences whose mean KL was `current`.
    pub fn update(&mut self, current: f64, n_steps: usize) {
        if let KlController::Adaptive {
            value,
            target,
            horizon,
        } = self
        {
            let error = (current / *target - 1.0).clamp(-0.2, 0.2);
            *value *= 1.0 + error * n_steps as f64 / *horizon;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Central finite differences in f64 for every estimator, away from the clamp kinks.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let lp = [-1.3f64, -0.2, -2.5, -0.9, -4.0];
        let base = [-1.0f64, -0.7, -2.0, -0.9 - 1e-3, -1.5];
        let mask = [1.0f64, 0.5, 1.0, 1.0, 0.0];
        let dev = Device::Cpu;
        let base_t = Tensor::new(&base, &dev)?;
        let mask_t = Tensor::new(&mask, &dev)?;
        for est in [
            KlEstimator::K1,
            KlEstimator::K2,
            KlEstimator::K3,
            KlEstimator::Abs,
        ] {
            let var = Var::new(&lp, &dev)?;
            let loss = approx_kl(var.as_tensor(), &base_t, Some(&mask_t), est)?.sum_all()?;
            let grads = loss.backward()?;
            let g = ops::to_vec_f64(grads.get(var.as_tensor()).unwrap())?;
            for i in 0..lp.len() {
                let h = 1e-6;
                let f = |delta: f64| -> Result<f64> {
                    let mut p = lp;
                    p[i] += delta;
                    let t = Tensor::new(&p, &dev)?;
                    ops::scalar_f64(&approx_kl(&t, &base_t, Some(&mask_t), est)?.sum_all()?)
                };
                let fd = (f(h)? - f(-h)?) / (2.0 * h);
                assert!(
                    (fd - g[i]).abs() < 1e-6,
                    "{est} i={i}: fd {fd} vs autograd {}",
                    g[i]
                );
            }
        }
        Ok(())
    }

    #[test]
    fn parses_only_skyrl_names() {
        assert_eq!("k3".parse::<KlEstimator>().unwrap(), KlEstimator::K3);
        let err = "low_var_kl".parse::<KlEstimator>().unwrap_err().to_string();
        assert!(err.contains("k1, k2, k3, abs"), "{err}");
    }

    #[test]
    fn adaptive_kl_controller_moves_toward_the_target_by_at_most_a_fifth() {
        let mut c = KlController::new(KlCtrlType::Adaptive, 0.001, 0.1, 100).unwrap();
        c.update(0.15, 10); // error 0.5 clipped to 0.2: x (1 + 0.2 * 10 / 100)
        assert!((c.value() - 0.001 * 1.02).abs() < 1e-15);
        c.update(0.05, 50); // error -0.5 clipped to -0.2: x (1 - 0.2 * 50 / 100)
        assert!((c.value() - 0.001 * 1.02 * 0.9).abs() < 1e-15);
        let mut f = KlController::new(KlCtrlType::Fixed, 0.001, 0.1, 100).unwrap();
        f.update(10.0, 1000);
        assert_eq!(f.value(), 0.001);
        assert!(KlController::new(KlCtrlType::Adaptive, 0.001, 0.1, 0).is_err());
    }
}
