//! `rlvr serve` in-process on a tiny model, driven through the remote generator: the same seed
//! gives the same tokens and log-probs as the embedded engine, over both APIs; errors are clear.

use rlvr::env::EnvRegistry;
use rlvr::generator::remote::engine::Retry;
use rlvr::generator::{
    EmbeddedGenerator, Generator, PromptGroup, RemoteGenerator, RemoteSettings, Sampling,
};
use rlvr::protocol::Backend;
use rlvr::serve::{ServeOptions, Server};
use rlvr_algo::rewards::gsm8k::Method;
use rlvr_model::engine::LogprobsMode;
use rlvr_model::{load_pretrained, Model};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn serve(model: &Path, name: &str) -> String {
    let server = Server::start(&ServeOptions {
        model: model.to_path_buf(),
        bind: "127.0.0.1:0".into(),
        served_model_name: Some(name.into()),
        max_num_seqs: 64,
        max_model_len: None,
        logprobs_mode: LogprobsMode::Processed,
        weights: candle_core::DType::F32,
        device: candle_core::Device::Cpu,
        http_threads: 64,
    })
    .unwrap();
    server.spawn().to_string()
}

fn settings(urls: Vec<String>, backend: Backend, model: &str, sync: &Path) -> RemoteSettings {
    RemoteSettings {
        urls,
        backend,
        model: model.into(),
        weight_sync_dir: sync.to_path_buf(),
        request_timeout: Duration::from_secs(60),
        retry: Retry {
            max_retries: 1,
            backoff: Duration::from_millis(50),
        },
        max_in_flight: 64,
    }
}

fn groups() -> Vec<PromptGroup> {
    rlvr::toy::rows(1)
        .into_iter()
        .enumerate()
        .map(|(i, row)| PromptGroup {
            uid: format!("g{i}"),
            row,
            n: 4,
        })
        .collect()
}

fn sampling() -> Sampling {
    Sampling {
        temperature: 0.8,
        top_p: 0.95,
        top_k: -1,
        min_p: 0.0,
        max_generate_length: 12,
        stop: vec![],
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    model_dir: std::path::PathBuf,
    sync_dir: std::path::PathBuf,
    model: Arc<Model>,
    tokenizer: Arc<rlvr_model::Tokenizer>,
    envs: EnvRegistry,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    rlvr::toy::write(dir.path(), 3).unwrap();
    let model_dir = dir.path().join("model");
    let pre = load_pretrained(&model_dir, &candle_core::Device::Cpu).unwrap();
    let model = Arc::new(
        Model::from_tensors(&pre.config, &pre.tensors, &candle_core::Device::Cpu).unwrap(),
    );
    Setup {
        sync_dir: dir.path().join("sync"),
        model_dir,
        _dir: dir,
        model,
        tokenizer: Arc::new(pre.tokenizer),
        envs: EnvRegistry::with_builtins(rlvr::env::Gsm8kEnv::new(Method::Strict, 0.0)),
    }
}

fn embedded(s: &Setup) -> EmbeddedGenerator {
    EmbeddedGenerator::new(s.model.clone(), s.tokenizer.clone(), s.envs.clone(), 64)
}

fn remote(
    s: &Setup,
    urls: Vec<String>,
    backend: Backend,
    name: &str,
) -> anyhow::Result<RemoteGenerator> {
    let stop = rlvr::generator::eos_ids(s.model.config(), &s.tokenizer);
    RemoteGenerator::connect(
        settings(urls, backend, name, &s.sync_dir),
        s.tokenizer.clone(),
        s.envs.clone(),
        stop,
    )
}

/// Same tokens, log-probs within 1e-4, same rewards and stop reasons.
fn assert_same(a: &rlvr::generator::GeneratorOutput, b: &rlvr::generator::GeneratorOutput) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.uids, b.uids);
    assert_eq!(a.response_ids, b.response_ids);
    assert_eq!(a.rewards, b.rewards);
    assert_eq!(a.stop_reasons, b.stop_reasons);
    for (x, y) in a.rollout_logprobs.iter().zip(&b.rollout_logprobs) {
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(y) {
            assert!((p - q).abs() <= 1e-4, "log-prob {p} vs {q}");
        }
    }
}

