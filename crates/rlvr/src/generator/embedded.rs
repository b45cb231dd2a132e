//! The embedded generator: the chat template, the in-process engine on the trainer's own weights
//! (so weight sync is free), and the environment's reward for each response.

use super::{score, Generator, GeneratorOutput, PromptGroup, Sampling};
use crate::env::EnvRegistry;
use anyhow::Result;
use rlvr_model::engine::{Engine, EngineConfig, LogprobsMode};
use rlvr_model::{Model, Tokenizer};
use std::sync::Arc;

pub struct EmbeddedGenerator {
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    envs: EnvRegistry,
    engine: EngineConfig,
    stop_token_ids: Vec<u32>,
    /// The decoding copy in `generator.model_dtype` (when not f32), rebuilt at every weight sync
    /// and shared by the generation batches in between (dynamic sampling makes several).
    decode: Option<Model>,
}

impl EmbeddedGenerator {
    /// `max_num_seqs` sequences decode at once (`generator.max_num_seqs`).
    pub fn new(
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        envs: EnvRegistry,
        max_num_seqs: usize,
    ) -> Self {
        let stop_token_ids = super::eos_ids(model.config(), &tokenizer);
        Self {
            model,
            tokenizer,
            envs,
            engine: EngineConfig {
                max_batch: max_num_seqs.max(1),
                weights: candle_core::DType::F32,
                // The log-probs of the distribution sampled from (temperature applied), so
                // `policy/rollout_train_logprobs_abs_diff_*` compares like with like.
                logprobs_mode: LogprobsMode::Processed,
                progress: true,
            },
            stop_token_ids,
            decode: None,
        }
    }

    /// Stop on `ids` (by default the model config's and tokenizer's EOS; a checkpoint's
    /// `generation_config.json` may add more, see [`super::stop_token_ids`]).
    pub fn with_stop_ids(mut self, ids: Vec<u32>) -> Self {
        self.stop_token_ids = ids;
        self
    }

    /// Token ids of a row's prompt after the chat template (with the generation prompt).
    /// Decode on weights stored in `dtype` (`generator.model_dtype`; bf16 halves the memory
    /// traffic per token).
    pub fn with_weights(mut self, dtype: candle_core::DType) -> Self {
        self.engine.weights = dtype;
        self.decode = None;
        self
    }

    /// Whether generation draws a progress bar (on by default; off on data-parallel ranks but
    /// the first).
    pub fn with_progress(mut self, on: bool) -> Self {
        self.engine.progress = on;
        self
    }

    /// The decoding copy of the trainer's weights (made here if no weight sync made it yet).
    fn decoding_model(&mut self) -> Result<&Model> {
        if self.decode.is_none() {
            self.decode = Some(self.model.decode_copy(self.engine.weights)?);
        }
        Ok(self.decode.as_ref().expect("just made"))
    }

    pub fn prompt_ids(&self, group: &PromptGroup) -> Result<Vec<u32>> {
        super::prompt_ids(&self.tokenizer, group)
    }
}

impl Generator for EmbeddedGenerator {
    fn generate(
        &mut self,
        groups: &[PromptGroup],
        sampling: &Sampling,
        seed: u64,
    ) -> Result<GeneratorOutput> {
        let (prompt_ids, per_group) = super::group_requests(
            &self.tokenizer,
            groups,
            sampling,
            &self.stop_token_ids,
            seed,
        )?;
        let requests: Vec<_> = per_group.into_iter().flatten().collect();
        let tok = self.tokenizer.clone();
        // The engine decodes on the copy as it is.
        let cfg = self.engine.clone();
        let completions = Engine::new(self.decoding_model()?, cfg)
            .with_detokenizer(move |ids: &[u32]| tok.decode(ids, true).unwrap_or_default())
            .generate(&requests)?;
        score(
            groups,
            &prompt_ids,
            completions,
            &self.tokenizer,
            &self.envs,
        )
    }

    /// The engine shares the trainer's weights; a decoding copy in another dtype is rebuilt
    /// from them here, as an inference server reloads its weights.
    fn sync_weights(&mut self, _policy: &Model, _global_step: usize) -> Result<()> {
        self.decode = None;
        self.decoding_model()?;
        Ok(())
    }
}
