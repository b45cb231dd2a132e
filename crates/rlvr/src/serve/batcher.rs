//! The engine thread of `rlvr serve`: it owns the model, takes every generation request that has
//! arrived (from any HTTP connection) and decodes them together in one engine batch, and applies
//! weight reloads between batches so a batch never mixes two weight versions. A panic in a batch
//! or a reload fails that job only; a reload that fails leaves the old weights serving.

use anyhow::{bail, Context, Result};
use rlvr_model::engine::{Completion, Engine, EngineConfig, Request};
use rlvr_model::{load_pretrained, read_model_config, Model, ModelConfig, Tokenizer};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub type Reply<T> = Sender<Result<T, String>>;

pub enum Job {
    Generate {
        requests: Vec<Request>,
        reply: Reply<Vec<Completion>>,
    },
    Reload {
        path: PathBuf,
        version: Option<String>,
        reply: Reply<String>,
    },
}

/// Shared, read-mostly facts about what is served.
#[derive(Debug)]
pub struct Loaded {
    /// Where the current weights came from.
    pub path: PathBuf,
    pub weight_version: String,
    /// Longest prompt + completion served: a reloaded model must have at least these positions.
    pub max_model_len: usize,
}

/// Sends jobs to the engine thread and waits for their answers.
#[derive(Clone)]
pub struct Batcher {
    tx: Sender<Job>,
    pub loaded: Arc<RwLock<Loaded>>,
    /// Engine batches run so far.
    batches: Arc<AtomicUsize>,
    /// Cleared when the engine thread ends, whatever ends it.
    alive: Arc<AtomicBool>,
}

/// Clears the flag when the engine thread ends, by return or by unwinding.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Batcher {
    /// Starts the engine thread on `model`. Requests that arrive within `gather` of the first one
    /// join its batch.
    pub fn start(
        model: Model,
        tokenizer: Arc<Tokenizer>,
        engine: EngineConfig,
        loaded: Loaded,
        gather: Duration,
    ) -> Result<Batcher> {
        let (tx, rx) = mpsc::channel();
        let loaded = Arc::new(RwLock::new(loaded));
        let batches = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        let (state, count, guard) = (loaded.clone(), batches.clone(), AliveGuard(alive.clone()));
        std::thread::Builder::new()
            .name("rlvr-engine".into())
            .spawn(move || {
                let _guard = guard;
                engine_loop(model, tokenizer, engine, rx, state, count, gather)
            })
            .context("spawning the engine thread")?;
        Ok(Batcher {
            tx,
            loaded,
            batches,
            alive,
        })
    }

    /// Whether the engine thread still takes jobs.
    pub fn healthy(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    pub fn generate(&self, requests: Vec<Request>) -> Result<Vec<Completion>, String> {
        let (reply, rx) = mpsc::channel();
        self.tx
            .send(Job::Generate { requests, reply })
            .map_err(|_| "the engine thread has stopped".to_string())?;
        rx.recv()
            .map_err(|_| "the engine thread has stopped".to_string())?
    }

    /// Loads the checkpoint at `path` and serves it from the next batch on, as weight version
    /// `version` (unchanged when `None`); returns the version served.
    pub fn reload(&self, path: PathBuf, version: Option<String>) -> Result<String, String> {
        let (reply, rx) = mpsc::channel();
        self.tx
            .send(Job::Reload {
                path,
                version,
                reply,
            })
            .map_err(|_| "the engine thread has stopped".to_string())?;
        rx.recv()
            .map_err(|_| "the engine thread has stopped".to_string())?
    }
}

impl Batcher {
    pub fn batches_run(&self) -> usize {
        self.batches.load(Ordering::SeqCst)
    }

    pub fn set_weight_version(&self, version: String) {
        tracing::info!("weight version {version}");
        write(&self.loaded).weight_version = version;
    }

    pub fn weight_version(&self) -> String {
        read(&self.loaded).weight_version.clone()
    }

    /// The checkpoint served now.
    pub fn path(&self) -> PathBuf {
        read(&self.loaded).path.clone()
    }
}

