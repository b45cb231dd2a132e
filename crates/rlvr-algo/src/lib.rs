//! The algorithm core of rlvr: everything between "responses were scored" and "here is a loss to
//! backpropagate", mirroring SkyRL's `skyrl-train` number for number (see `tests/golden/`).
//!
//! - [`logprobs`]: log-probs of sampled tokens and entropy from temperature-scaled logits.
//! - [`advantages`]: GRPO, RLOO, REINFORCE++, GAE, whitening, batch normalisation; a registry.
//! - [`policy_loss`]: regular/dual-clip PPO, GSPO, CISPO, SAPO, KL-Cov, Clip-Cov; a registry.
//! - [`reduction`]: mini-batch loss reductions that do not depend on the micro-batch split.
//! - [`critic_loss`]: PPO's clipped value loss for a critic.
//! - [`kl`]: k1/k2/k3/abs KL estimators (differentiable).
//! - [`dynamic_sampling`]: DAPO's `filter` and `replace` strategies.
//! - [`overlong`]: overlong filtering and soft overlong punishment, reward metrics.
//! - [`rewards`]: verifiable rewards (GSM8K).
//! - [`conformance`]: runs the golden vectors through this library.

pub mod advantages;
pub mod conformance;
pub mod critic_loss;
pub mod dynamic_sampling;
mod error;
pub mod kl;
pub mod logprobs;
pub mod ops;
pub mod overlong;
pub mod policy_loss;
pub mod reduction;
mod registry;
pub mod rewards;
mod torch_sum;

pub use error::{Error, Result};
pub use kl::KlEstimator;
pub use logprobs::{entropy_from_logits, log_probs_from_logits};
pub use policy_loss::PolicyLossConfig;
pub use reduction::LossReduction;
