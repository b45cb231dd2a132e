//! `rlvr serve`: the embedded engine behind HTTP, speaking the subsets of vLLM's OpenAI-compatible
//! API and SGLang's native API that RL rollouts use (token-id prompts, sampled-token log-probs,
//! finish reasons, a health check, a model list, weight reload from disk). Concurrent requests are
//! decoded together in one engine batch.

mod batcher;
mod routes;

use anyhow::{Context, Result};
use batcher::{Batcher, Loaded};
use rlvr_model::engine::{EngineConfig, LogprobsMode};
use rlvr_model::{load_pretrained, Model};
use routes::ServeState;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

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
    /// HTTP worker threads (each holds one connection while its request is decoded).
    pub http_threads: usize,
}

/// A server that is accepting connections.
pub struct Server {
    http: Arc<tiny_http::Server>,
    state: Arc<ServeState>,
    threads: usize,
}

impl Server {
    /// Loads the model and binds the port.
    pub fn start(opts: &ServeOptions) -> Result<Server> {
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
            },
            Duration::from_millis(5),
        );
        let http = tiny_http::Server::http(&opts.bind)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", opts.bind))?;
        let state = ServeState {
            batcher,
            tokenizer,
            model_name: name,
            max_model_len,
            vocab_size,
            eos_ids,
            started: routes::now(),
            next_id: AtomicU64::new(0),
        };
        Ok(Server {
            http: Arc::new(http),
            state: Arc::new(state),
            threads: opts.http_threads.max(1),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.http
            .server_addr()
            .to_ip()
            .context("the server is not on an IP socket")
    }

    pub fn model_name(&self) -> &str {
        &self.state.model_name
    }

    /// Answers requests until the process ends.
    pub fn run(self) {
        let workers: Vec<_> = (0..self.threads)
            .map(|i| {
                let http = self.http.clone();
                let state = self.state.clone();
                std::thread::Builder::new()
                    .name(format!("rlvr-http-{i}"))
                    .spawn(move || {
                        for req in http.incoming_requests() {
                            routes::handle(&state, req);
                        }
                    })
                    .expect("spawning an HTTP worker")
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
    }

    /// Answers requests on background threads (tests).
    pub fn spawn(self) -> SocketAddr {
        let addr = self.local_addr().expect("bound to an IP socket");
        std::thread::spawn(move || self.run());
        addr
    }
}
