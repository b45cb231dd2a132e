//! KL-Cov: the plain importance-weighted loss `-A·r` (`r = exp(logp - logp_old)`, unclamped), plus
//! `ppo_kl_coef · |logp - logp_old|` on the `max(1, ⌊n·kl_cov_frac⌋)` valid tokens with the largest
//! covariance `(A - mean A)(logp - mean logp)` (means over valid tokens). Deterministic (top-k).

use candle_core::Tensor;

use super::{PolicyLoss, PolicyLossConfig, PolicyLossInputs, TokenLoss};
use crate::error::Result;
use crate::ops;

/// `kl_cov`.
pub struct KlCov;

impl PolicyLoss for KlCov {
    fn token_loss(&self, i: &PolicyLossInputs, c: &PolicyLossConfig) -> Result<TokenLoss> {
        let adv = i.advantages;
        let neg_kl = i.log_probs.sub(i.old_log_probs)?;
        let ratio = neg_kl.exp()?;
        let pg1 = adv.neg()?.mul(&ratio)?;
        let pg_kl = pg1.add(&ops::abs(&neg_kl)?.affine(c.kl_cov.ppo_kl_coef, 0.0)?)?;

        let adv_v = ops::to_vec_f64(adv)?;
        let lp_v = ops::to_vec_f64(i.log_probs)?;
        let valid: Vec<usize> = match i.loss_mask {
            Some(m) => ops::to_vec_f64(m)?
                .iter()
                .enumerate()
                .filter(|(_, &x)| x > 0.0)
                .map(|(k, _)| k)
                .collect(),
            None => (0..adv_v.len()).collect(),
        };
        let mut selected = vec![0u8; adv_v.len()];
        if !valid.is_empty() {
            let n = valid.len() as f64;
            let prec = crate::advantages::Precision::of(adv);
            let mean_a = prec.r(valid.iter().map(|&k| adv_v[k]).sum::<f64>() / n);
            let mean_l = prec.r(valid.iter().map(|&k| lp_v[k]).sum::<f64>() / n);
            let cov: Vec<f64> = valid
                .iter()
                .map(|&k| prec.r(prec.r(adv_v[k] - mean_a) * prec.r(lp_v[k] - mean_l)))
                .collect();
            let k = ((valid.len() as f64 * c.kl_cov.kl_cov_frac) as usize).max(1);
            let mut order: Vec<usize> = (0..cov.len()).collect();
            // Largest first; ties keep the earlier token (stable sort).
            order.sort_by(|&a, &b| cov[b].total_cmp(&cov[a]));
            for &o in order.iter().take(k.min(cov.len())) {
                selected[valid[o]] = 1;
            }
        }
        let sel = Tensor::from_vec(selected, adv.shape(), adv.device())?;
        let loss = sel.where_cond(&pg_kl, &pg1)?;
        Ok(TokenLoss::unclipped(loss, i))
    }
}
