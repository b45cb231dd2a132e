//! Hugging Face hub ids as model paths (`Qwen/Qwen2.5-1.5B-Instruct`, `ORG/NAME@REVISION`),
//! resolved the way the HF stack finds a downloaded model: in the hub cache (`HF_HUB_CACHE`, else
//! `HF_HOME/hub`, else `~/.cache/huggingface/hub`), under `models--ORG--NAME/snapshots/<commit>`,
//! the commit read from `refs/<revision>` (`main` by default) or given as the revision itself.
//! rlvr does not download: a model missing from the cache is an error that says how to fetch it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// `path` itself where it exists; otherwise, where it reads as a hub id, that model's snapshot
/// directory in the local HF cache.
pub fn resolve_model_path(path: &Path) -> Result<PathBuf> {
    resolve_in(path, hub_cache())
}

fn resolve_in(path: &Path, cache: Option<PathBuf>) -> Result<PathBuf> {
    if path.exists() {
        return Ok(path.to_owned());
    }
    let Some((repo, revision)) = path.to_str().and_then(hub_id) else {
        bail!(
            "{}: no such checkpoint (expected an HF directory, a .gguf file or a Hugging Face \
             model id such as Qwen/Qwen2.5-0.5B-Instruct)",
            path.display()
        );
    };
    let Some(cache) = cache else {
        bail!(
            "{}: no such file, and no Hugging Face cache to look in (set HF_HUB_CACHE or HF_HOME)",
            path.display()
        );
    };
    match snapshot(&cache, repo, revision) {
        Some(dir) => Ok(dir),
        None => bail!(
            "{}: not a local path, and the Hugging Face model {repo} (revision {revision}) is not \
             in the HF cache at {}; rlvr does not download models: fetch it first, e.g. \
             `huggingface-cli download {repo}{}`, or give a local directory or .gguf file",
            path.display(),
            cache.display(),
            if revision == "main" {
                String::new()
            } else {
                format!(" --revision {revision}")
            }
        ),
    }
}

/// `ORG/NAME[@REVISION]` → (`ORG/NAME`, revision, `main` if none). Names as the hub allows them:
/// letters, digits, `-`, `_`, `.`; not starting with `.` (so `./x` stays a path).
fn hub_id(s: &str) -> Option<(&str, &str)> {
    let (repo, revision) = match s.split_once('@') {
        Some((r, rev)) if !rev.is_empty() && !rev.contains('/') => (r, rev),
        Some(_) => return None,
        None => (s, "main"),
    };
    let (org, name) = repo.split_once('/')?;
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (part_ok(org) && part_ok(name)).then_some((repo, revision))
}

/// The hub cache directory, as `huggingface_hub` picks it.
fn hub_cache() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return Some(dir);
    }
    if let Some(home) = var("HF_HOME") {
        return Some(home.join("hub"));
    }
    let cache = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
    Some(cache.join("huggingface").join("hub"))
}

/// `cache/models--ORG--NAME/snapshots/<commit>` for `revision` (a ref name or a commit), if that
/// snapshot holds a model (`config.json`).
fn snapshot(cache: &Path, repo: &str, revision: &str) -> Option<PathBuf> {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    let commit = std::fs::read_to_string(root.join("refs").join(revision))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let dir = root.join("snapshots").join(commit);
    dir.join("config.json").is_file().then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_told_from_paths() {
        assert_eq!(
            hub_id("Qwen/Qwen2.5-1.5B-Instruct"),
            Some(("Qwen/Qwen2.5-1.5B-Instruct", "main"))
        );
        assert_eq!(hub_id("org/name@v1.0"), Some(("org/name", "v1.0")));
        assert_eq!(hub_id("./model"), None);
        assert_eq!(hub_id("/abs/model"), None);
        assert_eq!(hub_id("a/b/c"), None);
        assert_eq!(hub_id("model.gguf"), None);
        assert_eq!(hub_id("org/name@"), None);
    }

    /// A cache laid out as `huggingface_hub` writes it: refs/main names the snapshot; a tag and a
    /// bare commit resolve too; a missing model names the cache and how to download it.
    #[test]
    fn snapshots_are_found_in_a_cache_laid_out_as_huggingface_hub_does() {
        let cache = tempfile::tempdir().unwrap();
        let root = cache.path().join("models--org--tiny");
        for (commit, with_config) in [("abc123", true), ("def456", true), ("0000", false)] {
            let dir = root.join("snapshots").join(commit);
            std::fs::create_dir_all(&dir).unwrap();
            if with_config {
                std::fs::write(dir.join("config.json"), "{}").unwrap();
            }
        }
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::write(root.join("refs/main"), "abc123\n").unwrap();
        std::fs::write(root.join("refs/v2"), "def456").unwrap();
        std::fs::write(root.join("refs/broken"), "0000").unwrap();

        let snap = |rev: &str| snapshot(cache.path(), "org/tiny", rev);
        assert_eq!(snap("main"), Some(root.join("snapshots/abc123")));
        assert_eq!(snap("v2"), Some(root.join("snapshots/def456")));
        assert_eq!(snap("def456"), Some(root.join("snapshots/def456")));
        assert_eq!(
            snap("broken"),
            None,
            "a snapshot without config.json is no model"
        );
        assert_eq!(snapshot(cache.path(), "org/other", "main"), None);

        let dir = Some(cache.path().to_owned());
        let found = resolve_in(Path::new("org/tiny@v2"), dir.clone()).unwrap();
        assert_eq!(found, root.join("snapshots/def456"));
        let err = resolve_in(Path::new("org/other"), dir)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("org/other") && err.contains("huggingface-cli download org/other"),
            "{err}"
        );
        let err = resolve_in(Path::new("./missing"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such checkpoint"), "{err}");
    }
}
