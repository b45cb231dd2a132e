use super::testing::*;
use super::*;
use crate::logprobs::LogProbOptions;

/// The sum of a tensor's elements, as f64.
fn total(t: &Tensor) -> f64 {
    t.sum_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Two rows: a left-padded short prompt and a full one, both followed by a right-padded response.
fn padded_batch(dev: &Device) -> (Tensor, Tensor) {
    let ids: Vec<u32> = vec![0, 0, 5, 9, 17, 3, 44, 0, 8, 1, 2, 60, 31, 7, 12, 50];
    let mask: Vec<u32> = vec![0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    (
        Tensor::from_vec(ids, (2, 8), dev).unwrap(),
        Tensor::from_vec(mask, (2, 8), dev).unwrap(),
    )
}

#[test]
fn missing_or_misshaped_tensor_is_named() {
    let cfg = tiny_config(false, true);
    let mut t = random_tensors(&cfg, 1, DType::F32);
    t.remove("model.layers.1.mlp.up_proj.weight");
    let err = Model::from_tensors(&cfg, &t, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");
    let mut t = random_tensors(&cfg, 1, DType::F32);
    t.insert(
        "model.norm.weight".into(),
        Tensor::zeros(31, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = Model::from_tensors(&cfg, &t, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.norm.weight") && err.contains("[31]"),
        "{err}"
    );
    let cfg = tiny_config(false, false);
    let mut t = random_tensors(&cfg, 1, DType::F32);
    t.remove("lm_head.weight");
    let err = format!(
        "{:#}",
        Model::from_tensors(&cfg, &t, &Device::Cpu).unwrap_err()
    );
    assert!(err.contains("lm_head.weight"), "{err}");
}

#[test]
fn named_vars_use_hf_names_and_tie_the_head() {
    let tied = tiny_model(false, true, 1);
    let untied = tiny_model(true, false, 1);
    let names: Vec<&str> = tied.named_vars().iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"model.layers.0.self_attn.q_proj.weight"));
    assert!(!names.contains(&"lm_head.weight"));
    // 1 embed + 2 layers x 9 + final norm.
    assert_eq!(names.len(), 1 + 2 * 9 + 1);
    let names: Vec<&str> = untied
        .named_vars()
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(
        names.contains(&"lm_head.weight")
            && names.contains(&"model.layers.1.self_attn.v_proj.bias")
    );
    assert_eq!(names.len(), 1 + 2 * 12 + 1 + 1);
}

#[test]
fn every_parameter_receives_a_gradient() {
    for (bias, tied) in [(false, true), (true, false)] {
        let model = tiny_model(bias, tied, 2);
        let (ids, mask) = padded_batch(model.device());
        let opts = LogProbOptions {
            entropy: true,
            temperature: 0.7,
            ..Default::default()
        };
        let out = model.response_logprobs(&ids, &mask, 3, &opts).unwrap();
        let loss =
            (out.logprobs.sum_all().unwrap() + out.entropy.unwrap().sum_all().unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in model.named_vars() {
            let g = grads
                .get(var)
                .unwrap_or_else(|| panic!("{name} got no gradient"));
            let n = total(&g.abs().unwrap());
            assert!(n > 0.0 && n.is_finite(), "{name}: |grad| = {n}");
        }
    }
}

#[test]
fn chunked_logprobs_match_full_log_softmax() {
    let model = tiny_model(true, false, 3);
    let (ids, mask) = padded_batch(model.device());
    let t = 0.8;
    let logits = model.forward_logits(&ids, &mask, false).unwrap();
    let r = 4;
    let want_lp = rlvr_algo::logprobs::log_probs_from_logits(
        &logits.narrow(1, 8 - r - 1, r).unwrap(),
        &ids.narrow(1, 8 - r, r).unwrap(),
        t,
    )
    .unwrap();
    let want_ent =
        rlvr_algo::logprobs::entropy_from_logits(&logits.narrow(1, 8 - r - 1, r).unwrap(), t)
            .unwrap();
    // Blocks of 3 rows by 24 of the 64 columns (so the last slice is partial), and whole.
    for (grad, chunk, cols) in [(true, 3, 24), (false, 1000, 4096)] {
        let opts = LogProbOptions {
            temperature: t,
            entropy: true,
            grad,
            chunk_rows: chunk,
            vocab_chunk: cols,
            ..Default::default()
        };
        let out = model.response_logprobs(&ids, &mask, r, &opts).unwrap();
        assert!(max_abs_diff(&out.logprobs, &want_lp) < 1e-5);
        assert!(max_abs_diff(out.entropy.as_ref().unwrap(), &want_ent) < 1e-5);
    }
}

#[test]
fn logprob_gradients_match_finite_differences() {
    let cfg = tiny_config(true, false);
    let tensors = random_tensors(&cfg, 4, DType::F64);
    let model = Model::from_tensors_with_dtype(&cfg, &tensors, &Device::Cpu, DType::F64).unwrap();
    let (ids, mask) = padded_batch(model.device());
    let opts = LogProbOptions {
        temperature: 0.9,
        entropy: true,
        grad: true,
        // Two whole rows of the 64 columns per chunk.
        chunk_rows: 2,
        vocab_chunk: 64,
        ..Default::default()
    };
    // A loss that weights every output differently, so sign or index mistakes show.
    let w = Tensor::arange(0f64, 6.0, model.device())
        .unwrap()
        .reshape((2, 3))
        .unwrap()
        .affine(0.3, -0.7)
        .unwrap();
    let loss = |m: &Model| -> Tensor {
        let o = m.response_logprobs(&ids, &mask, 3, &opts).unwrap();
        let e = o.entropy.unwrap();
        ((o.logprobs * &w).unwrap().sum_all().unwrap() + (e * 0.5).unwrap().sum_all().unwrap())
            .unwrap()
    };
    let grads = loss(&model).backward().unwrap();
    let checked = [
        "model.embed_tokens.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.bias",
        "model.layers.1.self_attn.v_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.1.mlp.gate_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
    ];
    for name in checked {
        let var = &model
            .named_vars()
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1;
        let g = grads
            .get(var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        // The embedding rows of tokens in the batch, otherwise a spread of entries.
        let idx: Vec<usize> = if name.contains("embed") {
            vec![5 * 32, 17 * 32 + 3, 44 * 32 + 31]
        } else {
            vec![0, base.len() / 3, base.len() - 1]
        };
        for i in idx {
            let eps = 1e-5;
            let mut plus = base.clone();
            plus[i] += eps;
            var.set(&Tensor::from_vec(plus, var.shape(), var.device()).unwrap())
                .unwrap();
            let lp = loss(&model).to_scalar::<f64>().unwrap();
            let mut minus = base.clone();
            minus[i] -= eps;
            var.set(&Tensor::from_vec(minus, var.shape(), var.device()).unwrap())
                .unwrap();
            let lm = loss(&model).to_scalar::<f64>().unwrap();
            var.set(&Tensor::from_vec(base.clone(), var.shape(), var.device()).unwrap())
                .unwrap();
            let fd = (lp - lm) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "{name}[{i}]: autograd {} vs finite difference {fd}",
                g[i]
            );
        }
    }
}

#[test]
fn kv_cached_decoding_matches_full_forward_with_left_padding() {
    let model = tiny_model(true, true, 5);
    let (ids, mask) = padded_batch(model.device());
    let full = model.forward_logits(&ids, &mask, false).unwrap();
    let ids_v = ids.to_vec2::<u32>().unwrap();
    let mask_v = mask.to_vec2::<u32>().unwrap();
    let toks: Vec<Vec<u32>> = (0..2)
        .map(|r| {
            ids_v[r]
                .iter()
                .zip(&mask_v[r])
                .filter(|(_, m)| **m == 1)
                .map(|(t, _)| *t)
                .collect()
        })
        .collect();
    let pads = [2usize, 0];
    // Prefill 3 tokens per row (one slot each), then decode both rows together, one token a step.
    let mut cache = model.new_cache(2, 16).unwrap();
    for r in 0..2 {
        let logits = model
            .forward_cached(&mut cache, r, &toks[r][..3], 1)
            .unwrap();
        let want = full.get(r).unwrap().get(pads[r] + 2).unwrap();
        assert!(max_abs_diff(&logits.squeeze(0).unwrap(), &want) < 1e-4);
    }
    // Row 1 is longer: give it a head start so the two slots hold different lengths.
    let l = model
        .forward_cached(&mut cache, 1, &toks[1][3..4], 1)
        .unwrap();
    assert!(
        max_abs_diff(
            &l.squeeze(0).unwrap(),
            &full.get(1).unwrap().get(3).unwrap()
        ) < 1e-4
    );
    for step in 0..2 {
        let t = [toks[0][3 + step], toks[1][4 + step]];
        let logits = model.forward_cached(&mut cache, 0, &t, 2).unwrap();
        for r in 0..2 {
            let pos = if r == 0 { pads[0] + 3 + step } else { 4 + step };
            let want = full.get(r).unwrap().get(pos).unwrap();
            let d = max_abs_diff(&logits.get(r).unwrap(), &want);
            assert!(d < 1e-4, "row {r} step {step}: {d}");
        }
    }
    assert_eq!((cache.len(0), cache.len(1)), (5, 6));
}

#[test]
fn moving_a_slot_keeps_its_sequence() {
    let model = tiny_model(false, true, 6);
    let mut cache = model.new_cache(3, 8).unwrap();
    model.forward_cached(&mut cache, 2, &[4, 8, 15], 1).unwrap();
    let a = model.forward_cached(&mut cache, 2, &[16], 1).unwrap();
    let mut other = model.new_cache(3, 8).unwrap();
    model.forward_cached(&mut other, 2, &[4, 8, 15], 1).unwrap();
    other.move_slot(2, 0).unwrap();
    assert_eq!((other.len(0), other.len(2)), (3, 0));
    let b = model.forward_cached(&mut other, 0, &[16], 1).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-6);
}

#[test]
fn reference_model_from_policy_tensors_does_not_follow_updates() {
    let policy = tiny_model(false, true, 7);
    let reference = Model::from_tensors(policy.config(), &policy.tensors(), &Device::Cpu).unwrap();
    let (ids, mask) = padded_batch(policy.device());
    let before = reference.forward_logits(&ids, &mask, false).unwrap();
    let w = &policy.named_vars()[0].1;
    w.set(&(w.as_tensor() * 2.0).unwrap()).unwrap();
    let after = reference.forward_logits(&ids, &mask, false).unwrap();
    assert_eq!(max_abs_diff(&before, &after), 0.0);
    let moved = policy.forward_logits(&ids, &mask, false).unwrap();
    assert!(max_abs_diff(&before, &moved) > 1e-3);
}

/// A tied tiny model with f32 weights on the CPU.
fn tiny_f32_model() -> (ModelConfig, Model) {
    let cfg = testing::tiny_config(true, true);
    let tensors = testing::random_tensors(&cfg, 3, DType::F32);
    let model = Model::from_tensors(&cfg, &tensors, &Device::Cpu).unwrap();
    (cfg, model)
}

/// Without gradients a layer hands on no graph (its ops on the weights record one, which would
/// keep every earlier layer's activations alive); with gradients it does.
#[test]
fn scoring_layers_hand_on_no_graph() {
    let (cfg, model) = tiny_f32_model();
    let (ids, _) = padded_batch(&Device::Cpu);
    let x = model.embed_tokens(&ids, None).unwrap();
    assert!(
        x.track_op(),
        "the embedding lookup records a graph on the weight"
    );
    let positions = Tensor::arange(0u32, 8, &Device::Cpu).unwrap();
    let positions = positions.unsqueeze(0).unwrap().repeat((2, 1)).unwrap();
    let (cos, sin) = model.rope.gather(&positions).unwrap();
    let dims = model.dims();
    let mask = Tensor::zeros((2, 1, 1, 8, 8), DType::F32, &Device::Cpu).unwrap();
    for grad in [false, true] {
        let y = model
            .layer_forward(
                &model.layers[0],
                &x,
                &cos,
                &sin,
                grad,
                Precision::F32,
                |q, k, v| ops::attention(q, k, v, &mask, dims, grad, Precision::F32),
            )
            .unwrap();
        assert_eq!(y.track_op(), grad, "grad={grad}");
        assert_eq!(y.dims(), [2, 8, cfg.hidden_size]);
    }
}

#[test]
fn decode_copy_stores_matrix_weights_in_bf16_and_keeps_the_rest() {
    let (cfg, model) = tiny_f32_model();
    let copy = model.decode_copy(DType::BF16).unwrap();
    // Packed for the CPU kernel where it runs (AVX-512), else plain bf16 tensors.
    let packed = crate::kernels::packed::available();
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let q = cfg.num_attention_heads * cfg.head_dim();
    let kv = cfg.num_kv_heads() * cfg.head_dim();
    for l in &copy.layers {
        if packed {
            for lin in [&l.o, &l.down] {
                let p = lin.packed.as_ref().expect("packed weights");
                assert_eq!(p.dims(), lin.weight.as_tensor().dims2().unwrap());
            }
            let f = l.fused.as_ref().expect("fused q/k/v and gate/up");
            assert_eq!(f.qkv.dims(), (q + 2 * kv, h));
            assert_eq!(f.gate_up.dims(), (2 * i, h));
        } else {
            for lin in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
                assert_eq!(lin.weight.dtype(), DType::BF16);
            }
        }
        assert_eq!(l.input_norm.dtype(), DType::F32);
    }
    if packed {
        assert!(copy.lm_head_packed.is_some());
    } else {
        assert_eq!(copy.lm_head_weight().dtype(), DType::BF16);
    }
    assert_eq!(copy.embed.dtype(), DType::F32);
    assert!(copy.named_vars().is_empty(), "not trainable");
}

/// A bf16 decoding copy's logits equal the f32 model's up to bf16 rounding of weights and
/// matrix inputs, and its KV-cached decoding agrees with its own full forward.
#[test]
fn bf16_decode_copy_logits_track_the_f32_model() {
    if !crate::model::bf16_decode_supported() {
        eprintln!("note: no AVX-512 here, bf16 decoding not exercised");
        return;
    }
    let (_, model) = tiny_f32_model();
    let copy = model.decode_copy(DType::BF16).unwrap();
    let tokens: Vec<u32> = vec![3, 1, 4, 1, 5, 9, 2, 6];
    let (mut c32, mut c16) = (
        model.new_cache(1, 16).unwrap(),
        copy.new_cache(1, 16).unwrap(),
    );
    let mut steps = Vec::new();
    for (from, to) in [(0, 6), (6, 7), (7, 8)] {
        let a = model
            .forward_cached(&mut c32, 0, &tokens[from..to], 1)
            .unwrap();
        let b = copy
            .forward_cached(&mut c16, 0, &tokens[from..to], 1)
            .unwrap();
        steps.push(b.clone());
        let d = max_abs_diff(&a, &b);
        let scale = max_abs_diff(&a, &a.zeros_like().unwrap());
        assert!(d > 0.0, "bf16 rounding should show");
        assert!(d < 0.05 * scale, "bf16 logits off by {d} (scale {scale})");
    }
    // Cached decoding equals a fresh prefill of the whole sequence in the copy itself.
    let mut fresh = copy.new_cache(1, 16).unwrap();
    let whole = copy.forward_cached(&mut fresh, 0, &tokens, 1).unwrap();
    let d = max_abs_diff(&whole, &steps[2]);
    assert!(d < 1e-4, "cached vs full: {d}");
}

/// An f32 decoding copy (packed for the CPU kernel where it runs) computes the model's own
/// logits: only the order of f32 sums differs. Its KV cache stays f32.
#[test]
fn f32_decode_copy_gives_the_models_logits() {
    let (_, model) = tiny_f32_model();
    let copy = model.decode_copy(DType::F32).unwrap();
    assert_eq!(copy.decoding_weights(), Some(DType::F32));
    assert_eq!(model.decoding_weights(), None);
    if crate::kernels::packed::available() {
        let p = copy.lm_head_packed.as_ref().expect("packed head");
        assert_eq!(p.dtype(), DType::F32);
        assert!(copy.layers.iter().all(|l| l.fused.is_some()));
    }
    let tokens: Vec<u32> = vec![3, 1, 4, 1, 5, 9, 2, 6];
    let (mut ca, mut cb) = (
        model.new_cache(2, 16).unwrap(),
        copy.new_cache(2, 16).unwrap(),
    );
    assert_eq!(cb.layer(0).0.dtype(), DType::F32);
    for (from, to) in [(0, 6), (6, 7), (7, 8)] {
        let a = model
            .forward_cached(&mut ca, 0, &tokens[from..to], 1)
            .unwrap();
        let b = copy
            .forward_cached(&mut cb, 0, &tokens[from..to], 1)
            .unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-4, "f32 copy logits off by {d}");
    }
}

/// The f32 path (CPU kernels for the vocabulary softmax and SwiGLU) against the f64 path
/// (composite tensor ops, checked against finite differences above): outputs and every gradient.
#[test]
fn f32_kernels_match_the_f64_path_in_outputs_and_gradients() {
    for (bias, tied) in [(true, false), (false, true)] {
        let cfg = tiny_config(bias, tied);
        let t64 = random_tensors(&cfg, 8, DType::F64);
        let m64 = Model::from_tensors_with_dtype(&cfg, &t64, &Device::Cpu, DType::F64).unwrap();
        let m32 = Model::from_tensors(&cfg, &t64, &Device::Cpu).unwrap();
        let opts = LogProbOptions {
            temperature: 0.8,
            entropy: true,
            grad: true,
            chunk_rows: 4,
            vocab_chunk: 24,
            ..Default::default()
        };
        let run = |m: &Model| {
            let (ids, mask) = padded_batch(m.device());
            let o = m.response_logprobs(&ids, &mask, 3, &opts).unwrap();
            let e = o.entropy.unwrap();
            let w = Tensor::new(&[[1.0f64, -0.5, 2.0], [0.3, 1.5, -1.0]], m.device())
                .unwrap()
                .to_dtype(m.dtype())
                .unwrap();
            let loss = ((&o.logprobs * &w).unwrap().sum_all().unwrap()
                + (&e * 0.7).unwrap().sum_all().unwrap())
            .unwrap();
            let g = loss.backward().unwrap();
            (o.logprobs, e, g)
        };
        let (lp64, e64, g64) = run(&m64);
        let (lp32, e32, g32) = run(&m32);
        let f64_of = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        assert!(max_abs_diff(&lp64, &f64_of(&lp32)) < 1e-5, "log-probs");
        assert!(max_abs_diff(&e64, &f64_of(&e32)) < 1e-5, "entropy");
        for ((name, v64), (_, v32)) in m64.named_vars().iter().zip(m32.named_vars()) {
            let (a, b) = (g64.get(v64).unwrap(), f64_of(g32.get(v32).unwrap()));
            let scale = max_abs(a);
            let d = max_abs_diff(a, &b);
            assert!(
                d <= 1e-4 * scale.max(1e-3),
                "{name}: {d:e} (scale {scale:e})"
            );
        }
    }
}

/// The CUDA path against the CPU path on the same tiny model: log-probs, entropies and every
/// parameter's gradient, KV-cached decoding, greedy generation and an AdamW step. Built only with
/// `--features cuda`, and needs a GPU.
#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use crate::engine::{Engine, EngineConfig, Request, SamplingParams};
    use crate::optim::{AdamW, AdamWConfig};

    fn gpu() -> Device {
        Device::new_cuda(0).expect("a CUDA build's tests need a GPU")
    }

    fn pair(bias: bool, tied: bool) -> (Model, Model) {
        let cfg = tiny_config(bias, tied);
        let t = random_tensors(&cfg, 21, DType::F32);
        (
            Model::from_tensors(&cfg, &t, &Device::Cpu).unwrap(),
            Model::from_tensors(&cfg, &t, &gpu()).unwrap(),
        )
    }

    fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
        let b = b.to_device(a.device()).unwrap();
        let scale = max_abs(a).max(1e-6);
        max_abs_diff(a, &b) / scale
    }

    #[test]
    fn logprobs_entropy_and_gradients_match_the_cpu() {
        for (bias, tied) in [(false, true), (true, false)] {
            let (cpu, gpu) = pair(bias, tied);
            let opts = LogProbOptions {
                entropy: true,
                temperature: 0.7,
                ..Default::default()
            };
            let run = |m: &Model| {
                let (ids, mask) = padded_batch(m.device());
                let out = m.response_logprobs(&ids, &mask, 3, &opts).unwrap();
                let ent = out.entropy.unwrap();
                let loss = (out.logprobs.sum_all().unwrap() + ent.sum_all().unwrap()).unwrap();
                (out.logprobs, ent, loss.backward().unwrap())
            };
            let (lp_c, ent_c, g_c) = run(&cpu);
            let (lp_g, ent_g, g_g) = run(&gpu);
            assert!(lp_g.device().is_cuda());
            assert!(rel_diff(&lp_c, &lp_g) < 1e-4, "log-probs");
            assert!(rel_diff(&ent_c, &ent_g) < 1e-4, "entropy");
            for ((name, vc), (_, vg)) in cpu.named_vars().iter().zip(gpu.named_vars()) {
                let (a, b) = (g_c.get(vc).unwrap(), g_g.get(vg).unwrap());
                let d = rel_diff(a, b);
                assert!(d < 1e-3, "{name}: gradient differs by {d:e} (relative)");
            }
        }
    }

    #[test]
    fn cached_decoding_and_greedy_generation_match_the_cpu() {
        let (cpu, gpu) = pair(true, false);
        let prompt = [3u32, 9, 27, 5, 1];
        let step = |m: &Model| {
            let mut cache = m.new_cache(1, 16).unwrap();
            let a = m.forward_cached(&mut cache, 0, &prompt, 1).unwrap();
            let b = m.forward_cached(&mut cache, 0, &[7], 1).unwrap();
            (a, b)
        };
        let (a_c, b_c) = step(&cpu);
        let (a_g, b_g) = step(&gpu);
        assert!(rel_diff(&a_c, &a_g) < 1e-4 && rel_diff(&b_c, &b_g) < 1e-4);
        let req = Request {
            prompt: prompt.to_vec(),
            params: SamplingParams {
                temperature: 0.0,
                max_tokens: 12,
                seed: Some(1),
                ..Default::default()
            },
        };
        let gen = |m: &Model| {
            Engine::new(m, EngineConfig::default())
                .generate(std::slice::from_ref(&req))
                .unwrap()
                .remove(0)
        };
        let (oc, og) = (gen(&cpu), gen(&gpu));
        assert_eq!(oc.token_ids, og.token_ids);
        for (x, y) in oc.logprobs.iter().zip(&og.logprobs) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        // A bf16 decoding copy on the GPU runs through cuBLAS bf16 and stays close.
        let bf = gpu.decode_copy(DType::BF16).unwrap();
        let mut cache = bf.new_cache(1, 16).unwrap();
        let a_bf = bf.forward_cached(&mut cache, 0, &prompt, 1).unwrap();
        assert!(rel_diff(&a_c, &a_bf) < 5e-2);
    }

    #[test]
    fn an_adamw_step_matches_the_cpu() {
        let (cpu, gpu) = pair(false, true);
        let cfg = AdamWConfig {
            lr: 1e-2,
            weight_decay: 0.1,
            ..Default::default()
        };
        let step = |m: &Model| {
            let mut opt = AdamW::new(m.named_vars().to_vec(), cfg).unwrap();
            let (ids, mask) = padded_batch(m.device());
            let out = m
                .response_logprobs(&ids, &mask, 3, &LogProbOptions::default())
                .unwrap();
            opt.step(&out.logprobs.sum_all().unwrap().backward().unwrap())
                .unwrap();
        };
        step(&cpu);
        step(&gpu);
        for ((name, vc), (_, vg)) in cpu.named_vars().iter().zip(gpu.named_vars()) {
            let d = rel_diff(vc.as_tensor(), vg.as_tensor());
            assert!(d < 1e-4, "{name}: parameters differ by {d:e} after a step");
        }
    }
}

