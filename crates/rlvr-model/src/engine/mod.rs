//! The embedded generation engine: many sequences decoded together over one preallocated KV
//! cache, with continuous batching (a finished sequence's slot is refilled from the waiting
//! requests at once; with none left, the batch is compacted so no compute goes to finished rows).
//!
//! It reads the model's `Var`s directly, so weights updated by the optimizer are used by the next
//! `generate` call with no synchronisation step.

pub mod sampling;

use crate::kernels::team;
use crate::Model;
use anyhow::{bail, Context};
use candle_core::DType;
use rand::{rngs::StdRng, SeedableRng};
use sampling::sample;
pub use sampling::{LogprobsMode, SamplingParams};
use std::collections::VecDeque;
use std::sync::Arc;

/// One prompt (token ids, chat template already applied) and how to continue it.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token id or stop string was produced.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

impl FinishReason {
    /// vLLM's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Response token ids, the stop token included when one ended it.
    pub token_ids: Vec<u32>,
    /// Log-prob of each response token (see [`LogprobsMode`]).
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
    /// The stop string that matched, if a stop string ended it.
    pub stop_string: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences decoded at once (KV cache slots).
    pub max_batch: usize,
    /// Storage of the matrix weights while decoding, `F32` or `BF16` (half the memory traffic
    /// per token; the sampled distribution then differs slightly from the f32 model's). Each
    /// `generate` call decodes on a [`Model::decode_copy`] in this dtype, made at its start,
    /// unless it is given such a copy: callers that decode often make the copy once per weight
    /// version.
    pub weights: DType,
    pub logprobs_mode: LogprobsMode,
    /// Draw a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch: 32,
            weights: DType::F32,
            logprobs_mode: LogprobsMode::Raw,
            progress: false,
        }
    }
}

/// Turns response token ids into text, for stop strings. The tokenizer stays outside this crate's
/// model code, so any decoder fits.
pub type Detokenize<'a> = Box<dyn Fn(&[u32]) -> String + Send + Sync + 'a>;

pub struct Engine<'a> {
    model: &'a Model,
    cfg: EngineConfig,
    detokenize: Option<Detokenize<'a>>,
}

/// A sequence being decoded.
struct Running {
    request: usize,
    rng: StdRng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    /// Logits after the prompt, kept so another request with the same prompt (GRPO's samples of
    /// one group) can start from this slot's cached prompt instead of prefilling it again.
    prompt_logits: Arc<Vec<f32>>,
}

impl<'a> Engine<'a> {
    pub fn new(model: &'a Model, cfg: EngineConfig) -> Self {
        Self {
            model,
            cfg,
            detokenize: None,
        }
    }

    /// Needed when any request has stop strings.
    pub fn with_detokenizer(mut self, f: impl Fn(&[u32]) -> String + Send + Sync + 'a) -> Self {
        self.detokenize = Some(Box::new(f));
        self
    }

    /// Generates a completion for every request; outputs are in request order.
    pub fn generate(&self, requests: &[Request]) -> anyhow::Result<Vec<Completion>> {
        // The loop runs on a worker of the thread pool: every kernel's parallel section then
        // forks from a worker instead of being injected from outside and waited on, which cost
        // two thread wake-ups per kernel call and a third of the time of batch-1 decoding.
        rayon::scope(|_| self.generate_in_pool(requests))
    }

