//! Loading a tiny GGUF written byte by byte by the test: tensors (dequantized, renamed, q/k
//! un-permuted), config, tokenizer and chat template from the metadata, and errors on
//! truncated or malformed files.

mod common;

use candle_core::Device;
use common::*;
use rlvr_model::{load_pretrained, ChatMessage};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn tiny_gguf_loads_with_hf_names_values_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let tiny = tiny_gguf(true, "smollm");
    write(&path, &tiny.bytes);
    let pre = load_pretrained(&path, &Device::Cpu).unwrap();

    assert_eq!(pre.tensors.len(), tiny.expected.len());
    for (name, dims, values) in &tiny.expected {
        let t = pre
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("missing {name}"));
        assert_eq!(t.dims(), dims.as_slice(), "{name}");
        assert_eq!(t.dtype(), candle_core::DType::F32);
        let got = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // candle's block decoders and ours both compute d*q(+m) in f32: identical.
        assert_eq!(max_abs_diff(&got, values), 0.0, "{name}");
    }
    assert!(!pre.tensors.contains_key("lm_head.weight"));

    let c = &pre.config;
    assert_eq!(c.model_type, "llama");
    assert_eq!(
        (c.num_hidden_layers, c.hidden_size, c.intermediate_size),
        (LAYERS, HIDDEN, FFN)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_kv_heads(), c.head_dim()),
        (HEADS, KV_HEADS, HEAD_DIM)
    );
    assert_eq!(c.vocab_size, tiny_vocab().len());
    // f32 metadata read through its shortest decimal form, as config.json writes it.
    assert_eq!((c.rms_norm_eps, c.rope_theta), (1e-5, 100000.0));
    assert_eq!(c.max_position_embeddings, 128);
    assert!(c.tie_word_embeddings);
    assert!(!c.qkv_bias());
    assert_eq!((c.bos_token_id, c.eos_token_ids()), (Some(1), vec![2]));
    let g = pre.generation_config.as_ref().unwrap();
    assert_eq!(
        (g.bos_token_id, g.eos_token_ids(), g.pad_token_id),
        (Some(1), vec![2], Some(2))
    );
    assert_eq!(pre.source, path);
}

#[test]
fn untied_gguf_keeps_its_output_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("untied.gguf");
    let tiny = tiny_gguf(false, "smollm");
    write(&path, &tiny.bytes);
    let pre = load_pretrained(&path, &Device::Cpu).unwrap();
    assert!(!pre.config.tie_word_embeddings);
    let (_, dims, values) = tiny
        .expected
        .iter()
        .find(|(n, _, _)| n == "lm_head.weight")
        .unwrap();
    let head = &pre.tensors["lm_head.weight"];
    assert_eq!(head.dims(), dims.as_slice());
    assert_eq!(
        &head.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        values
    );
}

#[test]
fn tokenizer_and_chat_template_come_from_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write(&path, &tiny_gguf(true, "smollm").bytes);
    let tok = load_pretrained(&path, &Device::Cpu).unwrap().tokenizer;
    assert_eq!(tok.vocab_size(), tiny_vocab().len());
    assert_eq!(
        (
            tok.bos_token_id(),
            tok.eos_token_id(),
            tok.pad_token_id(),
            tok.unk_token_id()
        ),
        (Some(1), Some(2), Some(2), Some(0))
    );

    // Digits are isolated before the byte-level split, so the "1 2" merge never applies and the
    // space before a digit stays a token of its own.
    let ids = tok.encode("hello world 12", false).unwrap();
    let want: Vec<u32> = ["hello", "Ġworld", "Ġ", "1", "2"]
        .iter()
        .map(|t| id_of(t))
        .collect();
    assert_eq!(ids, want);
    assert_eq!(tok.decode(&ids, false).unwrap(), "hello world 12");
    assert_eq!(
        tok.encode("hello", true).unwrap(),
        vec![id_of("hello")],
        "add_bos_token is false"
    );

    // Control tokens are matched whole and are skippable when decoding.
    let ids = tok
        .encode("<|im_start|>he\nhello<|im_end|>", false)
        .unwrap();
    assert_eq!(ids, vec![1, id_of("he"), id_of("Ċ"), id_of("hello"), 2]);
    assert_eq!(tok.decode(&ids, true).unwrap(), "he\nhello");
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        "<|im_start|>he\nhello<|im_end|>"
    );
    // Bytes outside the merges fall back to byte tokens.
    let ids = tok.encode("é", false).unwrap();
    assert_eq!(ids, vec![id_of("Ã"), id_of("©")]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "é");

    let msgs = [ChatMessage::user("hello")];
    let text = tok.apply_chat_template(&msgs, true).unwrap();
    assert_eq!(
        text,
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.apply_chat_template_ids(&msgs, true).unwrap();
    assert_eq!(ids, tok.encode(&text, false).unwrap());
    assert_eq!(ids[0], 1);
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
}

#[test]
fn gpt2_default_pre_tokenizer_lets_digits_merge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write(&path, &tiny_gguf(true, "default").bytes);
    let tok = load_pretrained(&path, &Device::Cpu).unwrap().tokenizer;
    let ids = tok.encode("hello world 12", false).unwrap();
    let want: Vec<u32> = ["hello", "Ġworld", "Ġ", "12"]
        .iter()
        .map(|t| id_of(t))
        .collect();
    // GPT-2's regex keeps " 12" together; BPE then has no "Ġ 1" merge but has "1 2".
    assert_eq!(ids, want);
}

