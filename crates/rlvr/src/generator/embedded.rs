//! The embedded generator: the chat template, the in-process engine on the trainer's own weights
//! (so weight sync is free), and the environment's reward for each response.

use super::{Generator, GeneratorOutput, PromptGroup, Sampling, StopReason};
use crate::env::EnvRegistry;
use anyhow::{Context, Result};
use rlvr_model::engine::{Engine, EngineConfig, FinishReason, Request, SamplingParams};
use rlvr_model::{Model, Tokenizer};
use std::sync::Arc;

pub struct EmbeddedGenerator {
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    envs: EnvRegistry,
    engine: EngineConfig,
    stop_token_ids: Vec<u32>,
}

impl EmbeddedGenerator {
    /// `max_num_seqs` sequences decode at once (`generator.max_num_seqs`).
    pub fn new(
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        envs: EnvRegistry,
        max_num_seqs: usize,
    ) -> Self {
        let mut stop_token_ids: Vec<u32> = model.config().eos_token_ids();
        if let Some(eos) = tokenizer.eos_token_id() {
            if !stop_token_ids.contains(&eos) {
                stop_token_ids.push(eos);
            }
        }
        Self {
            model,
            tokenizer,
            envs,
            engine: EngineConfig {
                max_batch: max_num_seqs.max(1),
                progress: true,
                ..Default::default()
            },
            stop_token_ids,
        }
    }

    /// Token ids of a row's prompt after the chat template (with the generation prompt).
    pub fn prompt_ids(&self, group: &PromptGroup) -> Result<Vec<u32>> {
        self.tokenizer
            .apply_chat_template_ids(&group.row.prompt, true)
            .with_context(|| format!("applying the chat template to prompt {}", group.uid))
    }
}

impl Generator for EmbeddedGenerator {
    fn generate(
        &mut self,
        groups: &[PromptGroup],
        sampling: &Sampling,
        seed: u64,
    ) -> Result<GeneratorOutput> {
        let mut out = GeneratorOutput::default();
        let mut requests = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let ids = self.prompt_ids(group)?;
            for j in 0..group.n {
                requests.push(Request {
                    prompt: ids.clone(),
                    params: SamplingParams {
                        temperature: sampling.temperature,
                        top_p: sampling.top_p,
                        top_k: sampling.top_k.max(0) as usize,
                        min_p: sampling.min_p,
                        max_tokens: sampling.max_generate_length,
                        seed: Some(request_seed(seed, g, j)),
                        stop_token_ids: self.stop_token_ids.clone(),
                        stop: sampling.stop.clone(),
                    },
                });
                out.uids.push(group.uid.clone());
                out.rows.push(group.row.clone());
                out.prompt_token_ids.push(ids.clone());
            }
        }
        let tok = self.tokenizer.clone();
        let results = Engine::new(&self.model, self.engine.clone())
            .with_detokenizer(move |ids: &[u32]| tok.decode(ids, true).unwrap_or_default())
            .generate(&requests)?;
        for (k, r) in results.into_iter().enumerate() {
            let text = self.tokenizer.decode(&r.token_ids, true)?;
            let reward = self
                .envs
                .reward(&text, &out.rows[k])
                .with_context(|| format!("scoring the response to prompt {}", out.uids[k]))?;
            out.loss_masks.push(vec![1.0; r.token_ids.len()]);
            out.stop_reasons.push(match r.finish_reason {
                FinishReason::Stop => StopReason::Stop,
                FinishReason::Length => StopReason::Length,
            });
            out.rollout_logprobs.push(r.logprobs);
            out.response_ids.push(r.token_ids);
            out.responses.push(text);
            out.rewards.push(reward);
        }
        Ok(out)
    }
}

/// A distinct, reproducible seed per (call, group, sample).
fn request_seed(seed: u64, group: usize, sample: usize) -> u64 {
    let mut x = seed ^ ((group as u64) << 32) ^ (sample as u64);
    // splitmix64 finaliser: nearby inputs give unrelated seeds.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
