//! Generation on remote inference servers (`generator.run_engines_locally=false`), as SkyRL's
//! remote engines: vLLM through its OpenAI-compatible completions endpoint, SGLang through its
//! native `/generate`, both with token-id prompts so responses come back as the exact token ids
//! sampled. After each training step the policy is written as an HF checkpoint under
//! `generator.weight_sync_dir` and every server reloads it; generation waits until each server
//! reports the new weight version.

mod dispatch;
pub mod engine;

use super::{score, Generator, GeneratorOutput, PromptGroup, Sampling};
use crate::env::EnvRegistry;
use crate::protocol::Backend;
use anyhow::{bail, Context, Result};
use dispatch::GroupJob;
use engine::{CallError, RemoteEngine, Retry};
use rlvr_model::{Model, Tokenizer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RemoteSettings {
    /// `host:port` of each server (`generator.remote_inference_engine_urls`).
    pub urls: Vec<String>,
    pub backend: Backend,
    /// The model name the servers serve (`generator.served_model_name`, else
    /// `generator.model_name`).
    pub model: String,
    /// The HF checkpoint directory synced weights are written to (replaced atomically); the
    /// servers must be able to read it, and vLLM servers must have been started on it.
    pub weight_sync_dir: PathBuf,
    pub request_timeout: Duration,
    pub retry: Retry,
    /// Requests in flight per engine (`generator.max_num_seqs`).
    pub max_in_flight: usize,
    /// Sent as `Authorization: Bearer <key>` (`generator.remote_api_key`, else `RLVR_API_KEY`).
    pub api_key: Option<String>,
}

pub struct RemoteGenerator {
    engines: Vec<RemoteEngine>,
    /// Engines that answered last time; a dead one is tried again at the next weight sync.
    alive: Vec<bool>,
    tokenizer: Arc<Tokenizer>,
    envs: EnvRegistry,
    stop_token_ids: Vec<u32>,
    settings: RemoteSettings,
}

impl RemoteGenerator {
    /// Connects to every server and checks that each serves `settings.model`.
    pub fn connect(
        settings: RemoteSettings,
        tokenizer: Arc<Tokenizer>,
        envs: EnvRegistry,
        stop_token_ids: Vec<u32>,
    ) -> Result<Self> {
        if settings.urls.is_empty() {
            bail!("generator.remote_inference_engine_urls is empty: name at least one server (host:port)");
        }
        let engines: Vec<RemoteEngine> = settings
            .urls
            .iter()
            .map(|u| {
                RemoteEngine::new(
                    u,
                    settings.backend,
                    &settings.model,
                    settings.request_timeout,
                    settings.retry.clone(),
                    settings.api_key.as_deref(),
                )
            })
            .collect();
        for e in &engines {
            e.check_model().with_context(|| {
                format!(
                    "checking inference engine {} (generator.backend={})",
                    e.url,
                    settings.backend.as_str()
                )
            })?;
        }
        tracing::info!(
            "generating on {} remote {} engine(s): {}",
            engines.len(),
            settings.backend.as_str(),
            settings.urls.join(", ")
        );
        Ok(Self {
            alive: vec![true; engines.len()],
            engines,
            tokenizer,
            envs,
            stop_token_ids,
            settings,
        })
    }

    /// Engines currently in use.
    pub fn alive(&self) -> Vec<bool> {
        self.alive.clone()
    }
}

impl Generator for RemoteGenerator {
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
        let jobs: Vec<GroupJob> = per_group
            .into_iter()
            .map(|requests| GroupJob { requests })
            .collect();
        let n_max = groups.iter().map(|g| g.n).max().unwrap_or(1).max(1);
        let workers = self.settings.max_in_flight.max(1).div_ceil(n_max);
        let completions = dispatch::run(&self.engines, &mut self.alive, &jobs, workers)?;
        score(
            groups,
            &prompt_ids,
            completions.into_iter().flatten().collect(),
            &self.tokenizer,
            &self.envs,
        )
    }

    fn sync_weights(&mut self, policy: &Model, global_step: usize) -> Result<()> {
        let version = global_step.to_string();
        // One directory, replaced atomically each time: vLLM reloads the directory it was started
        // on, so the path must not change.
        let dir = self.settings.weight_sync_dir.clone();
        rlvr_model::save_hf(
            &dir,
            policy.config(),
            &policy.tensors(),
            &self.tokenizer,
            None,
        )
        .with_context(|| format!("writing the weights to sync to {}", dir.display()))?;
        // Every engine reloads at once; each must then report the new version.
        let results: Vec<Result<(), CallError>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .engines
                .iter()
                .zip(&self.alive)
                .map(|(e, &alive)| {
                    let (dir, version) = (&dir, &version);
                    s.spawn(move || {
                        // A server that went down gets one quick look, not a round of retries.
                        if !alive && !e.is_up() {
                            return Err(CallError::Down(format!("{} is still down", e.url)));
                        }
                        e.update_weights(dir, version)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("sync thread panicked"))
                .collect()
        });
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(()) => {
                    if !self.alive[i] {
                        tracing::info!("inference engine {} is back", self.engines[i].url);
                    }
                    self.alive[i] = true;
                }
                Err(CallError::Down(msg)) => {
                    if self.alive[i] {
                        tracing::warn!("inference engine {} is down: {msg}", self.engines[i].url);
                    }
                    self.alive[i] = false;
                }
                Err(CallError::Rejected(msg)) => bail!("weight sync failed: {msg}"),
            }
        }
        if !self.alive.iter().any(|&a| a) {
            bail!(
                "weight sync failed: no inference engine is reachable ({})",
                self.settings.urls.join(", ")
            );
        }
        tracing::info!(
            "weights synced to {} engine(s) as version {version}",
            self.alive.iter().filter(|&&a| a).count()
        );
        Ok(())
    }
}
