//! `rlvr serve` in-process on a tiny model, driven through the remote generator: the same seed
//! gives the same tokens and log-probs as the embedded engine, over both APIs; errors are clear.

use rlvr::env::EnvRegistry;
use rlvr::generator::remote::engine::Retry;
use rlvr::generator::{
    EmbeddedGenerator, Generator, PromptGroup, RemoteGenerator, RemoteSettings, Sampling,
};
use rlvr::protocol::Backend;
use rlvr::serve::{Limits, ServeOptions, Server};
use rlvr_algo::rewards::gsm8k::Method;
use rlvr_model::engine::LogprobsMode;
use rlvr_model::{load_pretrained, Model};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn options(model: &Path, name: &str) -> ServeOptions {
    ServeOptions {
        model: model.to_path_buf(),
        bind: "127.0.0.1:0".into(),
        served_model_name: Some(name.into()),
        max_num_seqs: 64,
        max_model_len: None,
        logprobs_mode: LogprobsMode::Processed,
        weights: candle_core::DType::F32,
        device: candle_core::Device::Cpu,
        api_key: None,
        allow_unauthenticated: false,
        limits: Limits::default(),
    }
}

fn serve(model: &Path, name: &str) -> String {
    serve_with(&options(model, name))
}

fn serve_with(opts: &ServeOptions) -> String {
    Server::start(opts).unwrap().spawn().to_string()
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
        api_key: None,
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

/// Sends `head` (and `body`) on a fresh connection; returns the status and the body text.
fn raw(addr: &str, head: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and close before the whole body is sent.
    let _ = c.write_all(body);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}

/// One request on a fresh connection, with the key as a Bearer token when given.
fn request(addr: &str, method: &str, path: &str, body: &str, key: Option<&str>) -> (u16, String) {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let length = if body.is_empty() && method != "POST" {
        String::new()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    raw(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}{length}\r\n"),
        body.as_bytes(),
    )
}

fn post_json(addr: &str, path: &str, body: &str, key: Option<&str>) -> (u16, String) {
    request(addr, "POST", path, body, key)
}

fn get(addr: &str, method: &str, path: &str, key: Option<&str>) -> (u16, String) {
    request(addr, method, path, "", key)
}

const GOOD: &str =
    r#"{"model": "toy", "prompt": [3, 4], "max_tokens": 5, "seed": 1, "temperature": 0.0}"#;

#[test]
fn hostile_requests_are_refused_before_allocating_and_never_fail_others() {
    let s = setup();
    let mut opts = options(&s.model_dir, "toy");
    opts.limits.max_body_bytes = 1 << 20;
    opts.limits.max_seqs_per_request = 256;
    let addr = serve_with(&opts);
    let (status, want) = post_json(&addr, "/v1/completions", GOOD, None);
    assert_eq!(status, 200, "{want}");
    let want: serde_json::Value = serde_json::from_str(&want).unwrap();
    // Each answered 400.
    let hostile: Vec<String> = vec![
        // max_tokens near u64::MAX: prompt + max_tokens must not wrap.
        r#"{"model": "toy", "prompt": [3], "max_tokens": 18446744073709551615}"#.into(),
        r#"{"text": "q1", "sampling_params": {"max_new_tokens": 18446744073709551615}}"#.into(),
        r#"{"model": "toy", "prompt": [3], "n": 1000000000}"#.into(),
        r#"{"model": "toy", "prompt": [[3], [4], [5]], "n": 100}"#.into(),
        r#"{"model": "toy", "prompt": [3], "max_tokens": -1}"#.into(),
        r#"{"model": "toy", "prompt": [3], "temperature": -2}"#.into(),
        r#"{"model": "toy", "prompt": [4294967295]}"#.into(),
        // A text prompt far longer than the context: refused before tokenizing.
        format!(
            r#"{{"model": "toy", "prompt": "{}"}}"#,
            "q1 ".repeat(200_000)
        ),
        r#"{"model": "toy", "prompt": [3"#.into(),
    ];
    // Every hostile request beside a sound one from another client at the same moment.
    std::thread::scope(|sc| {
        for body in &hostile {
            let a = addr.clone();
            let good = sc.spawn(move || post_json(&a, "/v1/completions", GOOD, None));
            let path = if body.contains("sampling_params") {
                "/generate"
            } else {
                "/v1/completions"
            };
            let (status, text) = post_json(&addr, path, body, None);
            assert_eq!(status, 400, "{}: {text}", &body[..body.len().min(80)]);
            assert!(
                !text.contains("backtrace") && !text.contains(".rs:"),
                "{text}"
            );
            let (status, text) = good.join().unwrap();
            assert_eq!(status, 200, "{text}");
            let got: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(got["choices"][0]["text"], want["choices"][0]["text"]);
        }
    });
    // Bodies beyond the limit: 413 from the declared length, before reading it.
    let (status, text) = raw(
        &addr,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n",
        b"{",
    );
    assert_eq!(status, 413, "{text}");
    // ... and from the bytes when no length is declared (chunked).
    let chunk = vec![b' '; 1 << 16];
    let mut body = Vec::new();
    for _ in 0..20 {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let (status, _) = raw(
        &addr,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        &body,
    );
    assert_eq!(status, 413);
    let (status, _) = get(&addr, "HEAD", "/health", None);
    assert_eq!(status, 200);
}

#[test]
fn a_failed_reload_keeps_the_old_weights_serving_and_health_stays_true() {
    let s = setup();
    let addr = serve(&s.model_dir, "toy");
    let (_, before) = post_json(&addr, "/v1/completions", GOOD, None);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.model_dir.join("config.json")).unwrap())
            .unwrap();
    let edits: Vec<(&str, serde_json::Value)> = vec![
        ("num_attention_heads", 0.into()),
        ("max_position_embeddings", 1_000_000_000_000_000u64.into()),
        ("hidden_size", 48.into()),
        ("rope_theta", (-1.0).into()),
    ];
    for (i, (key, value)) in edits.into_iter().enumerate() {
        let dir = s.sync_dir.join(format!("bad{i}"));
        copy_dir(&s.model_dir, &dir);
        let mut c = config.clone();
        c[key] = value;
        std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
        let body = serde_json::json!({"model_path": dir, "weight_version": "bad"}).to_string();
        let (status, text) = post_json(&addr, "/update_weights_from_disk", &body, None);
        assert_eq!(status, 400, "{key}: {text}");
        assert!(text.contains(key), "{key}: {text}");
        assert_eq!(get(&addr, "GET", "/health", None).0, 200);
        let (status, after) = post_json(&addr, "/v1/completions", GOOD, None);
        assert_eq!(status, 200, "{after}");
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(&before).unwrap(),
            serde_json::from_str(&after).unwrap(),
        );
        assert_eq!(a["choices"], b["choices"], "the old weights still serve");
    }
    let (_, v) = get(&addr, "GET", "/get_weight_version", None);
    assert!(v.contains("\"0\""), "{v}");
    // A file that is not a model: the error does not quote its bytes.
    let junk = s.sync_dir.join("junk.gguf");
    std::fs::write(&junk, b"\x01SECRET-BYTES-HERE").unwrap();
    let body = serde_json::json!({"model_path": junk}).to_string();
    let (status, text) = post_json(&addr, "/update_weights_from_disk", &body, None);
    assert_eq!(status, 400);
    assert!(text.contains("not a GGUF file"), "{text}");
    assert!(
        !text.contains("SECRET") && !text.contains("magic 0x"),
        "{text}"
    );
}

