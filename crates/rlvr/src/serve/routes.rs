//! HTTP routes of `rlvr serve`: the vLLM OpenAI-compatible subset and SGLang's native subset, each
//! translated into engine requests for the shared batcher.

use super::batcher::Batcher;
use crate::protocol::{sglang, vllm};
use hyper::Method;
use rlvr_model::engine::{Completion, FinishReason, Request, SamplingParams};
use rlvr_model::Tokenizer;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct ServeState {
    pub batcher: Batcher,
    pub tokenizer: Arc<Tokenizer>,
    /// The `model` name clients must use (`--served-model-name`, else the `--model` argument).
    pub model_name: String,
    pub max_model_len: usize,
    pub vocab_size: usize,
    /// The longest token's text in bytes: bounds a text prompt's length before tokenizing it.
    pub max_token_bytes: usize,
    /// Prompts × `n` one request may ask for.
    pub max_seqs_per_request: usize,
    /// Generation always stops at these (unless `ignore_eos`).
    pub eos_ids: Vec<u32>,
    pub started: u64,
    pub next_id: AtomicU64,
}

/// An error answer: HTTP status and message.
#[derive(Debug)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
}

impl HttpError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        HttpError {
            status: 400,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        HttpError {
            status: 500,
            message: message.into(),
        }
    }
}

pub type Answer = Result<serde_json::Value, HttpError>;

