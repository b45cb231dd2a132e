//! GSPO (GSPO-token): a sequence-level importance weight `s_i = exp(masked_mean(logp - logp_old))`
//! used for every token as `sg[s_i] · π/sg[π]` (value `s_i`, gradient of the token's log-prob),
//! clamped at `exp(10)`, inside the PPO clipped surrogate.

use super::ppo::clipped_surrogate;
use super::{PolicyLoss, PolicyLossConfig, PolicyLossInputs, TokenLoss};
use crate::error::Result;
use crate::ops;

/// `gspo`.
pub struct Gspo;

impl PolicyLoss for Gspo {
    fn token_loss(&self, i: &PolicyLossInputs, c: &PolicyLossConfig) -> Result<TokenLoss> {
        let log_ratio = i.log_probs.sub(i.old_log_probs)?;
        let seq_log_iw = ops::masked_mean_rows(&log_ratio, i.loss_mask)?.unsqueeze(1)?;
        let token_log_iw = i
            .log_probs
            .sub(&i.log_probs.detach())?
            .broadcast_add(&seq_log_iw.detach())?;
        let ratio = ops::clamp(&token_log_iw, None, Some(10.0))?.exp()?;
        let (loss, metrics) = clipped_surrogate(&ratio, i.advantages, i.loss_mask, c)?;
        Ok(TokenLoss {
            loss,
            loss_mask: i.loss_mask.cloned(),
            metrics,
        })
    }
}
