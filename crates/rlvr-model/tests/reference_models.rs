//! End-to-end checks against Hugging Face transformers on real GGUF checkpoints, one `#[test]` per
//! model, all through one harness over the model's reference cases (`tests/data/*_reference.json`,
//! produced by transformers from the same GGUF dequantized to f32):
//! - the loaded config and tokenizer have the model's known facts;
//! - token ids of every `encode` text and `chat` prompt are identical (and decode back);
//! - logits of the reference's top-5 ids (last position and sampled positions) within 1e-3, and the
//!   argmax identical at each of them;
//! - the log-prob of every next prompt token within 1e-3;
//! - greedy 32-token continuations through the KV cache identical;
//! - optionally, the HF directory `save_hf` writes loads back bit for bit, same tokenizer.
//!
//! The GGUFs come from `scripts/fetch_assets.sh --qwen` (see `common/assets.rs` for where they are
//! looked up, and why a missing one fails under CI and skips elsewhere). `RLVR_TEST_DEVICE=cuda`
//! runs the decoder checks on the GPU (a build with `--features cuda`).

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::assets;
use rlvr_model::{load_pretrained, ChatMessage, KvCache, Model, Pretrained};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    kind: String,
    text: Option<String>,
    ids: Option<Vec<u32>>,
    messages: Option<Vec<ChatMessage>>,
    prompt_text: Option<String>,
    prompt_ids: Option<Vec<u32>>,
    last_position_top5_ids: Option<Vec<u32>>,
    last_position_top5_logits: Option<Vec<f32>>,
    positions_sampled: Option<Vec<usize>>,
    logits_at_positions_top5_ids: Option<Vec<Vec<u32>>>,
    logits_at_positions_top5_values: Option<Vec<Vec<f32>>>,
    logprob_of_next_prompt_token: Option<Vec<f32>>,
    greedy_32_ids: Option<Vec<u32>>,
    greedy_32_text: Option<String>,
}

/// What one model's check needs: where its GGUF and reference are, and the facts its loaded
/// config and tokenizer must have.
struct ModelSpec {
    name: &'static str,
    /// Relative to the asset directory.
    gguf: &'static str,
    /// File name in `tests/data/`.
    reference: &'static str,
    model_type: &'static str,
    /// (layers, hidden, FFN, heads, KV heads, head dim)
    shape: (usize, usize, usize, usize, usize, usize),
    vocab_size: usize,
    rms_norm_eps: f64,
    rope_theta: f64,
    max_position_embeddings: usize,
    tie_word_embeddings: bool,
    qkv_bias: bool,
    num_parameters: usize,
    /// (bos, eos, pad, unk) as the tokenizer reports them.
    special_ids: (Option<u32>, Option<u32>, Option<u32>, Option<u32>),
    /// (encode, chat) cases the reference holds.
    cases: (usize, usize),
    /// Export to an HF directory and load it back (writes the f32 weights to a temp dir).
    hf_roundtrip: bool,
}

const TOL: f32 = 1e-3;

#[test]
fn smollm2_135m_instruct_matches_transformers() {
    check_model(&ModelSpec {
        name: "SmolLM2-135M-Instruct",
        gguf: assets::SMOLLM2_GGUF,
        reference: "smollm2_reference.json",
        model_type: "llama",
        shape: (30, 576, 1536, 9, 3, 64),
        vocab_size: 49152,
        rms_norm_eps: 1e-5,
        rope_theta: 100_000.0,
        max_position_embeddings: 8192,
        tie_word_embeddings: true,
        qkv_bias: false,
        num_parameters: 134_515_008,
        special_ids: (Some(1), Some(2), Some(2), Some(0)),
        cases: (2, 3),
        hf_roundtrip: true,
    });
}

#[test]
fn qwen2_5_coder_0_5b_instruct_matches_transformers() {
    check_model(&ModelSpec {
        name: "Qwen2.5-Coder-0.5B-Instruct",
        gguf: assets::QWEN_CODER_GGUF,
        reference: "qwen2.5-coder-0.5b_reference.json",
        model_type: "qwen2",
        shape: (24, 896, 4864, 14, 2, 64),
        vocab_size: 151_936,
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        max_position_embeddings: 32768,
        tie_word_embeddings: false,
        qkv_bias: true,
        num_parameters: 630_167_424,
        special_ids: (Some(151_643), Some(151_645), Some(151_643), None),
        cases: (2, 3),
        hf_roundtrip: true,
    });
}

