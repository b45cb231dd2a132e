//! Gradient of every built-in loss against central finite differences in f64.
//!
//! Points are chosen away from kinks (clip bounds, ties, the kl_cov/clip_cov selections) so the
//! loss is smooth there. The f32 PPO ratio limits FD agreement for ratio-based losses to ~1e-6.

use candle_core::{Device, Tensor, Var};

use super::*;
use crate::ops;
use crate::reduction::LossReduction;

fn inputs() -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let lp = vec![-1.0, -0.5, -2.0, -0.3, -1.7, -0.9, -2.4, -0.2];
    let old = vec![-1.1, -0.3, -2.5, -0.35, -1.2, -1.0, -2.0, -0.25];
    let adv = vec![0.7, -0.4, 1.3, -1.1, 0.5, -0.8, 0.9, 0.2];
    let mask = vec![1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0];
    (lp, old, adv, mask)
}

fn loss_at(name: &str, lp: &[f64], cfg: &PolicyLossConfig) -> f64 {
    let (_, old, _, _) = inputs();
    loss_at_old(name, lp, &old, cfg)
}

fn loss_at_old(name: &str, lp: &[f64], old: &[f64], cfg: &PolicyLossConfig) -> f64 {
    let (_, _, adv, mask) = inputs();
    let d = Device::Cpu;
    let t = |v: &[f64]| Tensor::from_vec(v.to_vec(), (2, 4), &d).unwrap();
    let (lp, old, adv, mask) = (t(lp), t(old), t(&adv), t(&mask));
    let i = PolicyLossInputs {
        log_probs: &lp,
        old_log_probs: &old,
        advantages: &adv,
        loss_mask: Some(&mask),
        rollout_log_probs: None,
    };
    ops::scalar_f64(&compute_policy_loss(name, &i, cfg).unwrap().loss).unwrap()
}

#[test]
fn every_loss_gradient_matches_finite_differences() {
    let (lp, old, adv, mask) = inputs();
    let d = Device::Cpu;
    for reduction in [
        LossReduction::TokenMean,
        LossReduction::SequenceMean,
        LossReduction::SeqMeanTokenSumNorm,
    ] {
        let cfg = PolicyLossConfig {
            loss_reduction: reduction,
            max_seq_len: Some(6),
            eps_clip_high: 0.28,
            kl_cov: KlCovConfig {
                kl_cov_frac: 0.5,
                ppo_kl_coef: 0.7,
            },
            ..Default::default()
        };
        // GSPO's gradient is by design not the derivative of its value (stop-gradient on the
        // sequence weight); it has its own test below.
        for name in [
            "regular",
            "dual_clip",
            "cispo",
            "sapo",
            "kl_cov",
            "clip_cov",
        ] {
            let var = Var::from_tensor(&Tensor::from_vec(lp.clone(), (2, 4), &d).unwrap()).unwrap();
            let t = |v: &[f64]| Tensor::from_vec(v.to_vec(), (2, 4), &d).unwrap();
            let (old_t, adv_t, mask_t) = (t(&old), t(&adv), t(&mask));
            let i = PolicyLossInputs {
                log_probs: var.as_tensor(),
                old_log_probs: &old_t,
                advantages: &adv_t,
                loss_mask: Some(&mask_t),
                rollout_log_probs: None,
            };
            let out = compute_policy_loss(name, &i, &cfg).unwrap();
            let grads = out.loss.backward().unwrap();
            let g = ops::to_vec_f64(grads.get(var.as_tensor()).unwrap()).unwrap();
            // The PPO ratio is f32 by design: a wide step keeps f32 rounding out of the difference.
            let h = 1e-3;
            for k in 0..lp.len() {
                let mut up = lp.clone();
                up[k] += h;
                let mut down = lp.clone();
                down[k] -= h;
                // CISPO's weight `sg[clip(r)]` is a constant for the gradient: move old_log_probs
                // with log_probs so the ratio (hence the weight) stays fixed.
                let fd = if name == "cispo" {
                    let (_, old, _, _) = inputs();
                    let mut old_up = old.clone();
                    old_up[k] += h;
                    let mut old_down = old.clone();
                    old_down[k] -= h;
                    (loss_at_old(name, &up, &old_up, &cfg)
                        - loss_at_old(name, &down, &old_down, &cfg))
                        / (2.0 * h)
                } else {
                    (loss_at(name, &up, &cfg) - loss_at(name, &down, &cfg)) / (2.0 * h)
                };
                assert!(
                    (fd - g[k]).abs() < 2e-4 * (1.0 + fd.abs()),
                    "{name} {reduction} token {k}: finite difference {fd} vs autograd {}",
                    g[k]
                );
            }
        }
    }
}

#[test]
fn unknown_loss_names_the_available_ones() {
    let err = get("ppo2").err().unwrap().to_string();
    assert!(err.contains("'regular'") && err.contains("'sapo'"), "{err}");
    assert!(is_registered("dual_clip"));
    assert!(registered_names().len() >= 7);
}

/// GSPO-token's gradient is that of a PPO surrogate whose ratio is `s_i · π/π_now`: the regular
/// loss with `old' = logp - log s_i` has that ratio, so its finite differences give GSPO's gradient.
#[test]
fn gspo_gradient_is_the_sequence_weighted_token_gradient() {
    let (lp, old, adv, mask) = inputs();
    let d = Device::Cpu;
    let cfg = PolicyLossConfig {
        loss_reduction: LossReduction::SequenceMean,
        ..Default::default()
    };
    let var = Var::from_tensor(&Tensor::from_vec(lp.clone(), (2, 4), &d).unwrap()).unwrap();
    let t = |v: &[f64]| Tensor::from_vec(v.to_vec(), (2, 4), &d).unwrap();
    let (old_t, adv_t, mask_t) = (t(&old), t(&adv), t(&mask));
    let i = PolicyLossInputs {
        log_probs: var.as_tensor(),
        old_log_probs: &old_t,
        advantages: &adv_t,
        loss_mask: Some(&mask_t),
        rollout_log_probs: None,
    };
    let out = compute_policy_loss("gspo", &i, &cfg).unwrap();
    let g = ops::to_vec_f64(out.loss.backward().unwrap().get(var.as_tensor()).unwrap()).unwrap();
    // log s_i = masked mean of the row's log-ratio.
    let mut shifted_old = vec![0.0; 8];
    for row in 0..2 {
        let idx = row * 4..row * 4 + 4;
        let (num, den) = idx.clone().fold((0.0, 0.0), |(n, dd), k| {
            (n + (lp[k] - old[k]) * mask[k], dd + mask[k])
        });
        for k in idx {
            shifted_old[k] = lp[k] - num / den;
        }
    }
    let h = 1e-3;
    for k in 0..8 {
        let mut up = lp.clone();
        up[k] += h;
        let mut down = lp.clone();
        down[k] -= h;
        let fd = (loss_at_old("regular", &up, &shifted_old, &cfg)
            - loss_at_old("regular", &down, &shifted_old, &cfg))
            / (2.0 * h);
        assert!(
            (fd - g[k]).abs() < 2e-4 * (1.0 + fd.abs()),
            "token {k}: {fd} vs {}",
            g[k]
        );
    }
}
