//! `rlvr serve`: the embedded engine behind HTTP, speaking the subsets of vLLM's OpenAI-compatible
//! API and SGLang's native API that RL rollouts use (token-id prompts, sampled-token log-probs,
//! finish reasons, a health check, a model list, weight reload from disk). Concurrent requests are
//! decoded together in one engine batch.
//!
//! Hostile clients are bounded: a Bearer key on every route but `/health` (`--api-key`), body,
//! prompt and `n` limits checked before anything is allocated for them, header and body read
//! timeouts and a connection cap (hyper on tokio, so a slow client holds a task, not a thread).

mod batcher;
mod http;
mod routes;

use anyhow::{bail, Context, Result};
use batcher::{Batcher, Loaded};
use rlvr_model::engine::{EngineConfig, LogprobsMode};
use rlvr_model::{load_pretrained, Model};
use routes::ServeState;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// The environment variable `--api-key` falls back to (vLLM's server reads `VLLM_API_KEY`).
pub const API_KEY_ENV: &str = "RLVR_API_KEY";

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A Hugging Face model directory or a .gguf file.
    pub model: PathBuf,
    /// `host:port`; port 0 picks a free one.
    pub bind: String,
    /// The model name clients send; defaults to `model` as given (as vLLM does).
    pub served_model_name: Option<String>,
    /// Sequences decoded at once.
    pub max_num_seqs: usize,
    /// Longest prompt + completion; defaults to the model's `max_position_embeddings`.
    pub max_model_len: Option<usize>,
    pub logprobs_mode: LogprobsMode,
    /// Storage of the matrix weights while decoding (f32 or bf16).
    pub weights: candle_core::DType,
    pub device: candle_core::Device,
    /// Clients must send `Authorization: Bearer <key>` on every route but `/health`.
    pub api_key: Option<String>,
    /// Bind beyond loopback without an API key (refused otherwise).
    pub allow_unauthenticated: bool,
    pub limits: Limits,
}

/// Bounds on what one client can make the server hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body; larger ones get 413 before they are read.
    pub max_body_bytes: usize,
    /// Most sequences one request may ask for (prompts × `n`).
    pub max_seqs_per_request: usize,
    /// Open connections; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Time to send the request head, and separately the body.
    pub read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 32 << 20,
            max_seqs_per_request: 4096,
            max_connections: 1024,
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// A server that is accepting connections.
pub struct Server {
    listener: TcpListener,
    state: Arc<ServeState>,
    api_key: Option<String>,
    limits: Limits,
}

impl Server {
    /// Loads the model and binds the port.
    pub fn start(opts: &ServeOptions) -> Result<Server> {
        let api_key = opts.api_key.clone().filter(|k| !k.is_empty());
        check_exposure(&opts.bind, api_key.is_some(), opts.allow_unauthenticated)?;
        let device = &opts.device;
        let pre = load_pretrained(&opts.model, device)?;
        let model = Model::from_tensors(&pre.config, &pre.tensors, device)?;
        let eos_ids = crate::generator::stop_token_ids(&pre);
        let tokenizer = Arc::new(pre.tokenizer);
        let name = opts
            .served_model_name
            .clone()
            .unwrap_or_else(|| opts.model.display().to_string());
        let max_model_len = opts
            .max_model_len
            .unwrap_or(pre.config.max_position_embeddings)
            .min(pre.config.max_position_embeddings);
        let vocab_size = pre.config.vocab_size;
        let max_token_bytes = tokenizer.max_token_bytes();
        let batcher = Batcher::start(
            model,
            tokenizer.clone(),
            EngineConfig {
                max_batch: opts.max_num_seqs.max(1),
                weights: opts.weights,
                logprobs_mode: opts.logprobs_mode,
                progress: false,
            },
            Loaded {
                path: opts.model.clone(),
                weight_version: "0".into(),
                max_model_len,
            },
            Duration::from_millis(5),
        )?;
        let listener = TcpListener::bind(&opts.bind)
            .with_context(|| format!("cannot listen on {}", opts.bind))?;
        let state = ServeState {
            batcher,
            tokenizer,
            model_name: name,
            max_model_len,
            vocab_size,
            max_token_bytes,
            max_seqs_per_request: opts.limits.max_seqs_per_request.max(1),
            eos_ids,
            started: routes::now(),
            next_id: AtomicU64::new(0),
        };
        Ok(Server {
            listener,
            state: Arc::new(state),
            api_key,
            limits: opts.limits.clone(),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub fn model_name(&self) -> &str {
        &self.state.model_name
    }

    /// Answers requests until the process ends.
    pub fn run(self) -> Result<()> {
        http::serve(self.listener, self.state, self.api_key, self.limits)
    }

    /// Answers requests on a background thread (tests).
    pub fn spawn(self) -> SocketAddr {
        let addr = self.local_addr().expect("bound to an IP socket");
        std::thread::spawn(move || {
            if let Err(e) = self.run() {
                tracing::error!("rlvr serve stopped: {e:#}");
            }
        });
        addr
    }
}

/// Anyone who reaches the port can replace the weights and read what the model writes, so a
/// server reachable beyond this machine needs a key unless the user says otherwise.
fn check_exposure(bind: &str, has_key: bool, allow_unauthenticated: bool) -> Result<()> {
    if has_key || allow_unauthenticated {
        return Ok(());
    }
    let addrs: Vec<SocketAddr> = bind
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the bind address {bind}"))?
        .collect();
    if let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "refusing to serve on {open} (beyond loopback) without an API key: set --api-key or \
             {API_KEY_ENV}, or pass --allow-unauthenticated if every client that can reach the \
             port may replace the served weights"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_beyond_loopback_needs_a_key_or_an_explicit_opt_out() {
        assert!(check_exposure("127.0.0.1:0", false, false).is_ok());
        assert!(check_exposure("[::1]:0", false, false).is_ok());
        let err = check_exposure("0.0.0.0:0", false, false).unwrap_err();
        assert!(format!("{err:#}").contains("--api-key"), "{err:#}");
        assert!(check_exposure("0.0.0.0:0", true, false).is_ok());
        assert!(check_exposure("0.0.0.0:0", false, true).is_ok());
    }
}
