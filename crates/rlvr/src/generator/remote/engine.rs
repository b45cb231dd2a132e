//! One remote inference server (vLLM or SGLang, or `rlvr serve` speaking either API): requests,
//! responses, retries with backoff, and the weight-reload call.

use crate::protocol::{sglang, vllm, Backend};
use anyhow::{bail, Result};
use rlvr_model::engine::{Completion, FinishReason, SamplingParams};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The server is unreachable, timed out or kept answering 5xx: its work should go elsewhere.
    Down(String),
    /// The server refused the request (4xx) or answered something unusable: retrying elsewhere
    /// would fail the same way.
    Rejected(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Down(m) | CallError::Rejected(m) => f.write_str(m),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Retry {
    /// Attempts after the first.
    pub max_retries: usize,
    /// Wait before the first retry; doubled after each.
    pub backoff: Duration,
}

pub struct RemoteEngine {
    /// `http://host:port`.
    pub url: String,
    backend: Backend,
    /// The `model` field of requests.
    model: String,
    agent: ureq::Agent,
    retry: Retry,
    /// `Bearer <key>`, sent with every request.
    authorization: Option<String>,
}

impl RemoteEngine {
    /// `address` is `host:port` (SkyRL's `remote_inference_engine_urls`) or a full `http://` URL.
    pub fn new(
        address: &str,
        backend: Backend,
        model: &str,
        timeout: Duration,
        retry: Retry,
        api_key: Option<&str>,
    ) -> RemoteEngine {
        let url = if address.contains("://") {
            address.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", address.trim_end_matches('/'))
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        RemoteEngine {
            url,
            backend,
            model: model.to_string(),
            agent,
            retry,
            authorization: api_key.map(|k| format!("Bearer {k}")),
        }
    }

    fn get_request(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let r = self.agent.get(url);
        match &self.authorization {
            Some(a) => r.header("Authorization", a),
            None => r,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the server is up and serves `self.model`; the error names both models.
    pub fn check_model(&self) -> Result<()> {
        let served: Vec<String> = match self.backend {
            Backend::Vllm => self
                .get::<vllm::ModelList>("/v1/models")
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .data
                .into_iter()
                .map(|m| m.id)
                .collect(),
            Backend::Sglang => vec![
                self.get::<sglang::ModelInfo>("/get_model_info")
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .model_path,
            ],
        };
        if !served.iter().any(|m| m == &self.model) {
            bail!(
                "inference engine {} serves {:?}, not `{}` (set generator.served_model_name to the name the server uses, or start the server with this model)",
                self.url,
                served,
                self.model
            );
        }
        Ok(())
    }

    /// Generates one completion for `prompt`.
    pub fn generate(&self, prompt: &[u32], p: &SamplingParams) -> Result<Completion, CallError> {
        match self.backend {
            Backend::Vllm => {
                let r: vllm::CompletionResponse =
                    self.post("/v1/completions", &vllm_request(&self.model, prompt, p))?;
                parse_vllm(r).map_err(|e| CallError::Rejected(format!("{}: {e}", self.url)))
            }
            Backend::Sglang => {
                let r: sglang::GenerateResponse =
                    self.post("/generate", &sglang_request(prompt, p))?;
                parse_sglang(r).map_err(|e| CallError::Rejected(format!("{}: {e}", self.url)))
            }
        }
    }

    /// Makes the server serve the HF checkpoint just written to `dir` as weight version
    /// `version`, and checks that it reports that version.
    ///
    /// SGLang loads `dir` with `/update_weights_from_disk`. vLLM has no documented call that
    /// loads another directory: its server must have been started on `dir` (the weight sync
    /// directory), and `/collective_rpc` `reload_weights` re-reads it (dev mode,
    /// `VLLM_SERVER_DEV_MODE=1`); the prefix cache is then reset and the version recorded.
    pub fn update_weights(&self, dir: &Path, version: &str) -> Result<(), CallError> {
        match self.backend {
            Backend::Sglang => {
                let body = sglang::UpdateWeightsFromDiskRequest {
                    model_path: dir.display().to_string(),
                    load_format: None,
                    weight_version: Some(version.to_string()),
                };
                let r: sglang::UpdateWeightsFromDiskResponse =
                    self.post("/update_weights_from_disk", &body)?;
                if !r.success {
                    return Err(CallError::Rejected(format!(
                        "{} could not load {}: {}",
                        self.url,
                        dir.display(),
                        r.message
                    )));
                }
                let served = self
                    .get::<sglang::WeightVersion>("/get_weight_version")?
                    .weight_version;
                self.check_version(&served, version)
            }
            Backend::Vllm => {
                let rpc = vllm::CollectiveRpcRequest {
                    method: "reload_weights".into(),
                    args: None,
                    kwargs: None,
                    timeout: None,
                };
                let hint = |e: CallError, what: &str| match e {
                    CallError::Rejected(m) => CallError::Rejected(format!("{m} ({what})")),
                    down => down,
                };
                let dev_mode = "vLLM serves this only with VLLM_SERVER_DEV_MODE=1, and must have \
                    been started on generator.weight_sync_dir";
                let _: serde_json::Value = self
                    .post("/collective_rpc", &rpc)
                    .map_err(|e| hint(e, dev_mode))?;
                let _: serde_json::Value = self
                    .post("/reset_prefix_cache", &serde_json::json!({}))
                    .map_err(|e| hint(e, dev_mode))?;
                let set = vllm::UpdateWeightVersionRequest {
                    new_version: version.to_string(),
                };
                let _: serde_json::Value = self
                    .post("/update_weight_version", &set)
                    .map_err(|e| hint(e, "weight versions need a recent vLLM in dev mode"))?;
                let served = self
                    .get::<vllm::WeightInfo>("/weight_info")?
                    .weight_version
                    .unwrap_or_default();
                self.check_version(&served, version)
            }
        }
    }

    fn check_version(&self, served: &str, expected: &str) -> Result<(), CallError> {
        if served != expected {
            return Err(CallError::Rejected(format!(
                "{} reports weight version {served:?} after loading version {expected:?}",
                self.url
            )));
        }
        Ok(())
    }

    /// One `GET /health`, no retries: is a server that went down back?
    pub fn is_up(&self) -> bool {
        matches!(
            self.get_request(&format!("{}/health", self.url)).call(),
            Ok(r) if r.status().is_success()
        )
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call(path, None::<&()>)
    }

    fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, CallError> {
        self.call(path, Some(body))
    }

    /// One request with retries: transport errors and 5xx are retried with exponential backoff,
    /// 4xx are not.
    fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CallError> {
        let url = format!("{}{path}", self.url);
        let payload = body.map(|b| serde_json::to_string(b).expect("serialisable request"));
        let mut wait = self.retry.backoff;
        let mut attempt = 0;
        loop {
            let sent = match &payload {
                Some(p) => {
                    let r = self.agent.post(&url);
                    let r = match &self.authorization {
                        Some(a) => r.header("Authorization", a),
                        None => r,
                    };
                    r.header("Content-Type", "application/json")
                        .send(p.as_str())
                }
                None => self.get_request(&url).call(),
            };
            let failure = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.into_body().read_to_string();
                    match (status, text) {
                        (200..=299, Ok(t)) => {
                            // Control endpoints may answer 200 with an empty body.
                            let t = if t.trim().is_empty() {
                                "null".to_string()
                            } else {
                                t
                            };
                            return serde_json::from_str(&t).map_err(|e| {
                                CallError::Rejected(format!(
                                    "{url}: unexpected response ({e}): {}",
                                    clip(&t)
                                ))
                            });
                        }
                        (400..=499, t) => {
                            let t = t.unwrap_or_default();
                            return Err(CallError::Rejected(format!(
                                "{url} answered {status}: {}",
                                error_message(&t)
                            )));
                        }
                        (s, t) => format!(
                            "{url} answered {s}: {}",
                            error_message(&t.unwrap_or_default())
                        ),
                    }
                }
                Err(e) => format!("{url}: {e}"),
            };
            if attempt >= self.retry.max_retries {
                return Err(CallError::Down(format!(
                    "{failure} (gave up after {} attempts)",
                    attempt + 1
                )));
            }
            tracing::warn!("{failure}; retrying in {:.1}s", wait.as_secs_f64());
            std::thread::sleep(wait);
            wait *= 2;
            attempt += 1;
        }
    }
}

/// The message of an error body, whichever server wrote it.
pub fn error_message(body: &str) -> String {
    let v: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => return clip(body),
    };
    v.get("message")
        .or_else(|| v.get("error").and_then(|e| e.get("message")))
        .or_else(|| v.get("error"))
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| clip(body))
}

