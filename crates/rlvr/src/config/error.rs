//! Errors from building, resolving and validating a config. Every message names the key and,
//! where there is one, the place the value came from (a command-line override or a YAML file).

use std::fmt;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in defaults (`crates/rlvr/config/base.yaml`).
    Defaults,
    /// A command-line override, as written.
    Override(String),
    /// A user YAML file.
    File(String),
    /// The merged config after interpolation (the value came through a `${...}`).
    Resolved,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Defaults => write!(f, "the built-in defaults"),
            Origin::Override(arg) => write!(f, "override `{arg}`"),
            Origin::File(path) => write!(f, "config file {path}"),
            Origin::Resolved => write!(f, "resolved config"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: cannot parse YAML: {message}")]
    Yaml { origin: Origin, message: String },

    #[error("{origin}: bad override: {reason}")]
    BadOverride { origin: Origin, reason: String },

    #[error("{origin}: unknown config key `{key}`{}{}", suggestion_text(.suggestion), plus_hint(.origin, .key))]
    UnknownKey {
        origin: Origin,
        key: String,
        suggestion: Option<String>,
    },

    #[error("{origin}: `{key}` expects {expected}, got {got}")]
    Type {
        origin: Origin,
        key: String,
        expected: String,
        got: String,
    },

    #[error(
        "{origin}: `{key}` already exists; drop the `+` to override it (or write `++{key}=...`)"
    )]
    AlreadyExists { origin: Origin, key: String },

    #[error("{origin}: cannot set `{key}`: `{parent}` is {what}, not a section")]
    NotASection {
        origin: Origin,
        key: String,
        parent: String,
        what: String,
    },

    #[error("cannot resolve `{key}`: {reason}")]
    Interpolation { key: String, reason: String },

    #[error("invalid config:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),

    #[error("cannot read config file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

fn plus_hint(origin: &Origin, key: &str) -> String {
    match origin {
        Origin::Override(_) => format!(" (to add a new key write `+{key}=...`)"),
        _ => String::new(),
    }
}
