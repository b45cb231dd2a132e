//! The embedded generator's bf16 decoding copy follows the trainer's weights through
//! `sync_weights` on every CPU: after an update and a sync it generates exactly what a fresh generator on the
//! updated weights generates.

use rlvr::env::EnvRegistry;
use rlvr::generator::{EmbeddedGenerator, Generator, PromptGroup, Sampling};
use rlvr_algo::rewards::gsm8k::Method;
use rlvr_model::{load_pretrained, Model};
use std::sync::Arc;

#[test]
fn bf16_copy_is_rebuilt_at_weight_sync() {
    // Both bf16 forms must follow the sync: packed for the AVX-512 kernel where the CPU has it,
    // plain bf16 tensors elsewhere.
    eprintln!(
        "bf16 decoding copy: {}",
        if rlvr_model::model::bf16_decode_supported() {
            "packed (AVX-512)"
        } else {
            "plain bf16 tensors"
        }
    );
    let dir = tempfile::tempdir().unwrap();
    rlvr::toy::write(dir.path(), 3).unwrap();
    let cpu = candle_core::Device::Cpu;
    let pre = load_pretrained(&dir.path().join("model"), &cpu).unwrap();
    let model = Arc::new(Model::from_tensors(&pre.config, &pre.tensors, &cpu).unwrap());
    let tokenizer = Arc::new(pre.tokenizer);
    let envs = EnvRegistry::with_builtins(rlvr::env::Gsm8kEnv::new(Method::Strict, 0.0));
    let make = || {
        EmbeddedGenerator::new(model.clone(), tokenizer.clone(), envs.clone(), 8)
            .with_weights(candle_core::DType::BF16)
    };
    let groups: Vec<PromptGroup> = rlvr::toy::rows(2)
        .into_iter()
        .enumerate()
        .map(|(i, row)| PromptGroup {
            uid: format!("g{i}"),
            row,
            n: 3,
        })
        .collect();
    let sampling = Sampling {
        temperature: 1.0,
        top_p: 1.0,
        top_k: -1,
        min_p: 0.0,
        max_generate_length: 16,
        stop: vec![],
    };
    let mut trained = make();
    let before = trained.generate(&groups, &sampling, 7).unwrap();

    // An optimizer step, in place on the shared weights.
    for (_, v) in model.named_vars() {
        v.set(&(v.as_tensor() * 1.7).unwrap()).unwrap();
    }
    trained.sync_weights(&model, 1).unwrap();
    let after = trained.generate(&groups, &sampling, 7).unwrap();
    let fresh = make().generate(&groups, &sampling, 7).unwrap();
    assert_eq!(after.response_ids, fresh.response_ids);
    assert_ne!(
        after.response_ids, before.response_ids,
        "the update should change what is sampled"
    );
}
