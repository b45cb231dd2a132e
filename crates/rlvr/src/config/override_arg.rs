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
    /// The argument as given, for error messages.
    pub raw: String,
}

impl Override {
    pub fn origin(&self) -> Origin {
        Origin::Override(self.raw.clone())
    }
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
        raw: arg.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn value(arg: &str) -> Value {
        parse(arg).unwrap().value
    }

    #[test]
    fn modes_and_keys() {
        assert_eq!(parse("a.b=1").unwrap().mode, Mode::Set);
        assert_eq!(parse("+a.b=1").unwrap().mode, Mode::Add);
        let o = parse("++a.b_c=1").unwrap();
        assert_eq!((o.mode, o.key.as_str()), (Mode::AddOrSet, "a.b_c"));
        assert!(parse("a.b").is_err());
        assert!(parse("a..b=1").is_err());
        assert!(parse("~a.b").is_err());
    }

    #[test]
    fn scalars_lists_and_null() {
        assert_eq!(value("k=3"), Value::from(3));
        assert_eq!(value("k=1.0e-6"), Value::from(1.0e-6));
        assert_eq!(value("k=1e-2"), Value::from(0.01));
        assert_eq!(value("k=true"), Value::from(true));
        assert_eq!(value("k=null"), Value::Null);
        assert_eq!(value("k=filter"), Value::from("filter"));
        assert_eq!(value("k=\"grpo\""), Value::from("grpo"));
        assert_eq!(value("k='10'"), Value::from("10"));
        assert_eq!(value("k="), Value::from(""));
        assert_eq!(
            value("k=[0.9,0.999]"),
            Value::Sequence(vec![Value::from(0.9), Value::from(0.999)])
        );
        assert_eq!(
            value("k=['x','y']"),
            Value::Sequence(vec![Value::from("x"), Value::from("y")])
        );
        // Through `$(grep ...)` the quotes survive: a string the list-typed key parses later.
        assert_eq!(value("k=\"['x']\""), Value::from("['x']"));
        assert_eq!(value("k=a: b"), Value::from("a: b"));
        assert!(parse("k=[1,2").is_err());
    }

    #[test]
    fn env_vars_expand_like_the_shell() {
        std::env::set_var("RLVR_TEST_OVERRIDE_DIR", "/h");
        let dir = "$RLVR_TEST_OVERRIDE_DIR";
        assert_eq!(
            value(&format!("k=\"{dir}/ckpts/x\"")),
            Value::from("/h/ckpts/x")
        );
        assert_eq!(
            value(&format!("k=\"['{dir}/d']\"")),
            Value::from("['/h/d']")
        );
        assert_eq!(value("k=${RLVR_TEST_OVERRIDE_DIR}/x"), Value::from("/h/x"));
        assert_eq!(
            value("k=${RLVR_SURELY_UNSET_VAR_X:-/d}/x"),
            Value::from("/d/x")
        );
        // Interpolations are left for the resolver; unknown names and `$$` stay as written.
        assert_eq!(value("k=${oc.env:HOME}"), Value::from("${oc.env:HOME}"));
        assert_eq!(
            value("k=${trainer.ckpt_path}/w"),
            Value::from("${trainer.ckpt_path}/w")
        );
        assert_eq!(
            value("k=$RLVR_SURELY_UNSET_VAR_X/a"),
            Value::from("$RLVR_SURELY_UNSET_VAR_X/a")
        );
        assert_eq!(value("k=cost$"), Value::from("cost$"));
        assert_eq!(value("k=a$$b"), Value::from("a$$b"));
    }
}
