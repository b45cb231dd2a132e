//! The generator: prompts in, scored responses out (SkyRL's `GeneratorInterface`). The embedded
//! engine runs in this process on the trainer's own weights; remote engines plug in behind the
//! same trait.

mod embedded;
pub mod remote;
mod sharded;

pub use embedded::EmbeddedGenerator;
pub use remote::{RemoteGenerator, RemoteSettings};
pub use sharded::ShardedGenerator;

use crate::data::PromptRow;
use crate::env::EnvRegistry;
use anyhow::{Context, Result};
use rlvr_model::engine::{Completion, FinishReason, Request, SamplingParams};
use rlvr_model::{Model, Tokenizer};

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
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct GeneratorOutput {
    pub uids: Vec<String>,
    /// Not serialised (data-parallel ranks exchange outputs; each holds the prompt rows).
    #[serde(skip)]
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

    /// `generator.zero_reward_on_non_stop`: a response cut off by the length limit scores 0,
    /// whatever its environment gave it (SkyRL's generator does this before anything else sees
    /// the rewards).
    pub fn zero_rewards_not_stopped(&mut self) {
        for (r, s) in self.rewards.iter_mut().zip(&self.stop_reasons) {
            if *s != StopReason::Stop {
                *r = 0.0;
            }
        }
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

/// Stop ids: everything the tokenizer, model config and generation config call EOS.
pub fn stop_token_ids(p: &rlvr_model::Pretrained) -> Vec<u32> {
    let mut ids: Vec<u32> = p.tokenizer.eos_token_id().into_iter().collect();
    ids.extend(p.config.eos_token_ids());
    if let Some(g) = &p.generation_config {
        ids.extend(g.eos_token_ids());
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Stop ids of a model without its generation config: the config's and the tokenizer's EOS.
pub fn eos_ids(config: &rlvr_model::ModelConfig, tokenizer: &Tokenizer) -> Vec<u32> {
    let mut ids: Vec<u32> = config.eos_token_ids();
    if let Some(eos) = tokenizer.eos_token_id() {
        if !ids.contains(&eos) {
            ids.push(eos);
        }
    }
    ids
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

    /// Makes the engines generate with `policy`'s current weights (after step `global_step`).
    /// The embedded engine reads the trainer's own weights, so by default there is nothing to do.
    fn sync_weights(&mut self, _policy: &Model, _global_step: usize) -> Result<()> {
        Ok(())
    }
}

/// Token ids of a group's prompt after the chat template (with the generation prompt).
pub fn prompt_ids(tokenizer: &Tokenizer, group: &PromptGroup) -> Result<Vec<u32>> {
    tokenizer
        .apply_chat_template_ids(&group.row.prompt, true)
        .with_context(|| format!("applying the chat template to prompt {}", group.uid))
}

/// Per group: its prompt ids (chat template applied), and its `n` engine requests.
pub type GroupRequests = (Vec<Vec<u32>>, Vec<Vec<Request>>);

/// Every group's prompt ids and its `n` engine requests, one seed each.
pub fn group_requests(
    tokenizer: &Tokenizer,
    groups: &[PromptGroup],
    sampling: &Sampling,
    stop_token_ids: &[u32],
    seed: u64,
) -> Result<GroupRequests> {
    let mut prompts = Vec::with_capacity(groups.len());
    let mut requests = Vec::with_capacity(groups.len());
    for (g, group) in groups.iter().enumerate() {
        let ids = prompt_ids(tokenizer, group)?;
        requests.push(
            (0..group.n)
                .map(|j| request(&ids, sampling, stop_token_ids, seed, g, j))
                .collect(),
        );
        prompts.push(ids);
    }
    Ok((prompts, requests))
}

/// The engine request for sample `sample` of group `group`, with its own reproducible seed: the
/// same (seed, group, sample) draws the same tokens on any engine that honours seeds.
pub fn request(
    prompt: &[u32],
    sampling: &Sampling,
    stop_token_ids: &[u32],
    seed: u64,
    group: usize,
    sample: usize,
) -> Request {
    Request {
        prompt: prompt.to_vec(),
        params: SamplingParams {
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            top_k: sampling.top_k.max(0) as usize,
            min_p: sampling.min_p,
            max_tokens: sampling.max_generate_length,
            seed: Some(request_seed(seed, group, sample)),
            stop_token_ids: stop_token_ids.to_vec(),
            stop: sampling.stop.clone(),
        },
    }
}

/// A distinct, reproducible seed per (call, group, sample).
fn request_seed(seed: u64, group: usize, sample: usize) -> u64 {
    // The group enters by addition, so a call on groups `first..` with `shard_seed(seed, first)`
    // draws what the whole call draws for them.
    let mut x = seed.wrapping_add((group as u64) << 32) ^ (sample as u64);
    // splitmix64 finaliser: nearby inputs give unrelated seeds.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The seed that makes a call on the groups from `first_group` on draw the samples the call on
/// all groups (with `seed`) draws for them.
pub fn shard_seed(seed: u64, first_group: usize) -> u64 {
    seed.wrapping_add((first_group as u64) << 32)
}

/// Rows of a generator output from the completions of every group (in group order, `n` each):
/// decoded text, the environment's reward, full loss masks, stop reasons, engine log-probs.
pub fn score(
    groups: &[PromptGroup],
    prompt_ids: &[Vec<u32>],
    completions: Vec<Completion>,
    tokenizer: &Tokenizer,
    envs: &EnvRegistry,
) -> Result<GeneratorOutput> {
    let mut out = GeneratorOutput::default();
    for (group, ids) in groups.iter().zip(prompt_ids) {
        for _ in 0..group.n {
            out.uids.push(group.uid.clone());
            out.rows.push(group.row.clone());
            out.prompt_token_ids.push(ids.clone());
        }
    }
    if completions.len() != out.uids.len() {
        anyhow::bail!(
            "{} completions for {} requested samples",
            completions.len(),
            out.uids.len()
        );
    }
    for (k, c) in completions.into_iter().enumerate() {
        let text = tokenizer.decode(&c.token_ids, true)?;
        let reward = envs
            .reward(&text, &out.rows[k])
            .with_context(|| format!("scoring the response to prompt {}", out.uids[k]))?;
        out.loss_masks.push(vec![1.0; c.token_ids.len()]);
        out.stop_reasons.push(match c.finish_reason {
            FinishReason::Stop => StopReason::Stop,
            FinishReason::Length => StopReason::Length,
        });
        out.rollout_logprobs.push(c.logprobs);
        out.response_ids.push(c.token_ids);
        out.responses.push(text);
        out.rewards.push(reward);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_reward_on_non_stop_zeroes_only_truncated_rows() {
        let mut out = GeneratorOutput {
            rewards: vec![1.0, 1.0, -0.5, 0.3],
            stop_reasons: vec![
                StopReason::Stop,
                StopReason::Length,
                StopReason::Length,
                StopReason::Stop,
            ],
            ..Default::default()
        };
        out.zero_rewards_not_stopped();
        assert_eq!(out.rewards, vec![1.0, 0.0, 0.0, 0.3]);
    }
}
