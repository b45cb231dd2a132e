//! One command-line override, Hydra style: `a.b.c=value` sets an existing key, `+a.b.c=value`
//! adds a key the schema does not have, `++a.b.c=value` adds or sets.
//!
//! The value is read as YAML: `3`, `1.0e-6`, `true`, `null`, `'quoted'`, `[0.9,0.999]`, `['x','y']`.
//! A value that is not valid YAML (or would read as a block mapping, like `a: b`) stays a string.
//! `$NAME` in a string is replaced by the environment variable, as the shell would have done:
//! lines pasted through `$(grep ... file)` reach us with `$HOME` unexpanded and quotes kept.

use serde_yaml::Value;

use super::error::{ConfigError, Origin};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `a.b=v`: the key must exist.
    Set,
    /// `+a.b=v`: the key must not exist yet.
    Add,
    /// `++a.b=v`: either.
    AddOrSet,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub mode: Mode,
    pub key: String,
    pub value: Value,
}

pub fn parse(arg: &str) -> Result<Override, ConfigError> {
    let bad = |reason: String| ConfigError::BadOverride {
        origin: Origin::Override(arg.to_string()),
        reason,
    };
    let (mode, rest) = if let Some(r) = arg.strip_prefix("++") {
        (Mode::AddOrSet, r)
    } else if let Some(r) = arg.strip_prefix('+') {
        (Mode::Add, r)
    } else if arg.starts_with('~') {
        return Err(bad("deleting keys (`~key`) is not supported".into()));
    } else {
        (Mode::Set, arg)
    };
    let Some((key, text)) = rest.split_once('=') else {
        return Err(bad("expected `key=value`".into()));
    };
    let key = key.trim();
    let valid_segment = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
    };
    if !key.split('.').all(valid_segment) {
        return Err(bad(format!(
            "`{key}` is not a dotted key (letters, digits, `_`, `-` separated by `.`)"
        )));
    }
    let value = parse_value(text).map_err(bad)?;
    Ok(Override {
        mode,
        key: key.to_string(),
        value: expand_env(value),
    })
}

/// Read an override's value text as a YAML scalar or flow collection.
pub fn parse_value(text: &str) -> Result<Value, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(Value::String(String::new()));
    }
    let flow = t.starts_with('[') || t.starts_with('{');
    let quoted = t.starts_with('"') || t.starts_with('\'');
    match serde_yaml::from_str::<Value>(t) {
        Ok(v @ (Value::Sequence(_) | Value::Mapping(_))) if !flow => {
            // `- x` or `a: b` typed on a command line is text, not a YAML block.
            let _ = v;
            Ok(Value::String(t.to_string()))
        }
        Ok(v) => Ok(v),
        Err(e) if flow || quoted => Err(format!("cannot parse `{t}`: {e}")),
        Err(_) => Ok(Value::String(t.to_string())),
    }
}

/// `$NAME` (or `${NAME}`, `${NAME:-default}`) in every string replaced by the environment
/// variable where it is set, as the shell would have; anything else (an unset name, `$$`,
/// `${a.b}`, `${oc.env:X}`) stays as written, the `${...}` for the resolver.
fn expand_env(value: Value) -> Value {
    match value {
        Value::String(s) => {
            let env = |name: &str| std::env::var(name).ok();
            // shellexpand reads `$$` as an escaped `$`; keep it as written.
            let s = s.replace("$$", "$$$$");
            Value::String(shellexpand::env_with_context_no_errors(&s, env).into_owned())
        }
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(expand_env).collect()),
        Value::Mapping(map) => {
            Value::Mapping(map.into_iter().map(|(k, v)| (k, expand_env(v))).collect())
        }
        other => other,
    }
}