#[test]
fn an_api_key_guards_every_route_but_health_and_the_remote_client_sends_it() {
    let s = setup();
    let mut opts = options(&s.model_dir, "toy");
    opts.api_key = Some("sesame".into());
    let addr = serve_with(&opts);
    assert_eq!(get(&addr, "GET", "/health", None).0, 200);
    for (method, path) in [
        ("GET", "/v1/models"),
        ("GET", "/get_model_info"),
        ("POST", "/update_weights_from_disk"),
    ] {
        assert_eq!(get(&addr, method, path, None).0, 401, "{path}");
        assert_eq!(get(&addr, method, path, Some("wrong")).0, 401, "{path}");
    }
    assert_eq!(get(&addr, "GET", "/v1/models", Some("sesame")).0, 200);
    assert_eq!(post_json(&addr, "/v1/completions", GOOD, None).0, 401);
    assert_eq!(
        post_json(&addr, "/v1/completions", GOOD, Some("sesame")).0,
        200
    );
    // The remote generator without the key is refused, with it generates.
    assert!(remote(&s, vec![addr.clone()], Backend::Vllm, "toy").is_err());
    let stop = rlvr::generator::eos_ids(s.model.config(), &s.tokenizer);
    let mut keyed = settings(vec![addr], Backend::Vllm, "toy", &s.sync_dir);
    keyed.api_key = Some("sesame".into());
    let mut g = RemoteGenerator::connect(keyed, s.tokenizer.clone(), s.envs.clone(), stop).unwrap();
    let want = embedded(&s).generate(&groups(), &sampling(), 11).unwrap();
    assert_same(&want, &g.generate(&groups(), &sampling(), 11).unwrap());
    // Beyond loopback, no key and no explicit opt-out: refused.
    let mut open = options(&s.model_dir, "toy");
    open.bind = "0.0.0.0:0".into();
    let err = Server::start(&open).err().unwrap();
    assert!(format!("{err:#}").contains("--api-key"), "{err:#}");
}

