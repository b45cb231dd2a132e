//! Byte-mutation fuzzing of every model input format (a stable-toolchain harness: seeded
//! mutations of valid files, no cargo-fuzz needed). Each loader must answer every input with a
//! value or an error, never a panic; an abort (an allocation sized from a corrupt header) would
//! kill this test process. `RLVR_FUZZ_CASES` sets the inputs per format (default 10,000).

mod common;

use candle_core::Device;
use common::fuzz::{cases, mutate, quiet_panics, Mutator, Tally};
use common::tiny_gguf;
use rlvr_model::chat_template::TemplateTokens;
use rlvr_model::{load_pretrained, save_hf, ChatMessage, ChatTemplate};
use std::path::Path;

#[test]
fn gguf_files_never_panic() {
    quiet_panics();
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_gguf(true, "smollm").bytes;
    // The header ends where the first tensor's data starts; everything before it is "hot".
    let header = base.len() - (base.len() / 2);
    let mut rng = Mutator(0x5eed_0001);
    let mut tally = Tally::default();
    let path = dir.path().join("f.gguf");
    for i in 0..cases() {
        let bytes = mutate(&mut rng, &base, header);
        std::fs::write(&path, &bytes).unwrap();
        tally.run(&format!("case {i}"), || {
            load_pretrained(&path, &Device::Cpu)
        });
    }
    tally.check("gguf");
}

/// A tiny HF directory (config.json, model.safetensors, tokenizer files).
fn hf_dir(root: &Path) -> std::path::PathBuf {
    let gguf = root.join("tiny.gguf");
    std::fs::write(&gguf, tiny_gguf(false, "smollm").bytes).unwrap();
    let pre = load_pretrained(&gguf, &Device::Cpu).unwrap();
    let dir = root.join("hf");
    save_hf(&dir, &pre.config, &pre.tensors, &pre.tokenizer, None).unwrap();
    dir
}

/// Mutates one file of an HF directory at a time and loads the whole directory.
fn fuzz_hf_file(file: &str, seed: u64, hot: impl Fn(&[u8]) -> usize) {
    quiet_panics();
    let root = tempfile::tempdir().unwrap();
    let dir = hf_dir(root.path());
    let base = std::fs::read(dir.join(file)).unwrap();
    let hot = hot(&base);
    let mut rng = Mutator(seed);
    let mut tally = Tally::default();
    for i in 0..cases() {
        let bytes = mutate(&mut rng, &base, hot);
        std::fs::write(dir.join(file), &bytes).unwrap();
        tally.run(&format!("case {i}"), || load_pretrained(&dir, &Device::Cpu));
    }
    tally.check(file);
}

#[test]
fn config_json_never_panics() {
    fuzz_hf_file("config.json", 0x5eed_0002, |b| b.len());
}

#[test]
fn safetensors_files_never_panic() {
    // The header: an 8-byte length, then JSON.
    fuzz_hf_file("model.safetensors", 0x5eed_0003, |b| {
        8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize
    });
}

#[test]
fn tokenizer_json_never_panics() {
    fuzz_hf_file("tokenizer.json", 0x5eed_0004, |b| b.len());
}

#[test]
fn chat_templates_never_panic() {
    quiet_panics();
    let base = "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}\
{{ '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}{% endif %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>' + '\\n' }}\
{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}\
{{ bos_token ~ (messages | length) ~ messages[0].content[1:3] | upper | tojson }}";
    let messages = [
        ChatMessage::new("system", "sys"),
        ChatMessage::new("user", "What is 2 + 2?"),
    ];
    let tokens = TemplateTokens {
        bos_token: Some("<s>".into()),
        eos_token: Some("</s>".into()),
        ..Default::default()
    };
    let mut rng = Mutator(0x5eed_0005);
    let mut tally = Tally::default();
    for i in 0..cases() {
        let bytes = mutate(&mut rng, base.as_bytes(), base.len());
        let source = String::from_utf8_lossy(&bytes).into_owned();
        tally.run(&format!("case {i}"), || {
            ChatTemplate::new(&source)?.render(&messages, true, &tokens)
        });
    }
    tally.check("chat template");
}
