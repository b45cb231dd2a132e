//! The remote client's requests and response parsing against example payloads recorded from the
//! vLLM and SGLang documentation and sources (tests/fixtures/remote/README.md names each source
//! and version): field names exactly as documented.

use rlvr::generator::remote::engine::{
    error_message, parse_sglang, parse_vllm, sglang_request, vllm_request,
};
use rlvr::protocol::{sglang, vllm};
use rlvr_model::engine::{FinishReason, SamplingParams};
use serde_json::Value;
use std::collections::BTreeSet;

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/remote")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// The documented request's sampling settings.
fn params() -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        min_p: 0.0,
        max_tokens: 8,
        seed: Some(1234),
        stop_token_ids: vec![151645],
        stop: vec![],
    }
}

const PROMPT: [u32; 5] = [785, 6722, 315, 9625, 374];

#[test]
fn vllm_request_uses_documented_fields_and_values() {
    let doc = fixture("vllm_completions_request.json");
    let ours = serde_json::to_value(vllm_request("Qwen/Qwen2.5-0.5B", &PROMPT, &params())).unwrap();
    let extra: Vec<_> = keys(&ours).difference(&keys(&doc)).cloned().collect();
    assert!(extra.is_empty(), "fields vLLM does not document: {extra:?}");
    // Same meaning where we agree with the example; where we differ it is on purpose: the
    // sampled token's log-prob only (0), the stop string kept and special tokens kept in the text
    // (the token ids are what the trainer uses).
    for k in [
        "model",
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "n",
        "stop_token_ids",
        "return_tokens_as_token_ids",
        "return_token_ids",
    ] {
        assert_eq!(ours[k], doc[k], "{k}");
    }
    assert_eq!(ours["logprobs"], 0);
    assert_eq!(ours["include_stop_str_in_output"], true);
    assert_eq!(ours["skip_special_tokens"], false);
    // The documented request parses into the type `rlvr serve` reads.
    let r: vllm::CompletionRequest = serde_json::from_value(doc).unwrap();
    assert_eq!(r.prompt, Some(vllm::Prompt::Tokens(PROMPT.to_vec())));
    assert_eq!(r.stop, Some(vllm::Stop::Many(vec![])));
}

#[test]
fn vllm_response_gives_token_ids_logprobs_and_finish_reason() {
    let doc = fixture("vllm_completions_response.json");
    let r: vllm::CompletionResponse = serde_json::from_value(doc.clone()).unwrap();
    let c = parse_vllm(r).unwrap();
    assert_eq!(c.token_ids, vec![12095, 13, 151645]);
    assert_eq!(c.logprobs, vec![-0.3185, -0.9152, -0.0871]);
    assert_eq!(c.finish_reason, FinishReason::Stop);
    // stop_reason is the stop token id here, not a stop string.
    assert_eq!(c.stop_string, None);

    // Servers older than v0.10.2 ignore return_token_ids: the ids come from `token_id:N`.
    let mut old = doc.clone();
    old["choices"][0]
        .as_object_mut()
        .unwrap()
        .remove("token_ids");
    let c = parse_vllm(serde_json::from_value(old).unwrap()).unwrap();
    assert_eq!(c.token_ids, vec![12095, 13, 151645]);

    // A length-capped choice with a stop string elsewhere in the batch.
    let mut cut = doc.clone();
    cut["choices"][0]["finish_reason"] = "length".into();
    cut["choices"][0]["stop_reason"] = Value::Null;
    assert_eq!(
        parse_vllm(serde_json::from_value(cut).unwrap())
            .unwrap()
            .finish_reason,
        FinishReason::Length
    );
    let mut stop_str = doc.clone();
    stop_str["choices"][0]["stop_reason"] = "\n\n".into();
    assert_eq!(
        parse_vllm(serde_json::from_value(stop_str).unwrap())
            .unwrap()
            .stop_string
            .as_deref(),
        Some("\n\n")
    );

    // An aborted request is an error, not a silently short response.
    let mut aborted = doc.clone();
    aborted["choices"][0]["finish_reason"] = "abort".into();
    let e = parse_vllm(serde_json::from_value(aborted).unwrap()).unwrap_err();
    assert!(e.to_string().contains("abort"), "{e}");

    // Without log-probs the response is unusable for RL, and says so.
    let mut no_lp = doc;
    no_lp["choices"][0]["logprobs"] = Value::Null;
    let e = parse_vllm(serde_json::from_value(no_lp).unwrap()).unwrap_err();
    assert!(e.to_string().contains("logprobs"), "{e}");
}

