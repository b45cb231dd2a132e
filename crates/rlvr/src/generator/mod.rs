//! The generator: prompts in, scored responses out (SkyRL's `GeneratorInterface`). The embedded
//! engine runs in this process on the trainer's own weights; remote engines plug in behind the
//! same trait.

mod embedded;

pub use embedded::EmbeddedGenerator;

use crate::data::PromptRow;
use anyhow::Result;

/// Sampling settings of one generation call (`generator.sampling_params` or
/// `generator.eval_sampling_params`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: i64,
    pub min_p: f64,
    pub max_generate_length: usize,
    pub stop: Vec<String>,
}

/// One prompt group to generate for: `n` samples share `uid`.
#[derive(Debug, Clone)]
pub struct PromptGroup {
    pub uid: String,
    pub row: PromptRow,
    pub n: usize,
}

/// Why a response ended: SkyRL's `stop_reason` strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// An EOS token or stop string.
    Stop,
    /// `max_generate_length` reached.
    Length,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Stop => "stop",
            StopReason::Length => "length",
        }
    }
}

/// Rows of generated samples, in group order (`n` consecutive rows per prompt group), as SkyRL's
/// `GeneratorOutput`. Rewards are scalars here; the trainer places them on the last token.
#[derive(Debug, Clone, Default)]
pub struct GeneratorOutput {
    pub uids: Vec<String>,
    pub rows: Vec<PromptRow>,
    pub prompt_token_ids: Vec<Vec<u32>>,
    pub response_ids: Vec<Vec<u32>>,
    pub responses: Vec<String>,
    pub rewards: Vec<f64>,
    pub loss_masks: Vec<Vec<f32>>,
    pub stop_reasons: Vec<StopReason>,
    /// Log-prob of each sampled token under the engine's distribution.
    pub rollout_logprobs: Vec<Vec<f32>>,
}

impl GeneratorOutput {
    pub fn len(&self) -> usize {
        self.uids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.uids.is_empty()
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> GeneratorOutput {
        fn pick<T: Clone>(v: &[T], idx: &[usize]) -> Vec<T> {
            if v.is_empty() {
                return Vec::new();
            }
            idx.iter().map(|&i| v[i].clone()).collect()
        }
        GeneratorOutput {
            uids: pick(&self.uids, indices),
            rows: pick(&self.rows, indices),
            prompt_token_ids: pick(&self.prompt_token_ids, indices),
            response_ids: pick(&self.response_ids, indices),
            responses: pick(&self.responses, indices),
            rewards: pick(&self.rewards, indices),
            loss_masks: pick(&self.loss_masks, indices),
            stop_reasons: pick(&self.stop_reasons, indices),
            rollout_logprobs: pick(&self.rollout_logprobs, indices),
        }
    }

    /// Appends all rows of `other`.
    pub fn extend(&mut self, other: GeneratorOutput) {
        self.uids.extend(other.uids);
        self.rows.extend(other.rows);
        self.prompt_token_ids.extend(other.prompt_token_ids);
        self.response_ids.extend(other.response_ids);
        self.responses.extend(other.responses);
        self.rewards.extend(other.rewards);
        self.loss_masks.extend(other.loss_masks);
        self.stop_reasons.extend(other.stop_reasons);
        self.rollout_logprobs.extend(other.rollout_logprobs);
    }
}

/// Generates and scores responses for prompt groups.
pub trait Generator {
    /// `seed` makes the call reproducible: sample `j` of group `i` gets its own seed derived from it.
    fn generate(
        &mut self,
        groups: &[PromptGroup],
        sampling: &Sampling,
        seed: u64,
    ) -> Result<GeneratorOutput>;
}