fn clip(s: &str) -> String {
    let mut s = s.trim().to_string();
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Token ids in, token ids out: text round trips would re-tokenise and can lose the EOS token.
pub fn vllm_request(model: &str, prompt: &[u32], p: &SamplingParams) -> vllm::CompletionRequest {
    vllm::CompletionRequest {
        model: Some(model.to_string()),
        prompt: Some(vllm::Prompt::Tokens(prompt.to_vec())),
        max_tokens: Some(p.max_tokens),
        temperature: Some(p.temperature),
        top_p: Some(p.top_p),
        top_k: Some(if p.top_k == 0 { -1 } else { p.top_k as i64 }),
        min_p: Some(p.min_p),
        seed: p.seed,
        n: Some(1),
        stop: (!p.stop.is_empty()).then(|| vllm::Stop::Many(p.stop.clone())),
        stop_token_ids: (!p.stop_token_ids.is_empty()).then(|| p.stop_token_ids.clone()),
        logprobs: Some(0),
        include_stop_str_in_output: Some(true),
        skip_special_tokens: Some(false),
        return_tokens_as_token_ids: Some(true),
        return_token_ids: Some(true),
        ..Default::default()
    }
}

pub fn parse_vllm(r: vllm::CompletionResponse) -> Result<Completion> {
    let Some(choice) = r.choices.into_iter().next() else {
        bail!("the completion has no choices");
    };
    let token_ids = choice
        .sampled_token_ids()
        .ok_or_else(|| anyhow::anyhow!("the completion has neither `token_ids` nor `token_id:N` log-prob tokens (is return_tokens_as_token_ids supported?)"))?;
    let logprobs: Vec<f32> = match &choice.logprobs {
        Some(lp) => lp
            .token_logprobs
            .iter()
            .map(|l| l.unwrap_or(f32::NAN))
            .collect(),
        None => bail!("the completion has no `logprobs`"),
    };
    if logprobs.len() != token_ids.len() {
        bail!(
            "the completion has {} tokens but {} log-probs",
            token_ids.len(),
            logprobs.len()
        );
    }
    let finish_reason = finish_reason(choice.finish_reason.as_deref())?;
    let stop_string = choice
        .stop_reason
        .as_ref()
        .and_then(|v| v.as_str())
        .map(str::to_string);
    Ok(Completion {
        token_ids,
        logprobs,
        finish_reason,
        stop_string,
    })
}

pub fn sglang_request(prompt: &[u32], p: &SamplingParams) -> sglang::GenerateRequest {
    sglang::GenerateRequest {
        input_ids: Some(prompt.to_vec()),
        sampling_params: sglang::SamplingParams {
            max_new_tokens: Some(p.max_tokens),
            temperature: Some(p.temperature),
            top_p: Some(p.top_p),
            top_k: Some(if p.top_k == 0 { -1 } else { p.top_k as i64 }),
            min_p: Some(p.min_p),
            stop: (!p.stop.is_empty()).then(|| vllm::Stop::Many(p.stop.clone())),
            stop_token_ids: (!p.stop_token_ids.is_empty()).then(|| p.stop_token_ids.clone()),
            skip_special_tokens: Some(false),
            no_stop_trim: Some(true),
            ignore_eos: None,
            sampling_seed: p.seed,
        },
        return_logprob: true,
        ..Default::default()
    }
}

pub fn parse_sglang(r: sglang::GenerateResponse) -> Result<Completion> {
    let lps = r.meta_info.output_token_logprobs.ok_or_else(|| {
        anyhow::anyhow!(
            "the response has no meta_info.output_token_logprobs (return_logprob was sent)"
        )
    })?;
    let from_logprobs: Vec<u32> = lps.iter().map(|(_, id, _)| *id).collect();
    let token_ids = r.output_ids.unwrap_or_else(|| from_logprobs.clone());
    if token_ids != from_logprobs {
        bail!(
            "output_ids ({} tokens) and output_token_logprobs ({} tokens) disagree",
            token_ids.len(),
            from_logprobs.len()
        );
    }
    let reason = r.meta_info.finish_reason.as_ref().map(|f| f.kind.as_str());
    let finish_reason = finish_reason(reason)?;
    let stop_string = r
        .meta_info
        .finish_reason
        .as_ref()
        .and_then(|f| f.matched.as_ref())
        .and_then(|m| m.as_str())
        .map(str::to_string);
    Ok(Completion {
        token_ids,
        logprobs: lps.iter().map(|(l, _, _)| *l).collect(),
        finish_reason,
        stop_string,
    })
}

fn finish_reason(r: Option<&str>) -> Result<FinishReason> {
    match r {
        Some("stop") => Ok(FinishReason::Stop),
        Some("length") => Ok(FinishReason::Length),
        other => bail!("unexpected finish reason {other:?} (expected stop or length)"),
    }
}