    fn generate_in_pool(&self, requests: &[Request]) -> anyhow::Result<Vec<Completion>> {
        let copy;
        let model: &Model = match self.cfg.weights {
            _ if self.model.decoding_weights().is_some() => self.model,
            DType::BF16
                if self.model.device().is_cpu() && !crate::model::bf16_decode_supported() =>
            {
                bail!("bf16 decoding needs a CPU with AVX-512F; use f32 weights")
            }
            weights => {
                copy = self.model.decode_copy(weights)?;
                &copy
            }
        };
        let max_pos = model.config().max_position_embeddings;
        let mut capacity = 1;
        for (i, r) in requests.iter().enumerate() {
            r.params
                .validate()
                .with_context(|| format!("request {i}"))?;
            if r.prompt.is_empty() {
                bail!("request {i} has an empty prompt");
            }
            if !r.params.stop.is_empty() && self.detokenize.is_none() {
                bail!("request {i} has stop strings but the engine has no detokenizer");
            }
            let need = r.prompt.len().saturating_add(r.params.max_tokens);
            if need > max_pos {
                bail!("request {i}: prompt ({}) + max_tokens ({}) exceeds the model's {max_pos} positions", r.prompt.len(), r.params.max_tokens);
            }
            capacity = capacity.max(need);
        }
        let mut outputs: Vec<Option<Completion>> = vec![None; requests.len()];
        let mut waiting: VecDeque<usize> = VecDeque::new();
        for (i, r) in requests.iter().enumerate() {
            if r.params.max_tokens == 0 {
                outputs[i] = Some(Completion {
                    token_ids: vec![],
                    logprobs: vec![],
                    finish_reason: FinishReason::Length,
                    stop_string: None,
                });
            } else {
                waiting.push_back(i);
            }
        }
        let slots = self.cfg.max_batch.max(1).min(waiting.len());
        if slots == 0 {
            return Ok(outputs.into_iter().map(|o| o.expect("filled")).collect());
        }
        let bar = self.progress_bar(waiting.len());
        let mut cache = model.new_cache(slots, capacity)?;
        // Slot i of the cache holds running[i]; finished rows are swapped out so slots stay a prefix.
        let mut running: Vec<Running> = Vec::with_capacity(slots);
        let vocab = model.config().vocab_size;
        loop {
            while running.len() < slots {
                let Some(i) = waiting.pop_front() else { break };
                let slot = running.len();
                cache.clear(slot);
                let prompt = &requests[i].prompt;
                // The KV of a prompt does not depend on what follows it: copy it from a running
                // sequence with the same prompt (bit-identical to prefilling it again).
                let shared = running
                    .iter()
                    .position(|s| requests[s.request].prompt == *prompt);
                let row = match shared {
                    Some(src) => {
                        cache.copy_prefix(src, slot, prompt.len())?;
                        running[src].prompt_logits.clone()
                    }
                    None => {
                        let logits = model.forward_cached(&mut cache, slot, prompt, 1)?;
                        Arc::new(logits.flatten_all()?.to_vec1::<f32>()?)
                    }
                };
                let seed = requests[i].params.seed.unwrap_or_else(rand::random);
                let mut seq = Running {
                    request: i,
                    rng: StdRng::seed_from_u64(seed),
                    tokens: Vec::new(),
                    logprobs: Vec::new(),
                    prompt_logits: row.clone(),
                };
                if let Some(done) = self.step(&mut seq, &row, &requests[i].params) {
                    outputs[i] = Some(done);
                    cache.clear(slot);
                    bar.inc(1);
                } else {
                    running.push(seq);
                }
            }
            if running.is_empty() {
                break;
            }
            let last: Vec<u32> = running
                .iter()
                .map(|s| *s.tokens.last().expect("sampled"))
                .collect();
            let mut decode_step = || -> anyhow::Result<Vec<Option<Completion>>> {
                let logits = model.forward_cached(&mut cache, 0, &last, running.len())?;
                // Rows sample in parallel: each has its own generator, so results do not
                // depend on the order.
                let mut rows: Vec<(&mut Running, Option<Completion>)> =
                    running.iter_mut().map(|s| (s, None)).collect();
                let mut sample_rows = |flat: &[f32]| {
                    team::for_each_chunk_mut(&mut rows, 1, |i, r| {
                        let (seq, done) = &mut r[0];
                        let params = &requests[seq.request].params;
                        *done = self.step(seq, &flat[i * vocab..(i + 1) * vocab], params);
                    })
                };
                if crate::kernels::applies(&logits) {
                    crate::kernels::with_slice(&logits, sample_rows)?;
                } else {
                    sample_rows(&logits.flatten_all()?.to_vec1::<f32>()?);
                }
                Ok(rows.into_iter().map(|(_, d)| d).collect())
            };
            // On the CPU a decoding step is ~150 short parallel loops: a spinning team runs them
            // (prefill above stays on the pool, where gemm's own parallelism works). On a GPU
            // the CPU only launches kernels and samples, and spinning threads would only burn it.
            let done = if model.device().is_cpu() {
                team::with_team(decode_step)?
            } else {
                decode_step()?
            };
            let mut finished = Vec::new();
            for (slot, d) in done.into_iter().enumerate() {
                if let Some(d) = d {
                    outputs[running[slot].request] = Some(d);
                    finished.push(slot);
                }
            }
            // Highest first, so the row swapped in from the end is never one still to remove.
            for &slot in finished.iter().rev() {
                let last = running.len() - 1;
                cache.move_slot(last, slot)?;
                running.swap_remove(slot);
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        Ok(outputs
            .into_iter()
            .map(|o| o.expect("every request finishes"))
            .collect())
    }

    /// Samples the next token of `seq` from `logits`; returns the completion if it is finished.
    fn step(&self, seq: &mut Running, logits: &[f32], p: &SamplingParams) -> Option<Completion> {
        let (tok, lp) = sample(logits, p, self.cfg.logprobs_mode, &mut seq.rng);
        seq.tokens.push(tok);
        seq.logprobs.push(lp);
        let mut reason = None;
        let mut stop_string = None;
        if p.stop_token_ids.contains(&tok) {
            reason = Some(FinishReason::Stop);
        } else if let (false, Some(detok)) = (p.stop.is_empty(), &self.detokenize) {
            let text = detok(&seq.tokens);
            if let Some(s) = p.stop.iter().find(|s| text.contains(s.as_str())) {
                reason = Some(FinishReason::Stop);
                stop_string = Some(s.clone());
            }
        }
        if reason.is_none() && seq.tokens.len() >= p.max_tokens {
            reason = Some(FinishReason::Length);
        }
        reason.map(|finish_reason| Completion {
            token_ids: std::mem::take(&mut seq.tokens),
            logprobs: std::mem::take(&mut seq.logprobs),
            finish_reason,
            stop_string,
        })
    }

    fn progress_bar(&self, n: usize) -> indicatif::ProgressBar {
        if !self.cfg.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(n as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "generate {bar:30} {pos}/{len} sequences [{elapsed_precise}<{eta_precise}]",
            )
            .expect("valid template"),
        );
        bar
    }
}

#[cfg(test)]
mod tests;