#[test]
fn served_requests_equal_the_embedded_engine_over_both_apis() {
    let s = setup();
    let urls = vec![serve(&s.model_dir, "toy"), serve(&s.model_dir, "toy")];
    let want = embedded(&s).generate(&groups(), &sampling(), 11).unwrap();
    // Sampled, not degenerate: several distinct responses.
    let distinct: std::collections::BTreeSet<_> = want.response_ids.iter().collect();
    assert!(distinct.len() > 4, "{distinct:?}");
    for backend in [Backend::Vllm, Backend::Sglang] {
        let got = remote(&s, urls.clone(), backend, "toy")
            .unwrap()
            .generate(&groups(), &sampling(), 11)
            .unwrap();
        assert_same(&want, &got);
    }
    // Another seed draws other tokens.
    let other = embedded(&s).generate(&groups(), &sampling(), 12).unwrap();
    assert_ne!(want.response_ids, other.response_ids);
}

#[test]
fn weight_sync_reloads_every_server_and_checks_the_version() {
    let s = setup();
    // vLLM reloads the directory it was started on: start the servers on the sync directory.
    copy_dir(&s.model_dir, &s.sync_dir);
    let urls = vec![serve(&s.sync_dir, "policy"), serve(&s.sync_dir, "policy")];
    // A policy with other weights than the servers loaded.
    let pre = load_pretrained(&s.model_dir, &candle_core::Device::Cpu).unwrap();
    let other = rlvr::toy::random_tensors(&pre.config, 99).unwrap();
    let policy =
        Arc::new(Model::from_tensors(&pre.config, &other, &candle_core::Device::Cpu).unwrap());
    let want = EmbeddedGenerator::new(policy.clone(), s.tokenizer.clone(), s.envs.clone(), 64)
        .generate(&groups(), &sampling(), 5)
        .unwrap();
    for (backend, step) in [(Backend::Vllm, 3), (Backend::Sglang, 4)] {
        let mut g = remote(&s, urls.clone(), backend, "policy").unwrap();
        g.sync_weights(&policy, step).unwrap();
        for u in &urls {
            let v: serde_json::Value = ureq_get(&format!("http://{u}/get_weight_version"));
            assert_eq!(v["weight_version"], step.to_string());
        }
        assert_same(&want, &g.generate(&groups(), &sampling(), 5).unwrap());
    }
}

#[test]
fn unreachable_or_wrong_model_servers_are_clear_errors() {
    let s = setup();
    let url = serve(&s.model_dir, "toy");
    let e = remote(&s, vec![url.clone()], Backend::Vllm, "another-model")
        .err()
        .unwrap();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("serves [\"toy\"], not `another-model`"),
        "{msg}"
    );
    let e = remote(&s, vec![url], Backend::Sglang, "another-model")
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("not `another-model`"), "{e:#}");
    // Nothing listens on this port (bound, then released).
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = remote(&s, vec![free.to_string()], Backend::Vllm, "toy")
        .err()
        .unwrap();
    let msg = format!("{e:#}");
    assert!(
        msg.contains(&free.to_string()) && msg.contains("gave up after 2 attempts"),
        "{msg}"
    );
}

#[test]
fn bad_requests_get_vllm_style_errors() {
    let s = setup();
    let url = serve(&s.model_dir, "toy");
    let post = |path: &str, body: serde_json::Value| -> (u16, serde_json::Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .post(&format!("http://{url}{path}"))
            .send_json(&body)
            .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_json().unwrap())
    };
    let (status, body) = post(
        "/v1/completions",
        serde_json::json!({"model": "nope", "prompt": [5]}),
    );
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], 404);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`nope` does not exist"));
    let (status, body) = post(
        "/v1/completions",
        serde_json::json!({"model": "toy", "prompt": [5], "max_tokens": 1000}),
    );
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("maximum context length is 64"));
    let (status, body) = post(
        "/v1/completions",
        serde_json::json!({"model": "toy", "prompt": [500]}),
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = post("/generate", serde_json::json!({"sampling_params": {}}));
    assert_eq!(status, 400);
    let (status, body) = post(
        "/update_weights_from_disk",
        serde_json::json!({"model_path": "/does/not/exist"}),
    );
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/does/not/exist"),
        "{body}"
    );
    // A text prompt, n=2 with a seed, and the OpenAI response shape.
    let (status, body) = post(
        "/v1/completions",
        serde_json::json!({"model": "toy", "prompt": "q1", "n": 2, "seed": 3, "max_tokens": 4, "logprobs": 0}),
    );
    assert_eq!(status, 200, "{body}");
    let r: rlvr::protocol::vllm::CompletionResponse = serde_json::from_value(body).unwrap();
    assert_eq!(r.choices.len(), 2);
    assert_eq!(r.choices[1].index, 1);
    assert_eq!(r.usage.prompt_tokens, 2);
    let lp = r.choices[0].logprobs.as_ref().unwrap();
    assert_eq!(lp.tokens.len(), lp.token_logprobs.len());
}

fn ureq_get(url: &str) -> serde_json::Value {
    ureq::get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
