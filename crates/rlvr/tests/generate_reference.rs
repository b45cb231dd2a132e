//! `rlvr generate --temperature 0 --max-tokens 32` prints exactly the greedy text transformers
//! produced from the same GGUF, for every chat case of the model's reference
//! (`crates/rlvr-model/tests/data/*_reference.json`); one `#[test]` per model. The GGUFs come from
//! `scripts/fetch_assets.sh --qwen`; where they are looked up, and why a missing one fails under CI
//! and skips elsewhere: `crates/rlvr-model/tests/common/assets.rs`. Tests never download them.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::assets;

#[test]
fn smollm2_135m_instruct_greedy_text_matches_transformers() {
    check_generate(assets::SMOLLM2_GGUF, "smollm2_reference.json");
}

#[test]
fn qwen2_5_coder_0_5b_instruct_greedy_text_matches_transformers() {
    check_generate(assets::QWEN_CODER_GGUF, "qwen2.5-coder-0.5b_reference.json");
}

fn check_generate(gguf: &str, reference: &str) {
    let Some(gguf) = assets::asset(gguf) else {
        return;
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rlvr-model/tests/data")
        .join(reference);
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("reference in the repo"))
            .expect("reference is JSON");
    let started = Instant::now();
    let mut checked = 0;
    for case in reference["cases"].as_array().expect("cases") {
        if case["kind"] != "chat" {
            continue;
        }
        let user = case["messages"][0]["content"]
            .as_str()
            .expect("user message");
        let want = case["greedy_32_text"].as_str().expect("greedy text");
        let out = Command::new(env!("CARGO_BIN_EXE_rlvr"))
            .args([
                "generate",
                "--model",
                gguf.to_str().unwrap(),
                "--chat",
                user,
            ])
            .args(["--temperature", "0", "--max-tokens", "32"])
            .output()
            .expect("run rlvr generate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("UTF-8");
        // `println!` adds one newline after the response text.
        assert_eq!(
            stdout.strip_suffix('\n'),
            Some(want),
            "{}: case {user:?}",
            gguf.display()
        );
        checked += 1;
    }
    assert_eq!(checked, 3, "chat cases in the reference");
    eprintln!(
        "{}: {checked}/3 greedy texts identical in {:.1} s",
        gguf.display(),
        started.elapsed().as_secs_f64()
    );
}