#[test]
fn slow_clients_hold_no_worker_and_time_out() {
    use std::io::Write;
    let s = setup();
    let mut opts = options(&s.model_dir, "toy");
    opts.limits.read_timeout = Duration::from_secs(2);
    let addr = serve_with(&opts);
    // 200 clients that send half a head or half a body and then nothing.
    let stalled: Vec<std::net::TcpStream> = (0..200)
        .map(|i| {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            let part: &[u8] = if i % 2 == 0 {
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
            } else {
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mo"
            };
            c.write_all(part).unwrap();
            c
        })
        .collect();
    let t = std::time::Instant::now();
    assert_eq!(get(&addr, "GET", "/health", None).0, 200);
    assert_eq!(post_json(&addr, "/v1/completions", GOOD, None).0, 200);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // The stalled body is answered 408 once the read timeout passes; stalled heads are closed.
    let mut c = stalled.into_iter().nth(1).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut c, &mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `rlvr serve` as a process: 16 clients × 500 requests, one in ten hostile. Every valid
/// request gets the right answer, the server survives, its memory returns to where it was.
#[test]
fn load_with_hostile_requests_mixed_in() {
    use std::io::BufRead;
    let s = setup();
    /// Kills the server however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(["serve", "--model"])
        .arg(&s.model_dir)
        .args([
            "--served-model-name",
            "toy",
            "--port",
            "0",
            "--max-body-bytes",
            "1000000",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = Killed(child);
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("rlvr serve printed its address")
            .unwrap();
        if let Some(rest) = line.split("on http://").nth(1) {
            break rest.trim().to_string();
        }
    };
    // Keep draining the server's log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let pid = child.0.id();
    let prompt = |k: usize| {
        format!(
            r#"{{"model": "toy", "prompt": [{}, 4], "max_tokens": 6, "temperature": 0.0}}"#,
            3 + k % 8
        )
    };
    let expected: Vec<String> = (0..8)
        .map(|k| {
            let (status, body) = post_json(&addr, "/v1/completions", &prompt(k), None);
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
    let hostile = [
        r#"{"model": "toy", "prompt": [3], "max_tokens": 18446744073709551615}"#.to_string(),
        r#"{"model": "toy", "prompt": [3], "n": 1000000000}"#.into(),
        r#"{"model": "toy", "prompt": [99999]}"#.into(),
        r#"{"model": "toy", "prompt": "#.into(),
        format!(
            r#"{{"model": "toy", "prompt": "{}"}}"#,
            "q1 ".repeat(100_000)
        ),
    ];
    // One burst: `per_client` requests from each of 16 clients; latencies of the valid ones.
    let burst = |per_client: usize| -> Vec<f64> {
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..16)
                .map(|c| {
                    let (addr, expected, hostile, prompt) = (&addr, &expected, &hostile, &prompt);
                    sc.spawn(move || {
                        let mut lat = Vec::new();
                        for i in 0..per_client {
                            let k = c * per_client + i;
                            let t = std::time::Instant::now();
                            if k % 10 == 7 {
                                let body = &hostile[k % hostile.len()];
                                let (status, text) = post_json(addr, "/v1/completions", body, None);
                                assert!((400..500).contains(&status), "{status}: {text}");
                            } else {
                                let (status, text) =
                                    post_json(addr, "/v1/completions", &prompt(k), None);
                                assert_eq!(status, 200, "{text}");
                                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                                assert_eq!(v["choices"][0]["text"], expected[k % 8].as_str());
                                lat.push(t.elapsed().as_secs_f64());
                            }
                        }
                        lat
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        })
    };
    // The starting point is a warm server: worker threads started, allocator pools filled.
    burst(50);
    std::thread::sleep(Duration::from_secs(1));
    let start_rss = rss_kib(pid);
    let (clients, per_client) = (16, 500);
    let t0 = std::time::Instant::now();
    let latencies = burst(per_client);
    let wall = t0.elapsed().as_secs_f64();
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p) as usize] * 1e3;
    // Memory settles once the allocator has returned the burst's buffers.
    std::thread::sleep(Duration::from_secs(1));
    let end_rss = rss_kib(pid);
    eprintln!(
        "load: {} requests ({} valid) in {wall:.1} s, valid latency p50 {:.1} ms p99 {:.1} ms, RSS {} -> {} MiB",
        clients * per_client,
        latencies.len(),
        q(0.5),
        q(0.99),
        start_rss / 1024,
        end_rss / 1024
    );
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the server is still up"
    );
    assert_eq!(get(&addr, "GET", "/health", None).0, 200);
    assert!(
        (end_rss as f64) <= start_rss as f64 * 1.2,
        "RSS {start_rss} KiB -> {end_rss} KiB"
    );
    drop(child);
}
