use super::*;
use crate::model::testing::tiny_model;
use candle_core::{Tensor, D};

fn req(prompt: &[u32], t: f64, max_tokens: usize, seed: u64) -> Request {
    Request {
        prompt: prompt.to_vec(),
        params: SamplingParams {
            temperature: t,
            max_tokens,
            seed: Some(seed),
            ..Default::default()
        },
    }
}

fn engine(model: &Model, max_batch: usize) -> Engine<'_> {
    Engine::new(
        model,
        EngineConfig {
            max_batch,
            ..Default::default()
        },
    )
}

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    let model = tiny_model(false, true, 11);
    let e = engine(&model, 4);
    let a = e.generate(&[req(&[1, 2, 3], 1.0, 20, 5)]).unwrap();
    let b = e.generate(&[req(&[1, 2, 3], 1.0, 20, 5)]).unwrap();
    let c = e.generate(&[req(&[1, 2, 3], 1.0, 20, 6)]).unwrap();
    assert_eq!(a, b);
    assert_ne!(a[0].token_ids, c[0].token_ids);
}

#[test]
fn greedy_is_argmax_of_full_forward_with_raw_logprobs() {
    let model = tiny_model(true, false, 12);
    let prompt = [7u32, 3, 22, 9];
    let out = engine(&model, 2)
        .generate(&[req(&prompt, 0.0, 12, 0)])
        .unwrap()
        .remove(0);
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(out.token_ids.len(), 12);
    let all: Vec<u32> = prompt.iter().chain(&out.token_ids).copied().collect();
    let n = all.len();
    let ids = Tensor::from_vec(all.clone(), (1, n), model.device()).unwrap();
    let mask = ids.ones_like().unwrap();
    let logits = model
        .forward_logits(&ids, &mask, false)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (k, (&tok, &lp)) in out.token_ids.iter().zip(&out.logprobs).enumerate() {
        let row = &lsm[prompt.len() - 1 + k];
        assert_eq!(tok as usize, sampling::argmax(row), "token {k}");
        assert!((row[tok as usize] - lp).abs() < 1e-4, "logprob {k}");
    }
}

#[test]
fn stop_token_ids_strings_and_max_tokens() {
    let model = tiny_model(false, true, 13);
    let e = engine(&model, 3);
    let free = e.generate(&[req(&[5, 6], 0.0, 10, 0)]).unwrap().remove(0);
    // Stop on the id greedy decoding produces third (first occurrence wins).
    let stop_id = free.token_ids[2];
    let first = free.token_ids.iter().position(|&t| t == stop_id).unwrap();
    let mut r = req(&[5, 6], 0.0, 10, 0);
    r.params.stop_token_ids = vec![stop_id];
    let out = e.generate(&[r]).unwrap().remove(0);
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.token_ids, free.token_ids[..=first]);
    assert_eq!(out.stop_string, None);
    // Stop string spanning two tokens.
    let e = engine(&model, 3)
        .with_detokenizer(|ids: &[u32]| ids.iter().map(|i| format!("<{i}>")).collect());
    let mut r = req(&[5, 6], 0.0, 10, 0);
    let target = format!("{}><{}", free.token_ids[3], free.token_ids[4]);
    r.params.stop = vec![target.clone(), "never".into()];
    let out = e.generate(&[r]).unwrap().remove(0);
    let text: String = free.token_ids.iter().map(|i| format!("<{i}>")).collect();
    let at = text.find(&target).unwrap();
    let want_len = free
        .token_ids
        .iter()
        .scan(0, |n, i| {
            *n += format!("<{i}>").len();
            Some(*n)
        })
        .position(|n| n >= at + target.len())
        .unwrap()
        + 1;
    assert_eq!(
        (out.finish_reason, out.token_ids.len()),
        (FinishReason::Stop, want_len)
    );
    assert_eq!(out.stop_string.as_deref(), Some(target.as_str()));
    // Length.
    let out = engine(&model, 1)
        .generate(&[req(&[5, 6], 1.0, 4, 1), req(&[5], 1.0, 0, 1)])
        .unwrap();
    assert_eq!(
        (out[0].finish_reason, out[0].token_ids.len()),
        (FinishReason::Length, 4)
    );
    assert_eq!(
        (out[1].finish_reason, out[1].token_ids.len()),
        (FinishReason::Length, 0)
    );
}