fn check_model(spec: &ModelSpec) {
    let Some(path) = assets::asset(spec.gguf) else {
        return;
    };
    let started = std::time::Instant::now();
    let name = spec.name;
    let reference = reference(spec.reference);
    let pre = load_pretrained(&path, &Device::Cpu).unwrap();
    check_facts(spec, &pre);
    check_tokenizer(spec, &pre, &reference);
    eprintln!(
        "{name}: loaded, facts and tokenizer checked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    check_decoder(spec, &pre, &reference);
    eprintln!(
        "{name}: decoder checked at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if spec.hf_roundtrip {
        check_hf_roundtrip(spec, &pre, &reference);
        eprintln!(
            "{name}: HF export round trip checked at {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

fn reference(file: &str) -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the reference is in the repo)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn test_device() -> Device {
    let spec = std::env::var("RLVR_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    rlvr_model::parse_device(&spec).unwrap()
}

fn check_facts(spec: &ModelSpec, pre: &Pretrained) {
    let c = &pre.config;
    let name = spec.name;
    assert_eq!(c.model_type, spec.model_type, "{name}: model type");
    assert_eq!(
        (
            c.num_hidden_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_attention_heads,
            c.num_kv_heads(),
            c.head_dim()
        ),
        spec.shape,
        "{name}: (layers, hidden, FFN, heads, KV heads, head dim)"
    );
    assert_eq!(
        (c.vocab_size, c.rms_norm_eps, c.rope_theta),
        (spec.vocab_size, spec.rms_norm_eps, spec.rope_theta),
        "{name}: (vocab, RMSNorm eps, rope theta)"
    );
    assert_eq!(
        c.max_position_embeddings, spec.max_position_embeddings,
        "{name}: context"
    );
    assert_eq!(
        (c.tie_word_embeddings, c.qkv_bias()),
        (spec.tie_word_embeddings, spec.qkv_bias),
        "{name}: (tied output head, q/k/v biases)"
    );
    assert_eq!(
        pre.num_parameters(),
        spec.num_parameters,
        "{name}: parameters"
    );
    let tok = &pre.tokenizer;
    assert_eq!(
        (
            tok.bos_token_id(),
            tok.eos_token_id(),
            tok.pad_token_id(),
            tok.unk_token_id()
        ),
        spec.special_ids,
        "{name}: (bos, eos, pad, unk)"
    );
}

fn check_tokenizer(spec: &ModelSpec, pre: &Pretrained, reference: &Reference) {
    let tok = &pre.tokenizer;
    let name = spec.name;
    let (mut encode_ok, mut chat_ok) = (0, 0);
    for case in &reference.cases {
        match case.kind.as_str() {
            "encode" => {
                let (text, ids) = (case.text.as_ref().unwrap(), case.ids.as_ref().unwrap());
                assert_eq!(&tok.encode(text, false).unwrap(), ids, "{name}: {text:?}");
                // add_bos_token is false for both models: special tokens add nothing.
                assert_eq!(&tok.encode(text, true).unwrap(), ids, "{name}: {text:?}");
                assert_eq!(&tok.decode(ids, false).unwrap(), text, "{name}");
                encode_ok += 1;
            }
            "chat" => {
                let messages = case.messages.as_ref().unwrap();
                let text = tok.apply_chat_template(messages, true).unwrap();
                assert_eq!(&text, case.prompt_text.as_ref().unwrap(), "{name}");
                let ids = tok.apply_chat_template_ids(messages, true).unwrap();
                assert_eq!(&ids, case.prompt_ids.as_ref().unwrap(), "{name}");
                assert_eq!(tok.decode(&ids, false).unwrap(), text, "{name}");
                let greedy = case.greedy_32_ids.as_ref().unwrap();
                assert_eq!(
                    &tok.decode(greedy, true).unwrap(),
                    case.greedy_32_text.as_ref().unwrap(),
                    "{name}: decoded greedy continuation"
                );
                chat_ok += 1;
            }
            other => panic!("{name}: unknown reference case kind {other}"),
        }
    }
    eprintln!("{name}: {encode_ok} encode cases, {chat_ok} chat prompts, {chat_ok} greedy decodes: token ids identical");
    assert_eq!(
        (encode_ok, chat_ok),
        spec.cases,
        "{name}: (encode, chat) cases"
    );
}

/// Logits, log-probs and greedy continuations through the decoder, for every chat case.
fn check_decoder(spec: &ModelSpec, pre: &Pretrained, reference: &Reference) {
    let name = spec.name;
    let device = test_device();
    let model = Model::from_tensors(&pre.config, &pre.tensors, &device).unwrap();
    eprintln!("{name}: decoder on {}", rlvr_model::device_name(&device));
    let (mut max_logit, mut max_logprob, mut greedy_same) = (0f32, 0f32, 0);
    let chats: Vec<&Case> = reference
        .cases
        .iter()
        .filter(|c| c.kind == "chat")
        .collect();
    for (i, case) in chats.iter().enumerate() {
        let ids = case.prompt_ids.as_ref().unwrap();
        let rows = logits(&model, ids);
        let last = ids.len() - 1;
        let top = top5(&rows[last]);
        assert_eq!(
            &top,
            case.last_position_top5_ids.as_ref().unwrap(),
            "{name}: chat case {i}, top-5 ids at the last position"
        );
        for (id, want) in top
            .iter()
            .zip(case.last_position_top5_logits.as_ref().unwrap())
        {
            max_logit = max_logit.max((rows[last][*id as usize] - want).abs());
        }
        let sampled = case.positions_sampled.as_ref().unwrap();
        let sampled_ids = case.logits_at_positions_top5_ids.as_ref().unwrap();
        let sampled_vals = case.logits_at_positions_top5_values.as_ref().unwrap();
        assert_eq!(sampled.len(), sampled_ids.len());
        assert_eq!(sampled.len(), sampled_vals.len());
        for ((&p, want_ids), want_vals) in sampled.iter().zip(sampled_ids).zip(sampled_vals) {
            assert_eq!(
                top5(&rows[p])[0],
                want_ids[0],
                "{name}: chat case {i}, argmax at position {p}"
            );
            for (id, want) in want_ids.iter().zip(want_vals) {
                max_logit = max_logit.max((rows[p][*id as usize] - want).abs());
            }
        }
        let want_lp = case.logprob_of_next_prompt_token.as_ref().unwrap();
        assert_eq!(want_lp.len(), ids.len() - 1);
        for (t, want) in want_lp.iter().enumerate() {
            let row = &rows[t];
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            let lp = (row[ids[t + 1] as usize] as f64 - lse) as f32;
            max_logprob = max_logprob.max((lp - want).abs());
        }
        drop(rows);

        // Greedy decoding through the KV cache, as many tokens as the reference has (32).
        let want = case.greedy_32_ids.as_ref().unwrap();
        assert!(!want.is_empty() && want.len() <= 32);
        let mut cache =
            KvCache::new(&pre.config, 1, ids.len() + want.len(), DType::F32, &device).unwrap();
        let mut got = Vec::with_capacity(want.len());
        let mut next = model.forward_cached(&mut cache, 0, ids, 1).unwrap();
        loop {
            let row = next.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
            got.push(argmax(&row));
            if got.len() == want.len() {
                break;
            }
            next = model
                .forward_cached(&mut cache, 0, &got[got.len() - 1..], 1)
                .unwrap();
        }
        assert_eq!(
            &got,
            want,
            "{name}: chat case {i}, greedy continuation\n got: {:?}\nwant: {:?}",
            pre.tokenizer.decode(&got, true).unwrap(),
            case.greedy_32_text.as_ref().unwrap()
        );
        greedy_same += 1;
    }
    eprintln!("{name}: max |logit diff| {max_logit:.3e}, max |log-prob diff| {max_logprob:.3e}, {greedy_same}/{} greedy continuations identical", chats.len());
    assert!(max_logit < TOL, "{name}: max logit difference {max_logit}");
    assert!(
        max_logprob < TOL,
        "{name}: max log-prob difference {max_logprob}"
    );
}

/// The exported HF directory loads back bit for bit, with the same tokenizer.
fn check_hf_roundtrip(spec: &ModelSpec, pre: &Pretrained, reference: &Reference) {
    let name = spec.name;
    let dir = tempfile::tempdir().unwrap();
    let out: PathBuf = dir.path().join("hf");
    rlvr_model::save_hf(
        &out,
        &pre.config,
        &pre.tensors,
        &pre.tokenizer,
        pre.generation_config.as_ref(),
    )
    .unwrap();
    let back = load_pretrained(&out, &Device::Cpu).unwrap();
    assert_eq!(back.config, pre.config, "{name}");
    assert_eq!(back.tensors.len(), pre.tensors.len(), "{name}");
    for (tensor, t) in &pre.tensors {
        let same = t
            .eq(&back.tensors[tensor])
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let same = same.sum_all().unwrap().to_scalar::<f32>().unwrap() as usize;
        assert_eq!(same, t.elem_count(), "{name}: {tensor}");
    }
    for case in &reference.cases {
        if let Some(msgs) = &case.messages {
            let ids = back.tokenizer.apply_chat_template_ids(msgs, true).unwrap();
            assert_eq!(&ids, case.prompt_ids.as_ref().unwrap(), "{name}");
        } else {
            let ids = back
                .tokenizer
                .encode(case.text.as_ref().unwrap(), false)
                .unwrap();
            assert_eq!(&ids, case.ids.as_ref().unwrap(), "{name}");
        }
    }
}

fn logits(model: &Model, ids: &[u32]) -> Vec<Vec<f32>> {
    let input = Tensor::new(ids, model.device())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mask = Tensor::ones((1, ids.len()), DType::F32, model.device()).unwrap();
    let out = model.forward_logits(&input, &mask, false).unwrap();
    out.squeeze(0).unwrap().to_vec2::<f32>().unwrap()
}

/// The five largest entries, ties to the lower id.
fn top5(row: &[f32]) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    idx.truncate(5);
    idx
}

/// The first largest entry.
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in row.iter().enumerate() {
        if *x > row[best] {
            best = i;
        }
    }
    best as u32
}