// The lock guards plain data that every writer leaves whole, so a poisoned lock is still usable.
fn read(l: &RwLock<Loaded>) -> std::sync::RwLockReadGuard<'_, Loaded> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write(l: &RwLock<Loaded>) -> std::sync::RwLockWriteGuard<'_, Loaded> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f`, turning a panic into an error message (the engine must outlive one bad job).
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        tracing::error!("{what} panicked: {why}");
        Err(format!("{what} failed inside the engine ({why})"))
    })
}

fn engine_loop(
    mut model: Model,
    tokenizer: Arc<Tokenizer>,
    engine: EngineConfig,
    rx: Receiver<Job>,
    loaded: Arc<RwLock<Loaded>>,
    batches: Arc<AtomicUsize>,
    gather: Duration,
) {
    let mut queue: VecDeque<Job> = VecDeque::new();
    // The decoding copy is made when weights load, not for every batch; the engine then decodes
    // on it as it is.
    let mut copy = decode_copy(&model, &engine);
    loop {
        if queue.is_empty() {
            match rx.recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => return,
            }
            if matches!(queue.front(), Some(Job::Generate { .. })) {
                std::thread::sleep(gather);
            }
        }
        queue.extend(rx.try_iter());
        match queue.pop_front().expect("non-empty") {
            Job::Reload {
                path,
                version,
                reply,
            } => {
                let max_model_len = read(&loaded).max_model_len;
                // The new model is built beside the served one and replaces it only whole.
                let result = guarded("reloading the weights", || {
                    let new = load(&model, &path, max_model_len).map_err(|e| format!("{e:#}"))?;
                    let new_copy = decode_copy(&new, &engine);
                    Ok((new, new_copy))
                });
                let result = result.map(|(new, new_copy)| {
                    model = new;
                    copy = new_copy;
                    let mut l = write(&loaded);
                    l.path = path.clone();
                    if let Some(v) = version {
                        l.weight_version = v;
                    }
                    tracing::info!(
                        "serving {} (weight version {})",
                        path.display(),
                        l.weight_version
                    );
                    l.weight_version.clone()
                });
                let _ = reply.send(result);
            }
            Job::Generate { requests, reply } => {
                // Every generation job up to the next reload joins this batch.
                let mut batch = vec![(requests, reply)];
                while let Some(Job::Generate { .. }) = queue.front() {
                    if let Some(Job::Generate { requests, reply }) = queue.pop_front() {
                        batch.push((requests, reply));
                    }
                }
                // Counted before the replies go out, so a client never sees its answer before the
                // batch that produced it is counted.
                batches.fetch_add(1, Ordering::SeqCst);
                run_batch(copy.as_ref().unwrap_or(&model), &tokenizer, &engine, batch);
            }
        }
    }
}

/// `model`'s decoding copy in `engine.weights`; `None` when it cannot be made (the engine then
/// tries per batch and reports the error to the clients).
fn decode_copy(model: &Model, engine: &EngineConfig) -> Option<Model> {
    match model.decode_copy(engine.weights) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("no {:?} decoding copy: {e:#}", engine.weights);
            None
        }
    }
}

fn run_batch(
    model: &Model,
    tokenizer: &Arc<Tokenizer>,
    engine: &EngineConfig,
    batch: Vec<(Vec<Request>, Reply<Vec<Completion>>)>,
) {
    let all: Vec<Request> = batch.iter().flat_map(|(r, _)| r.iter().cloned()).collect();
    let t = Instant::now();
    let result = generate(model, tokenizer, engine, &all);
    match result {
        Ok(completions) => {
            let tokens: usize = completions.iter().map(|c| c.token_ids.len()).sum();
            tracing::info!(
                "generated {} sequences ({} HTTP requests, {tokens} tokens) in {:.2}s",
                all.len(),
                batch.len(),
                t.elapsed().as_secs_f64()
            );
            // Hand each connection its own completions, in order.
            let mut rest = completions.into_iter();
            for (requests, reply) in batch {
                let mine: Vec<Completion> = rest.by_ref().take(requests.len()).collect();
                let _ = reply.send(Ok(mine));
            }
        }
        // One connection's bad request must not fail the others: each tries again alone.
        Err(_) if batch.len() > 1 => {
            for (requests, reply) in batch {
                let _ = reply.send(generate(model, tokenizer, engine, &requests));
            }
        }
        Err(e) => {
            for (_, reply) in batch {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

fn generate(
    model: &Model,
    tokenizer: &Arc<Tokenizer>,
    engine: &EngineConfig,
    requests: &[Request],
) -> Result<Vec<Completion>, String> {
    guarded("generation", || {
        let tok = tokenizer.clone();
        Engine::new(model, engine.clone())
            .with_detokenizer(move |ids: &[u32]| tok.decode(ids, true).unwrap_or_default())
            .generate(requests)
            .map_err(|e| format!("{e:#}"))
    })
}

/// The checkpoint at `path` as a model to serve in place of `served`. Its config is read and
/// checked against the served one before any weight is read.
fn load(served: &Model, path: &std::path::Path, max_model_len: usize) -> Result<Model> {
    let config = read_model_config(path).with_context(|| format!("loading {}", path.display()))?;
    check_fits(served.config(), &config, max_model_len)
        .with_context(|| format!("{} does not fit the served model", path.display()))?;
    let pre = load_pretrained(path, served.device())
        .with_context(|| format!("loading {}", path.display()))?;
    // Again on what was loaded: the directory may have been rewritten between the two reads.
    check_fits(served.config(), &pre.config, max_model_len)
        .with_context(|| format!("{} does not fit the served model", path.display()))?;
    Model::from_tensors(&pre.config, &pre.tensors, served.device())
}

fn check_fits(a: &ModelConfig, b: &ModelConfig, max_model_len: usize) -> Result<()> {
    if a.model_type != b.model_type {
        bail!(
            "model_type is {}, the served model is {}",
            b.model_type.escape_debug(),
            a.model_type
        );
    }
    if b.max_position_embeddings < max_model_len {
        bail!(
            "max_position_embeddings is {}, fewer than the {max_model_len} positions served",
            b.max_position_embeddings
        );
    }
    let fields = [
        ("vocab_size", a.vocab_size, b.vocab_size),
        ("hidden_size", a.hidden_size, b.hidden_size),
        (
            "num_hidden_layers",
            a.num_hidden_layers,
            b.num_hidden_layers,
        ),
        (
            "num_attention_heads",
            a.num_attention_heads,
            b.num_attention_heads,
        ),
        ("num_key_value_heads", a.num_kv_heads(), b.num_kv_heads()),
        (
            "intermediate_size",
            a.intermediate_size,
            b.intermediate_size,
        ),
        ("head_dim", a.head_dim(), b.head_dim()),
    ];
    for (name, served, new) in fields {
        if served != new {
            bail!("{name} is {new}, the served model has {served}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlvr_model::engine::SamplingParams;

    fn batcher() -> Batcher {
        let cfg = crate::toy::model_config();
        let tensors = crate::toy::random_tensors(&cfg, 1).unwrap();
        let model = Model::from_tensors(&cfg, &tensors, &candle_core::Device::Cpu).unwrap();
        Batcher::start(
            model,
            Arc::new(crate::toy::tokenizer().unwrap()),
            EngineConfig {
                max_batch: 64,
                ..Default::default()
            },
            Loaded {
                path: PathBuf::from("toy"),
                weight_version: "0".into(),
                max_model_len: cfg.max_position_embeddings,
            },
            // Generous, so a loaded CI machine still gathers all eight.
            Duration::from_millis(300),
        )
        .unwrap()
    }

    #[test]
    fn a_panicking_job_is_an_error_and_the_engine_goes_on() {
        let err = guarded("a job", || -> Result<(), String> { panic!("boom") }).unwrap_err();
        assert!(err.contains("boom"), "{err}");
        let b = batcher();
        // A request the engine refuses, beside a sound one: only the bad one fails.
        let mut bad = request(1);
        bad.params.max_tokens = usize::MAX;
        let (good, bad) = std::thread::scope(|sc| {
            let (b1, b2) = (b.clone(), b.clone());
            let bad = sc.spawn(move || b1.generate(vec![bad]));
            let good = sc.spawn(move || b2.generate(vec![request(2)]));
            (good.join().unwrap(), bad.join().unwrap())
        });
        assert!(bad.is_err());
        assert_eq!(good.unwrap()[0].token_ids.len(), 6);
        assert!(b.healthy());
        assert_eq!(b.generate(vec![request(3)]).unwrap().len(), 1);
    }

    fn request(seed: u64) -> Request {
        Request {
            prompt: vec![3],
            params: SamplingParams {
                max_tokens: 6,
                seed: Some(seed),
                ..Default::default()
            },
        }
    }

    #[test]
    fn concurrent_requests_share_one_engine_batch_and_keep_their_answers() {
        let b = batcher();
        // Each request alone, one batch each.
        let alone: Vec<_> = (0..8)
            .map(|s| b.generate(vec![request(s)]).unwrap().remove(0))
            .collect();
        assert_eq!(b.batches_run(), 8);
        // The same requests from 8 connections at once: one batch, same answers in place.
        let together: Vec<_> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..8)
                .map(|s| {
                    let b = b.clone();
                    sc.spawn(move || b.generate(vec![request(s)]).unwrap().remove(0))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            b.batches_run(),
            9,
            "the 8 concurrent requests ran as one batch"
        );
        assert_eq!(
            alone.iter().map(|c| &c.token_ids).collect::<Vec<_>>(),
            together.iter().map(|c| &c.token_ids).collect::<Vec<_>>()
        );
    }
}