#[test]
fn stop_strings_need_a_detokenizer() {
    let model = tiny_model(false, true, 13);
    let mut r = req(&[5, 6], 0.0, 10, 0);
    r.params.stop = vec!["x".into()];
    let err = engine(&model, 1).generate(&[r]).unwrap_err().to_string();
    assert!(err.contains("detokenizer"), "{err}");
}

#[test]
fn continuous_batching_matches_running_alone() {
    let model = tiny_model(true, true, 14);
    let mut reqs = vec![
        req(&[1, 2, 3, 4, 5], 1.0, 9, 1),
        req(&[9], 0.7, 3, 2),
        req(&[4, 4], 0.0, 14, 3),
        req(&[30, 31, 32], 1.3, 6, 4),
        req(&[60, 2, 18, 40, 41, 42, 43], 1.0, 11, 5),
        req(&[8, 8, 8], 1.0, 5, 6),
    ];
    reqs[3].params.top_k = 5;
    reqs[4].params.top_p = 0.9;
    reqs[5].params.min_p = 0.05;
    let stop_from = engine(&model, 1).generate(&reqs[..1]).unwrap();
    reqs[0].params.stop_token_ids = vec![stop_from[0].token_ids[4]];
    let together = engine(&model, 3).generate(&reqs).unwrap();
    for (i, r) in reqs.iter().enumerate() {
        let alone = engine(&model, 1)
            .generate(std::slice::from_ref(r))
            .unwrap()
            .remove(0);
        assert_eq!(together[i].token_ids, alone.token_ids, "request {i}");
        assert_eq!(
            together[i].finish_reason, alone.finish_reason,
            "request {i}"
        );
        for (a, b) in together[i].logprobs.iter().zip(&alone.logprobs) {
            assert!((a - b).abs() < 1e-5, "request {i}: {a} vs {b}");
        }
    }
    assert_eq!(together[0].finish_reason, FinishReason::Stop);
}

#[test]
fn a_shared_prompt_is_prefilled_once_with_the_same_results() {
    let model = tiny_model(true, true, 15);
    // GRPO-style: samples of one prompt next to each other, another prompt in between, and a
    // prompt that is a prefix of another (must not share: its last logits differ).
    let prompts: [&[u32]; 7] = [
        &[7, 3, 9, 1],
        &[7, 3, 9, 1],
        &[7, 3, 9, 1],
        &[5, 5],
        &[7, 3, 9, 1],
        &[7, 3, 9],
        &[5, 5],
    ];
    let reqs: Vec<Request> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| req(p, 1.0, 10, 100 + i as u64))
        .collect();
    let together = engine(&model, 4).generate(&reqs).unwrap();
    for (i, r) in reqs.iter().enumerate() {
        let alone = engine(&model, 1)
            .generate(std::slice::from_ref(r))
            .unwrap()
            .remove(0);
        assert_eq!(together[i].token_ids, alone.token_ids, "request {i}");
        for (a, b) in together[i].logprobs.iter().zip(&alone.logprobs) {
            assert!((a - b).abs() < 1e-5, "request {i}: {a} vs {b}");
        }
    }
    // Different seeds on a shared prompt still give different samples.
    assert_ne!(together[0].token_ids, together[1].token_ids);
}

#[test]
fn bf16_weights_decode_close_to_f32() {
    if !crate::model::bf16_decode_supported() {
        eprintln!("note: no AVX-512 here, bf16 decoding not exercised");
        return;
    }
    let model = tiny_model(true, false, 16);
    let reqs = vec![
        req(&[3, 1, 4, 1, 5], 0.0, 12, 1),
        req(&[9, 2, 6], 0.0, 12, 2),
    ];
    let f32_out = engine(&model, 2).generate(&reqs).unwrap();
    let mut cfg = EngineConfig {
        max_batch: 2,
        weights: DType::BF16,
        ..Default::default()
    };
    let bf16_out = Engine::new(&model, cfg.clone()).generate(&reqs).unwrap();
    let mut max = 0f32;
    for (a, b) in f32_out.iter().zip(&bf16_out) {
        for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
            max = max.max((x - y).abs());
        }
    }
    // Rounding the weights moves the log-probs, a little.
    assert!(max > 0.0 && max < 0.05, "max log-prob difference {max}");
    cfg.weights = DType::F16;
    assert!(Engine::new(&model, cfg).generate(&reqs).is_err());
}
