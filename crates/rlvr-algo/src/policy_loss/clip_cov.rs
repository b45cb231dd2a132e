//! Clip-Cov: the PPO clipped loss `max(-A·r, -A·clip(r))` (`r = exp(logp - logp_old)`, unclamped),
//! with the gradient of a random subset of tokens removed: among valid, not-already-clipped tokens
//! whose covariance `(A - mean A)(logp - mean logp)` lies strictly inside `(clip_cov_lb,
//! clip_cov_ub)`, `max(⌊clip_ratio · n_valid⌋, 1)` are drawn (seeded) and their loss zeroed.
//! `clip_ratio` reports the masked fraction of zeroed tokens.

use std::collections::BTreeMap;

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::{fraction, PolicyLoss, PolicyLossConfig, PolicyLossInputs, TokenLoss};
use crate::error::Result;
use crate::ops;

/// `clip_cov`.
pub struct ClipCov;

impl PolicyLoss for ClipCov {
    fn token_loss(&self, i: &PolicyLossInputs, c: &PolicyLossConfig) -> Result<TokenLoss> {
        let adv = i.advantages;
        let ratio = i.log_probs.sub(i.old_log_probs)?.exp()?;
        let pg1 = adv.neg()?.mul(&ratio)?;
        let clamped = ops::clamp(
            &ratio,
            Some(1.0 - c.eps_clip_low),
            Some(1.0 + c.eps_clip_high),
        )?;
        let pg2 = adv.neg()?.mul(&clamped)?;

        let n_tok = adv.elem_count();
        let mask_v = match i.loss_mask {
            Some(m) => ops::to_vec_f64(m)?,
            None => vec![1.0; n_tok],
        };
        let pg1_v = ops::to_vec_f64(&pg1)?;
        let pg2_v = ops::to_vec_f64(&pg2)?;
        let prec = crate::advantages::Precision::of(adv);
        let mean_a = ops::scalar_f64(&ops::masked_mean(adv, i.loss_mask)?)?;
        let mean_l = ops::scalar_f64(&ops::masked_mean(&i.log_probs.detach(), i.loss_mask)?)?;
        let adv_v = ops::to_vec_f64(adv)?;
        let lp_v = ops::to_vec_f64(i.log_probs)?;
        let candidates: Vec<usize> = (0..n_tok)
            .filter(|&k| {
                let valid = mask_v[k] > 0.0;
                let clipped_by_origin = pg2_v[k] > pg1_v[k] && valid;
                let cov = prec.r(prec.r(adv_v[k] - mean_a) * prec.r(lp_v[k] - mean_l));
                valid
                    && !clipped_by_origin
                    && cov > c.clip_cov.clip_cov_lb
                    && cov < c.clip_cov.clip_cov_ub
            })
            .collect();
        let n_valid: f64 = mask_v.iter().sum();
        let clip_num = ((c.clip_cov.clip_ratio * n_valid) as usize).max(1);
        let mut corr = vec![1.0f64; n_tok];
        let mut rng = rand::rngs::StdRng::seed_from_u64(c.clip_cov.seed);
        let mut chosen = candidates.clone();
        chosen.shuffle(&mut rng);
        for &k in chosen.iter().take(clip_num.min(candidates.len())) {
            corr[k] = 0.0;
        }
        let corr_t = Tensor::from_vec(corr, adv.shape(), adv.device())?.to_dtype(adv.dtype())?;
        let loss = pg1.maximum(&pg2)?.mul(&corr_t)?;
        let zeroed = corr_t.eq(0.0)?;
        let mut metrics = BTreeMap::new();
        metrics.insert("clip_ratio".into(), fraction(&zeroed, i.loss_mask, adv)?);
        Ok(TokenLoss {
            loss,
            loss_mask: i.loss_mask.cloned(),
            metrics,
        })
    }
}