#[test]
fn llama3_and_qwen2_pre_tokenizers_split_digits_their_way() {
    let dir = tempfile::tempdir().unwrap();
    // Llama 3 groups up to three digits, Qwen2 isolates each one.
    for (pre, want) in [
        ("llama-bpe", vec!["hello", "Ġworld", "Ġ", "12"]),
        ("qwen2", vec!["hello", "Ġworld", "Ġ", "1", "2"]),
    ] {
        let path = dir.path().join(format!("{pre}.gguf"));
        write(&path, &tiny_gguf(true, pre).bytes);
        let tok = load_pretrained(&path, &Device::Cpu).unwrap().tokenizer;
        let want: Vec<u32> = want.iter().map(|t| id_of(t)).collect();
        assert_eq!(tok.encode("hello world 12", false).unwrap(), want, "{pre}");
        assert_eq!(tok.decode(&want, false).unwrap(), "hello world 12", "{pre}");
    }
}

#[test]
fn add_bos_token_prepends_bos_only_with_special_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bos.gguf");
    write(&path, &tiny_gguf_with(true, "smollm", true).bytes);
    let tok = load_pretrained(&path, &Device::Cpu).unwrap().tokenizer;
    assert!(tok.add_bos_token());
    assert_eq!(tok.encode("hello", true).unwrap(), vec![1, id_of("hello")]);
    assert_eq!(tok.encode("hello", false).unwrap(), vec![id_of("hello")]);
    // Chat templates write their own special tokens: no second BOS.
    let ids = tok
        .apply_chat_template_ids(&[ChatMessage::user("hello")], false)
        .unwrap();
    assert_eq!(&ids[..2], &[1, id_of("u")]);
}

#[test]
fn unknown_pre_tokenizer_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.gguf");
    write(&path, &tiny_gguf(true, "no-such-pre").bytes);
    let err = format!("{:#}", load_pretrained(&path, &Device::Cpu).unwrap_err());
    assert!(
        err.contains("odd.gguf") && err.contains("no-such-pre"),
        "{err}"
    );
}

#[test]
fn truncated_gguf_errors_name_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = tiny_gguf(true, "smollm");
    let n = tiny.bytes.len();

    // Cut inside the tensor data: the header parses, the last tensor (output_norm, F32) is short.
    let path = dir.path().join("cut_data.gguf");
    write(&path, &tiny.bytes[..n - 40]);
    let err = format!("{:#}", load_pretrained(&path, &Device::Cpu).unwrap_err());
    assert!(err.contains("cut_data.gguf"), "{err}");
    assert!(err.contains("output_norm.weight"), "{err}");

    // Every cut position in the header and metadata gives an error, never a panic.
    for cut in (0..n).step_by(97).chain([4, 8, 23, 24, 25]) {
        let path = dir.path().join(format!("cut_{cut}.gguf"));
        write(&path, &tiny.bytes[..cut]);
        let res = std::panic::catch_unwind(|| load_pretrained(&path, &Device::Cpu));
        let err = res
            .unwrap_or_else(|_| panic!("panicked on a file cut at {cut}"))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(&format!("cut_{cut}.gguf")), "cut {cut}: {msg}");
    }

    // Not a GGUF at all.
    let path = dir.path().join("junk.gguf");
    write(&path, b"this is not a gguf file at all, just text");
    let err = format!("{:#}", load_pretrained(&path, &Device::Cpu).unwrap_err());
    assert!(
        err.contains("junk.gguf") && err.contains("not a GGUF file"),
        "{err}"
    );
}

#[test]
fn missing_checkpoint_is_an_error() {
    let err = load_pretrained(std::path::Path::new("/no/such/ckpt"), &Device::Cpu).unwrap_err();
    assert!(format!("{err:#}").contains("/no/such/ckpt"));
}

/// The byte offset of tensor `name`'s ggml type in a GGUF header.
fn type_field(bytes: &[u8], name: &str) -> usize {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend(name.as_bytes());
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .unwrap();
    let dims_at = at + key.len();
    let n_dims = u32::from_le_bytes(bytes[dims_at..dims_at + 4].try_into().unwrap()) as usize;
    dims_at + 4 + 8 * n_dims
}

#[test]
fn altered_tensor_tables_and_binary_names_are_clear_short_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_gguf(true, "smollm").bytes;
    // One tensor's type changed (F32 -> F16 and F16 -> F32): its size no longer matches its bytes.
    for (name, ty) in [("output_norm.weight", 1u32), ("blk.0.attn_k.weight", 0)] {
        let mut b = base.clone();
        let at = type_field(&b, name);
        b[at..at + 4].copy_from_slice(&ty.to_le_bytes());
        let path = dir.path().join("retyped.gguf");
        write(&path, &b);
        let err = format!("{:#}", load_pretrained(&path, &Device::Cpu).unwrap_err());
        assert!(err.contains("does not fit the file"), "{name}: {err}");
    }
    // A dimension of 0 (found by the fuzz harness: candle would build a slice from a dangling
    // pointer).
    let mut b = base.clone();
    let at = type_field(&b, "output_norm.weight");
    b[at - 8..at].copy_from_slice(&0u64.to_le_bytes());
    let path = dir.path().join("empty.gguf");
    write(&path, &b);
    let err = format!("{:#}", load_pretrained(&path, &Device::Cpu).unwrap_err());
    assert!(err.contains("no elements"), "{err}");
    // A tensor name of binary junk: quoted short and escaped.
    let mut b = base.clone();
    let at = type_field(&b, "output_norm.weight") - 8 - 4 - "output_norm.weight".len();
    for x in &mut b[at..at + 6] {
        *x = 0x01;
    }
    let path = dir.path().join("junk_name.gguf");
    write(&path, &b);
    let err = format!("{:#}", load_pretrained(&path, &Device::Cpu).unwrap_err());
    assert!(err.len() < 400 && err.contains("\\u{1}"), "{err}");
}