/// Mixed precision (`trainer.bf16`): bf16 inputs to every linear product and bf16 activations
/// between them (normed inputs, gate, up, SwiGLU), f32 elsewhere. Log-probs
/// stay within bf16's rounding of the f32 ones, and every parameter's gradient points the same
/// way (cosine >= 0.999), on both the AMX path and the rounding fallback, whichever this CPU has.
#[test]
fn bf16_products_keep_logprobs_and_gradients_close_to_f32() {
    for (bias, tied) in [(true, false), (false, true)] {
        let cfg = tiny_config(bias, tied);
        let model =
            Model::from_tensors(&cfg, &random_tensors(&cfg, 9, DType::F32), &Device::Cpu).unwrap();
        let run = |precision: Precision| {
            let opts = LogProbOptions {
                temperature: 0.8,
                entropy: true,
                chunk_rows: 4,
                vocab_chunk: 24,
                precision,
                ..Default::default()
            };
            let (ids, mask) = padded_batch(model.device());
            let o = model.response_logprobs(&ids, &mask, 3, &opts).unwrap();
            let w = Tensor::new(&[[1.0f32, -0.5, 2.0], [0.3, 1.5, -1.0]], model.device()).unwrap();
            let e = o.entropy.unwrap();
            let loss = ((&o.logprobs * &w).unwrap().sum_all().unwrap()
                + (&e * 0.7).unwrap().sum_all().unwrap())
            .unwrap();
            (o.logprobs, loss.backward().unwrap())
        };
        let (lp32, g32) = run(Precision::F32);
        let (lp16, g16) = run(Precision::Bf16);
        let d = max_abs_diff(&lp32, &lp16);
        let scale = max_abs(&lp32);
        // bf16 keeps 8 bits of mantissa (relative rounding 2^-9 per input); through two layers
        // that leaves a few 1e-3 of the log-probs' size. Zero would mean nothing was rounded.
        assert!(
            d > 0.0 && d < 5e-3 * scale,
            "bf16 vs f32 log-probs differ by {d:e} (largest |log-prob| {scale})"
        );
        for (name, v) in model.named_vars() {
            let (a, b) = (g32.get(v).unwrap(), g16.get(v).unwrap());
            let dot = total(&(a * b).unwrap());
            let norm = |t: &Tensor| total(&t.sqr().unwrap()).sqrt();
            let cos = dot / (norm(a) * norm(b)).max(1e-30);
            assert!(cos >= 0.999, "{name}: gradient cosine {cos}");
        }
    }
}

#[test]
fn a_label_outside_the_vocabulary_is_an_error() {
    let dev = Device::Cpu;
    let hidden = Tensor::ones((2, 4), DType::F32, &dev).unwrap();
    let weight = Tensor::ones((5, 4), DType::F32, &dev).unwrap();
    let labels = Tensor::new(&[1u32, 5], &dev).unwrap();
    let opts = LogProbOptions::default();
    let err = crate::logprobs::lm_head_logprobs(&hidden, &weight, &labels, &opts).unwrap_err();
    assert!(err.to_string().contains("token id 5"), "{err}");
}
