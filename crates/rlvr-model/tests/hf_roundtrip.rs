//! HF directories: save → load is exact (tensors, config, tokenizer, chat template, generation
//! config); bf16/f16 and sharded checkpoints load as f32; bad directories give clear errors.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::*;
use rlvr_model::{
    load_pretrained, save_hf, save_hf_with, ChatMessage, Pretrained, SaveDType, SaveOptions,
};

fn tiny_pretrained(dir: &std::path::Path, tied: bool) -> Pretrained {
    let path = dir.join(if tied { "tiny.gguf" } else { "untied.gguf" });
    write(&path, &tiny_gguf(tied, "smollm").bytes);
    load_pretrained(&path, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn assert_same_tensors(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    let mut ka: Vec<_> = a.keys().collect();
    let mut kb: Vec<_> = b.keys().collect();
    ka.sort();
    kb.sort();
    assert_eq!(ka, kb);
    for (k, t) in a {
        assert_eq!(t.dims(), b[k].dims(), "{k}");
        assert_eq!(values(t), values(&b[k]), "{k}");
    }
}

const PROBES: [&str; 4] = [
    "hello world 12",
    "<|im_start|>user\nhé<|im_end|>",
    "  spaces  and\ttabs\n",
    "world12345",
];

#[test]
fn save_then_load_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    for tied in [true, false] {
        let pre = tiny_pretrained(tmp.path(), tied);
        let out = tmp.path().join(format!("hf_{tied}"));
        save_hf(
            &out,
            &pre.config,
            &pre.tensors,
            &pre.tokenizer,
            pre.generation_config.as_ref(),
        )
        .unwrap();
        let back = load_pretrained(&out, &Device::Cpu).unwrap();

        assert_same_tensors(&pre.tensors, &back.tensors);
        assert_eq!(back.config, pre.config);
        assert_eq!(back.generation_config, pre.generation_config);
        let (a, b) = (&pre.tokenizer, &back.tokenizer);
        for text in PROBES {
            let ids = a.encode(text, false).unwrap();
            assert_eq!(b.encode(text, false).unwrap(), ids, "{text:?}");
            assert_eq!(
                b.encode(text, true).unwrap(),
                a.encode(text, true).unwrap(),
                "{text:?}"
            );
            assert_eq!(b.decode(&ids, true).unwrap(), a.decode(&ids, true).unwrap());
            assert_eq!(b.decode(&ids, false).unwrap(), text);
        }
        assert_eq!(b.special_tokens(), a.special_tokens());
        assert_eq!(b.chat_template(), a.chat_template());
        assert_eq!(b.vocab_size(), a.vocab_size());
        let msgs = [
            ChatMessage::system("be brief"),
            ChatMessage::user("hello world"),
        ];
        assert_eq!(
            b.apply_chat_template_ids(&msgs, true).unwrap(),
            a.apply_chat_template_ids(&msgs, true).unwrap()
        );
        assert_eq!(b.model_max_length(), Some(128));

        // What transformers reads.
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(
            cfg["architectures"],
            serde_json::json!(["LlamaForCausalLM"])
        );
        assert_eq!(cfg["model_type"], "llama");
        assert_eq!(cfg["tie_word_embeddings"], tied);
        assert_eq!(cfg["torch_dtype"], "float32");
        assert_eq!(cfg["rms_norm_eps"], 1e-5);
        assert!(cfg.as_object().unwrap().values().all(|v| !v.is_null()));
        let st = std::fs::read(out.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&st).unwrap();
        // Tied checkpoints omit lm_head.weight, as transformers saves them.
        assert_eq!(st.names().contains(&"lm_head.weight"), !tied);
        let tc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(tc["eos_token"], "<|im_end|>");
        assert_eq!(tc["chat_template"], CHATML);
        assert_eq!(tc["added_tokens_decoder"]["1"]["content"], "<|im_start|>");
        assert_eq!(tc["added_tokens_decoder"]["1"]["special"], true);
        let stm: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("special_tokens_map.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(stm["bos_token"], "<|im_start|>");
        assert!(out.join("generation_config.json").exists());
    }
}

#[test]
fn bf16_save_loads_as_rounded_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tiny_pretrained(tmp.path(), true);
    let out = tmp.path().join("bf16");
    let opts = SaveOptions {
        dtype: SaveDType::BF16,
    };
    save_hf_with(&out, &pre.config, &pre.tensors, &pre.tokenizer, None, &opts).unwrap();
    let back = load_pretrained(&out, &Device::Cpu).unwrap();
    assert_eq!(back.config.torch_dtype.as_deref(), Some("bfloat16"));
    for (k, t) in &pre.tensors {
        let want: Vec<f32> = values(t)
            .iter()
            .map(|x| half::bf16::from_f32(*x).to_f32())
            .collect();
        assert_eq!(values(&back.tensors[k]), want, "{k}");
        assert_eq!(back.tensors[k].dtype(), DType::F32);
    }
    // Without a generation config one is written from the token ids.
    let g = back.generation_config.unwrap();
    assert_eq!((g.bos_token_id, g.eos_token_ids()), (Some(1), vec![2]));
}

#[test]
fn saving_over_an_existing_checkpoint_replaces_it() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tiny_pretrained(tmp.path(), true);
    let out = tmp.path().join("ckpt");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("stale.txt"), "old").unwrap();
    save_hf(&out, &pre.config, &pre.tensors, &pre.tokenizer, None).unwrap();
    assert!(!out.join("stale.txt").exists());
    assert!(load_pretrained(&out, &Device::Cpu).is_ok());
    // No temporary directories are left beside it.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(".ckpt")), "{names:?}");

    // A missing tensor fails before anything is touched.
    let mut partial = pre.tensors.clone();
    partial.remove("model.layers.1.mlp.up_proj.weight");
    let err = save_hf(&out, &pre.config, &partial, &pre.tokenizer, None).unwrap_err();
    assert!(
        format!("{err:#}").contains("model.layers.1.mlp.up_proj.weight"),
        "{err:#}"
    );
    assert!(load_pretrained(&out, &Device::Cpu).is_ok());
}