fn json<T: Serialize>(v: &T) -> Answer {
    serde_json::to_value(v).map_err(|e| HttpError::internal(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, HttpError> {
    serde_json::from_str(body)
        .map_err(|e| HttpError::bad_request(format!("invalid request body: {e}")))
}

/// The JSON error body, vLLM's shape. Messages never carry a backtrace (candle appends one to its
/// errors under `RUST_BACKTRACE`), control characters or more than a few hundred characters of
/// whatever input they quote.
pub fn error_body(e: &HttpError) -> serde_json::Value {
    let kind = match e.status {
        401 => "AuthenticationError",
        404 => "NotFoundError",
        s if s >= 500 => "InternalServerError",
        _ => "BadRequestError",
    };
    let err = vllm::ErrorResponse::new(e.status, kind, public_message(&e.message));
    serde_json::to_value(err).unwrap_or_default()
}

/// What of an internal error message a client may see.
pub fn public_message(message: &str) -> String {
    const MAX_CHARS: usize = 1000;
    let mut kept = Vec::new();
    for line in message.lines() {
        let t = line.trim_start();
        let frame = t
            .split_once(": ")
            .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
            || t.starts_with("at ");
        if t.to_ascii_lowercase().starts_with("stack backtrace") || frame {
            break;
        }
        kept.push(line.trim_end());
    }
    let joined = kept.join(" ");
    let escaped: String = joined
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if escaped.chars().count() > MAX_CHARS {
        let cut: String = escaped.chars().take(MAX_CHARS).collect();
        format!("{cut}… (cut)")
    } else {
        escaped
    }
}

/// Answers one authorized request whose body has been read.
pub fn route(state: &ServeState, method: &Method, path: &str, body: &str) -> Answer {
    match (method, path) {
        (&Method::GET | &Method::HEAD, "/health") => {
            if state.batcher.healthy() {
                Ok(serde_json::Value::Null)
            } else {
                Err(HttpError::new(503, "the engine has stopped"))
            }
        }
        (&Method::GET, "/v1/models") => models(state),
        (&Method::POST, "/v1/completions") => completions(state, parse(body)?),
        (&Method::POST, "/generate") => generate(state, parse(body)?),
        (&Method::POST, "/update_weights_from_disk") => {
            update_weights_from_disk(state, parse(body)?)
        }
        (&Method::GET, "/get_model_info") => model_info(state),
        (&Method::GET, "/get_weight_version") => json(&sglang::WeightVersion {
            weight_version: state.batcher.weight_version(),
        }),
        (&Method::POST, "/collective_rpc") => collective_rpc(state, parse(body)?),
        // No prefix cache: nothing to reset (vLLM and SGLang spellings).
        (&Method::POST, "/reset_prefix_cache") | (&Method::POST, "/flush_cache") => {
            Ok(serde_json::Value::Null)
        }
        (&Method::POST, "/update_weight_version") => {
            let r: vllm::UpdateWeightVersionRequest = parse(body)?;
            state.batcher.set_weight_version(r.new_version.clone());
            Ok(serde_json::json!({
                "success": true,
                "message": format!("Weight version updated to {}", r.new_version),
                "new_version": r.new_version,
            }))
        }
        (&Method::GET, "/weight_info") => json(&vllm::WeightInfo {
            weight_version: Some(state.batcher.weight_version()),
        }),
        (&Method::GET, "/version") => Ok(serde_json::json!({
            "version": concat!("rlvr ", env!("CARGO_PKG_VERSION")),
        })),
        (&Method::GET, "/get_server_info") => Ok(serde_json::json!({
            "version": concat!("rlvr ", env!("CARGO_PKG_VERSION")),
            "served_model_name": state.model_name,
            "max_model_len": state.max_model_len,
            "weight_version": state.batcher.weight_version(),
            "engine_batches": state.batcher.batches_run(),
        })),
        _ => Err(HttpError {
            status: 404,
            message: format!("no route for {method} {path}"),
        }),
    }
}

/// vLLM's dev-mode `collective_rpc`; only `reload_weights` (re-read the served checkpoint).
fn collective_rpc(state: &ServeState, r: vllm::CollectiveRpcRequest) -> Answer {
    if r.method != "reload_weights" {
        return Err(HttpError::bad_request(format!(
            "collective_rpc method `{}` is not supported by rlvr serve (only reload_weights)",
            r.method
        )));
    }
    state
        .batcher
        .reload(state.batcher.path(), None)
        .map_err(HttpError::bad_request)?;
    Ok(serde_json::json!({ "results": [null] }))
}

fn models(state: &ServeState) -> Answer {
    json(&vllm::ModelList {
        object: "list".into(),
        data: vec![vllm::ModelCard {
            id: state.model_name.clone(),
            object: "model".into(),
            created: state.started,
            owned_by: "rlvr".into(),
            root: Some(state.model_name.clone()),
            parent: None,
            max_model_len: Some(state.max_model_len),
        }],
    })
}

fn model_info(state: &ServeState) -> Answer {
    json(&sglang::ModelInfo {
        model_path: state.model_name.clone(),
        tokenizer_path: Some(state.model_name.clone()),
        is_generation: Some(true),
        weight_version: Some(state.batcher.weight_version()),
    })
}

fn update_weights_from_disk(state: &ServeState, r: sglang::UpdateWeightsFromDiskRequest) -> Answer {
    if let Some(f) = r.load_format.as_deref() {
        if !matches!(f, "auto" | "safetensors") {
            return Err(HttpError::bad_request(format!(
                "load_format={f}: rlvr serve loads HF safetensors directories (auto)"
            )));
        }
    }
    match state
        .batcher
        .reload(PathBuf::from(&r.model_path), r.weight_version)
    {
        Ok(version) => json(&sglang::UpdateWeightsFromDiskResponse {
            success: true,
            message: format!("loaded {} as weight version {version}", r.model_path),
            num_paused_requests: Some(0),
        }),
        Err(message) => Err(HttpError::bad_request(message)),
    }
}

/// Sampling settings common to both APIs, before defaults.
struct Knobs {
    max_tokens: usize,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    seed: Option<u64>,
    stop: Vec<String>,
    stop_token_ids: Vec<u32>,
    ignore_eos: bool,
}

fn engine_request(state: &ServeState, prompt: Vec<u32>, k: &Knobs) -> Result<Request, HttpError> {
    if prompt.is_empty() {
        return Err(HttpError::bad_request("the prompt is empty"));
    }
    if let Some(bad) = prompt.iter().find(|&&t| t as usize >= state.vocab_size) {
        return Err(HttpError::bad_request(format!(
            "token id {bad} is outside the vocabulary ({} tokens)",
            state.vocab_size
        )));
    }
    // Saturating: a max_tokens near usize::MAX must be refused, not wrap into a small sum.
    let total = prompt.len().saturating_add(k.max_tokens);
    if total > state.max_model_len {
        return Err(HttpError::bad_request(format!(
            "This model's maximum context length is {} tokens. However, you requested {} tokens ({} in the prompt, {} for the completion).",
            state.max_model_len,
            total,
            prompt.len(),
            k.max_tokens
        )));
    }
    let mut stop_token_ids = k.stop_token_ids.clone();
    if !k.ignore_eos {
        stop_token_ids.extend(state.eos_ids.iter().copied());
    }
    let params = SamplingParams {
        temperature: k.temperature.unwrap_or(1.0),
        top_p: k.top_p.unwrap_or(1.0),
        top_k: k.top_k.unwrap_or(-1).max(0) as usize,
        min_p: k.min_p.unwrap_or(0.0),
        max_tokens: k.max_tokens,
        seed: k.seed,
        stop_token_ids,
        stop: k.stop.clone(),
    };
    params
        .validate()
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    Ok(Request { prompt, params })
}

/// The response text: special tokens skipped, a matched stop string cut unless kept.
fn response_text(
    state: &ServeState,
    c: &Completion,
    skip_special_tokens: bool,
    keep_stop_string: bool,
) -> Result<String, HttpError> {
    let mut text = state
        .tokenizer
        .decode(&c.token_ids, skip_special_tokens)
        .map_err(|e| HttpError::internal(e.to_string()))?;
    if let (Some(s), false) = (&c.stop_string, keep_stop_string) {
        if let Some(at) = text.find(s.as_str()) {
            text.truncate(at);
        }
    }
    Ok(text)
}

/// What ended a completion, as vLLM's `stop_reason`: the user's stop token or stop string;
/// `null` for EOS and length.
fn stop_reason(c: &Completion, user_stop_ids: &[u32]) -> Option<serde_json::Value> {
    if c.finish_reason != FinishReason::Stop {
        return None;
    }
    if let Some(s) = &c.stop_string {
        return Some(serde_json::Value::from(s.clone()));
    }
    let last = *c.token_ids.last()?;
    user_stop_ids
        .contains(&last)
        .then(|| serde_json::Value::from(last))
}

fn completions(state: &ServeState, r: vllm::CompletionRequest) -> Answer {
    if let Some(m) = &r.model {
        if m != &state.model_name {
            return Err(HttpError {
                status: 404,
                message: format!(
                    "The model `{m}` does not exist. This server serves `{}`.",
                    state.model_name
                ),
            });
        }
    }
    if r.stream == Some(true) {
        return Err(HttpError::bad_request(
            "stream=true is not supported by rlvr serve",
        ));
    }
    if r.echo == Some(true) {
        return Err(HttpError::bad_request(
            "echo=true is not supported by rlvr serve",
        ));
    }
    if r.logprobs.unwrap_or(0) > 0 {
        return Err(HttpError::bad_request(
            "rlvr serve reports only the sampled token's log-prob: use logprobs=0",
        ));
    }
    let n = r.n.unwrap_or(1).max(1);
    let count = match &r.prompt {
        Some(vllm::Prompt::TokensBatch(b)) => b.len(),
        Some(vllm::Prompt::TextBatch(b)) => b.len(),
        _ => 1,
    };
    if count.saturating_mul(n) > state.max_seqs_per_request {
        return Err(HttpError::bad_request(format!(
            "{count} prompt(s) x n={n} asks for more than the {} sequences one request may ask for",
            state.max_seqs_per_request
        )));
    }
    let prompts: Vec<Vec<u32>> = match r.prompt.clone() {
        None => return Err(HttpError::bad_request("`prompt` is required")),
        Some(vllm::Prompt::Tokens(ids)) => vec![ids],
        Some(vllm::Prompt::TokensBatch(b)) => b,
        Some(vllm::Prompt::Text(t)) => vec![encode(state, &t)?],
        Some(vllm::Prompt::TextBatch(b)) => b
            .iter()
            .map(|t| encode(state, t))
            .collect::<Result<_, _>>()?,
    };
    let user_stop_ids = r.stop_token_ids.clone().unwrap_or_default();
    let mut requests = Vec::new();
    for prompt in &prompts {
        for k in 0..n {
            let knobs = Knobs {
                max_tokens: r.max_tokens.unwrap_or(16),
                temperature: r.temperature,
                top_p: r.top_p,
                top_k: r.top_k,
                min_p: r.min_p,
                // Choice k of a seeded request draws from seed + k, so choices differ.
                seed: r.seed.map(|s| s.wrapping_add(k as u64)),
                stop: r.stop.clone().map(vllm::Stop::into_vec).unwrap_or_default(),
                stop_token_ids: user_stop_ids.clone(),
                ignore_eos: r.ignore_eos.unwrap_or(false),
            };
            requests.push(engine_request(state, prompt.clone(), &knobs)?);
        }
    }
    let out = state
        .batcher
        .generate(requests)
        .map_err(HttpError::internal)?;
    let skip_special = r.skip_special_tokens.unwrap_or(true);
    let keep_stop = r.include_stop_str_in_output.unwrap_or(false);
    let as_ids = r.return_tokens_as_token_ids.unwrap_or(false);
    let mut choices = Vec::with_capacity(out.len());
    let mut usage = vllm::Usage::default();
    for (index, c) in out.iter().enumerate() {
        let prompt = &prompts[index / n];
        usage.prompt_tokens += prompt.len();
        usage.completion_tokens += c.token_ids.len();
        let logprobs = match r.logprobs {
            None => None,
            Some(_) => Some(choice_logprobs(state, c, as_ids)?),
        };
        choices.push(vllm::CompletionChoice {
            index,
            text: response_text(state, c, skip_special, keep_stop)?,
            logprobs,
            finish_reason: Some(c.finish_reason.as_str().to_string()),
            stop_reason: stop_reason(c, &user_stop_ids),
            token_ids: r
                .return_token_ids
                .unwrap_or(false)
                .then(|| c.token_ids.clone()),
            prompt_token_ids: r.return_token_ids.unwrap_or(false).then(|| prompt.clone()),
        });
    }
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    json(&vllm::CompletionResponse {
        id: format!("cmpl-{}", state.next_id.fetch_add(1, Ordering::Relaxed)),
        object: "text_completion".into(),
        created: now(),
        model: state.model_name.clone(),
        choices,
        usage,
    })
}

fn choice_logprobs(
    state: &ServeState,
    c: &Completion,
    as_ids: bool,
) -> Result<vllm::CompletionLogprobs, HttpError> {
    let mut lp = vllm::CompletionLogprobs::default();
    let mut offset = 0;
    for (&id, &l) in c.token_ids.iter().zip(&c.logprobs) {
        let piece = state
            .tokenizer
            .decode(&[id], false)
            .map_err(|e| HttpError::internal(e.to_string()))?;
        let token = if as_ids {
            format!("token_id:{id}")
        } else {
            piece.clone()
        };
        lp.text_offset.push(offset);
        offset += piece.len();
        lp.token_logprobs.push(Some(l));
        lp.top_logprobs
            .push(Some(std::iter::once((token.clone(), l)).collect()));
        lp.tokens.push(token);
    }
    Ok(lp)
}

fn encode(state: &ServeState, text: &str) -> Result<Vec<u32>, HttpError> {
    // Bounded before tokenizing: a many-megabyte text would cost memory and time first.
    let most = state.max_model_len.saturating_mul(state.max_token_bytes);
    if text.len() > most {
        return Err(HttpError::bad_request(format!(
            "This model's maximum context length is {} tokens. However, the prompt text is {} bytes, more than {} tokens can hold.",
            state.max_model_len,
            text.len(),
            state.max_model_len
        )));
    }
    state
        .tokenizer
        .encode(text, true)
        .map_err(|e| HttpError::bad_request(format!("tokenizing the prompt: {e}")))
}

fn generate(state: &ServeState, r: sglang::GenerateRequest) -> Answer {
    if r.stream == Some(true) {
        return Err(HttpError::bad_request(
            "stream=true is not supported by rlvr serve",
        ));
    }
    let prompt = match (r.input_ids.clone(), &r.text) {
        (Some(ids), _) => ids,
        (None, Some(t)) => encode(state, t)?,
        (None, None) => {
            return Err(HttpError::bad_request(
                "one of `text` or `input_ids` is required",
            ))
        }
    };
    let p = &r.sampling_params;
    let user_stop_ids = p.stop_token_ids.clone().unwrap_or_default();
    let knobs = Knobs {
        // SGLang's default.
        max_tokens: p.max_new_tokens.unwrap_or(128),
        temperature: p.temperature,
        top_p: p.top_p,
        top_k: p.top_k,
        min_p: p.min_p,
        seed: p.sampling_seed,
        stop: p.stop.clone().map(vllm::Stop::into_vec).unwrap_or_default(),
        stop_token_ids: user_stop_ids.clone(),
        ignore_eos: p.ignore_eos.unwrap_or(false),
    };
    let request = engine_request(state, prompt.clone(), &knobs)?;
    let c = state
        .batcher
        .generate(vec![request])
        .map_err(HttpError::internal)?
        .remove(0);
    let finish_reason = match c.finish_reason {
        FinishReason::Length => sglang::FinishReason {
            kind: "length".into(),
            matched: None,
            length: Some(c.token_ids.len()),
            message: None,
        },
        FinishReason::Stop => sglang::FinishReason {
            kind: "stop".into(),
            matched: Some(match &c.stop_string {
                Some(s) => serde_json::Value::from(s.clone()),
                None => serde_json::Value::from(*c.token_ids.last().unwrap_or(&0)),
            }),
            length: None,
            message: None,
        },
    };
    let output_token_logprobs = r.return_logprob.then(|| {
        c.token_ids
            .iter()
            .zip(&c.logprobs)
            .map(|(&id, &l)| (l, id, None))
            .collect()
    });
    json(&sglang::GenerateResponse {
        text: response_text(
            state,
            &c,
            p.skip_special_tokens.unwrap_or(true),
            p.no_stop_trim.unwrap_or(false),
        )?,
        output_ids: Some(c.token_ids.clone()),
        meta_info: sglang::MetaInfo {
            id: r
                .rid
                .clone()
                .unwrap_or_else(|| format!("{}", state.next_id.fetch_add(1, Ordering::Relaxed))),
            finish_reason: Some(finish_reason),
            prompt_tokens: prompt.len(),
            completion_tokens: c.token_ids.len(),
            output_token_logprobs,
            weight_version: Some(state.batcher.weight_version()),
        },
    })
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_messages_carry_no_backtrace_no_control_bytes_and_no_floods() {
        // candle's errors under RUST_BACKTRACE: the message, then the frames.
        let candle = "shape mismatch in matmul\nStack backtrace:\n   0: candle_core::error::Error::bt\n             at /src/candle-core/src/error.rs:253:25\n   1: rlvr::serve";
        assert_eq!(public_message(candle), "shape mismatch in matmul");
        let std_style = "loading x: bad\n   0: std::backtrace::Backtrace::capture\n   1: main";
        assert_eq!(public_message(std_style), "loading x: bad");
        assert_eq!(public_message("a\u{1}b\u{1b}[2J"), "a\\u{1}b\\u{1b}[2J");
        let flood = "x".repeat(100_000);
        let shown = public_message(&flood);
        assert!(shown.chars().count() < 1100 && shown.ends_with("(cut)"));
        // Ordinary multi-line context chains stay.
        assert_eq!(
            public_message("loading m: bad\ncaused by: y"),
            "loading m: bad caused by: y"
        );
    }
}