#[test]
fn vllm_models_weight_reload_and_errors() {
    let m: vllm::ModelList = serde_json::from_value(fixture("vllm_models_response.json")).unwrap();
    assert_eq!(m.data[0].id, "Qwen/Qwen2.5-0.5B");
    assert_eq!(m.data[0].max_model_len, Some(32768));
    let rpc = vllm::CollectiveRpcRequest {
        method: "reload_weights".into(),
        args: None,
        kwargs: None,
        timeout: None,
    };
    assert_eq!(
        serde_json::to_value(&rpc).unwrap(),
        fixture("vllm_collective_rpc_reload_weights_request.json")
    );
    let _: Value = fixture("vllm_collective_rpc_reload_weights_response.json");
    // Both error shapes (v0.10.1+ nested, older flat) give the message.
    let expect = "This model's maximum context length is 32768 tokens.";
    for f in [
        "vllm_error_response.json",
        "vllm_error_response_legacy.json",
    ] {
        let body = fixture(f).to_string();
        assert!(error_message(&body).starts_with(expect), "{f}");
    }
    let e: vllm::ErrorResponse =
        serde_json::from_value(fixture("vllm_error_response.json")).unwrap();
    assert_eq!(
        (e.error.code, e.error.kind.as_str()),
        (400, "BadRequestError")
    );
}

#[test]
fn sglang_request_uses_documented_fields_and_values() {
    let doc = fixture("sglang_generate_request.json");
    let ours = serde_json::to_value(sglang_request(&PROMPT, &params())).unwrap();
    let extra: Vec<_> = keys(&ours).difference(&keys(&doc)).cloned().collect();
    assert!(
        extra.is_empty(),
        "fields SGLang does not document: {extra:?}"
    );
    let (sp, doc_sp) = (&ours["sampling_params"], &doc["sampling_params"]);
    let extra: Vec<_> = keys(sp).difference(&keys(doc_sp)).cloned().collect();
    assert!(
        extra.is_empty(),
        "sampling params SGLang does not document: {extra:?}"
    );
    assert_eq!(ours["input_ids"], doc["input_ids"]);
    assert_eq!(ours["return_logprob"], true);
    for k in [
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "max_new_tokens",
        "stop_token_ids",
        "no_stop_trim",
        "sampling_seed",
    ] {
        assert_eq!(sp[k], doc_sp[k], "{k}");
    }
    let r: sglang::GenerateRequest = serde_json::from_value(doc).unwrap();
    assert_eq!(r.sampling_params.sampling_seed, Some(1234));
    assert_eq!(r.rid.as_deref(), Some("rollout-0-0"));
}

#[test]
fn sglang_response_weight_reload_and_version() {
    let doc = fixture("sglang_generate_response.json");
    let c = parse_sglang(serde_json::from_value(doc.clone()).unwrap()).unwrap();
    assert_eq!(c.token_ids, vec![12095, 13, 151645]);
    assert_eq!(c.logprobs, vec![-0.3185, -0.9152, -0.0871]);
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert_eq!(c.stop_string, None, "matched is a token id");
    let mut cut = doc.clone();
    cut["meta_info"]["finish_reason"] = serde_json::json!({"type": "length", "length": 3});
    assert_eq!(
        parse_sglang(serde_json::from_value(cut).unwrap())
            .unwrap()
            .finish_reason,
        FinishReason::Length
    );
    let mut disagree = doc;
    disagree["output_ids"] = serde_json::json!([1, 2, 3]);
    assert!(parse_sglang(serde_json::from_value(disagree).unwrap()).is_err());

    let req: sglang::UpdateWeightsFromDiskRequest =
        serde_json::from_value(fixture("sglang_update_weights_from_disk_request.json")).unwrap();
    assert_eq!(req.weight_version.as_deref(), Some("step_10"));
    let ours = serde_json::to_value(sglang::UpdateWeightsFromDiskRequest {
        model_path: "/sync".into(),
        load_format: None,
        weight_version: Some("3".into()),
    })
    .unwrap();
    let doc_keys = keys(&fixture("sglang_update_weights_from_disk_request.json"));
    assert!(keys(&ours).is_subset(&doc_keys));
    let ok: sglang::UpdateWeightsFromDiskResponse =
        serde_json::from_value(fixture("sglang_update_weights_from_disk_response.json")).unwrap();
    assert!(ok.success);
    let failed: sglang::UpdateWeightsFromDiskResponse = serde_json::from_value(fixture(
        "sglang_update_weights_from_disk_failure_response.json",
    ))
    .unwrap();
    assert!(!failed.success && failed.message.contains("repository not found"));
    let v: sglang::WeightVersion =
        serde_json::from_value(fixture("sglang_weight_version_response.json")).unwrap();
    assert_eq!(v.weight_version, "step_10");
    let info: sglang::ModelInfo =
        serde_json::from_value(fixture("sglang_model_info_response.json")).unwrap();
    assert_eq!(info.model_path, "Qwen/Qwen2.5-0.5B");
    let set: vllm::UpdateWeightVersionRequest =
        serde_json::from_value(fixture("sglang_update_weight_version_request.json")).unwrap();
    assert_eq!(set.new_version, "step_10");
    assert!(
        error_message(&fixture("sglang_generate_error_response.json").to_string())
            .contains("longer than the model's context length")
    );
}