/// Writes `tensors` as a safetensors file in `dtype`.
fn write_st(path: &std::path::Path, tensors: &[(&String, &Tensor)], dtype: DType) {
    let bufs: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            let flat = t.flatten_all().unwrap().to_dtype(dtype).unwrap();
            let bytes: Vec<u8> = match dtype {
                DType::F16 => flat
                    .to_vec1::<half::f16>()
                    .unwrap()
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                DType::BF16 => flat
                    .to_vec1::<half::bf16>()
                    .unwrap()
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                _ => flat
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            };
            (n.to_string(), t.dims().to_vec(), bytes)
        })
        .collect();
    let st_dtype = match dtype {
        DType::F16 => safetensors::Dtype::F16,
        DType::BF16 => safetensors::Dtype::BF16,
        _ => safetensors::Dtype::F32,
    };
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bufs
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(st_dtype, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn sharded_half_precision_checkpoint_loads_as_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tiny_pretrained(tmp.path(), true);
    let src = tmp.path().join("src");
    save_hf(&src, &pre.config, &pre.tensors, &pre.tokenizer, None).unwrap();
    std::fs::remove_file(src.join("model.safetensors")).unwrap();

    let mut names: Vec<&String> = pre.tensors.keys().collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    fn shard<'a>(
        ns: &[&'a String],
        t: &'a HashMap<String, Tensor>,
    ) -> Vec<(&'a String, &'a Tensor)> {
        ns.iter().map(|n| (*n, &t[*n])).collect()
    }
    write_st(
        &src.join("model-00001-of-00002.safetensors"),
        &shard(a, &pre.tensors),
        DType::F16,
    );
    write_st(
        &src.join("model-00002-of-00002.safetensors"),
        &shard(b, &pre.tensors),
        DType::BF16,
    );
    let mut map = serde_json::Map::new();
    for n in a {
        map.insert(n.to_string(), "model-00001-of-00002.safetensors".into());
    }
    for n in b {
        map.insert(n.to_string(), "model-00002-of-00002.safetensors".into());
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(src.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let back = load_pretrained(&src, &Device::Cpu).unwrap();
    for n in a {
        let want: Vec<f32> = values(&pre.tensors[*n])
            .iter()
            .map(|x| half::f16::from_f32(*x).to_f32())
            .collect();
        assert_eq!(values(&back.tensors[*n]), want, "{n}");
    }
    for n in b {
        let want: Vec<f32> = values(&pre.tensors[*n])
            .iter()
            .map(|x| half::bf16::from_f32(*x).to_f32())
            .collect();
        assert_eq!(values(&back.tensors[*n]), want, "{n}");
    }
}

#[test]
fn broken_hf_directories_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tiny_pretrained(tmp.path(), true);
    let dir = tmp.path().join("ckpt");
    save_hf(&dir, &pre.config, &pre.tensors, &pre.tokenizer, None).unwrap();
    let st = dir.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();

    // Truncated weights.
    std::fs::write(&st, &bytes[..bytes.len() - 100]).unwrap();
    let err = format!("{:#}", load_pretrained(&dir, &Device::Cpu).unwrap_err());
    assert!(err.contains("model.safetensors"), "{err}");

    // A tensor missing from an otherwise valid file.
    let mut some: Vec<(&String, &Tensor)> = pre
        .tensors
        .iter()
        .filter(|(k, _)| k.as_str() != "model.norm.weight")
        .collect();
    some.sort_by_key(|(k, _)| k.as_str());
    write_st(&st, &some, DType::F32);
    let err = format!("{:#}", load_pretrained(&dir, &Device::Cpu).unwrap_err());
    assert!(err.contains("missing tensor model.norm.weight"), "{err}");

    // A wrong shape.
    let mut reshaped = pre.tensors.clone();
    reshaped.insert(
        "model.norm.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let mut all: Vec<(&String, &Tensor)> = reshaped.iter().collect();
    all.sort_by_key(|(k, _)| k.as_str());
    write_st(&st, &all, DType::F32);
    let err = format!("{:#}", load_pretrained(&dir, &Device::Cpu).unwrap_err());
    assert!(
        err.contains("model.norm.weight") && err.contains("[3]"),
        "{err}"
    );

    // A broken config.json.
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": \"big\"}").unwrap();
    let err = format!("{:#}", load_pretrained(&dir, &Device::Cpu).unwrap_err());
    assert!(err.contains("config.json"), "{err}");
}
