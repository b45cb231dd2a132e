//! OmegaConf-style interpolation, applied once after every override is in:
//! `${a.b.c}` (absolute), `${.sibling}` / `${..uncle}` (relative), `${oc.env:VAR}` and
//! `${oc.env:VAR,default}`. A string that is exactly one `${...}` takes the referenced value with
//! its type (a list stays a list); inside a longer string the value is spliced in as text.
//! `\${` is a literal `${`. Interpolations do not nest (nothing in SkyRL's configs does).

use serde_yaml::{Mapping, Value};

use super::error::ConfigError;
use super::tree::{get, join};

/// Resolve every interpolation in `tree`.
pub fn resolve(tree: &Value) -> Result<Value, ConfigError> {
    let mut stack = Vec::new();
    resolve_value(tree, "", tree, &mut stack)
}

fn resolve_value(
    root: &Value,
    path: &str,
    v: &Value,
    stack: &mut Vec<String>,
) -> Result<Value, ConfigError> {
    Ok(match v {
        Value::String(s) if s.contains("${") => resolve_string(root, path, s, stack)?,
        Value::Sequence(items) => Value::Sequence(
            items
                .iter()
                .map(|item| resolve_value(root, path, item, stack))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(map) => {
            let mut out = Mapping::new();
            for (k, child) in map {
                let child_path = join(path, k.as_str().unwrap_or_default());
                out.insert(k.clone(), resolve_value(root, &child_path, child, stack)?);
            }
            Value::Mapping(out)
        }
        other => other.clone(),
    })
}

fn resolve_string(
    root: &Value,
    path: &str,
    s: &str,
    stack: &mut Vec<String>,
) -> Result<Value, ConfigError> {
    let err = |reason: String| ConfigError::Interpolation {
        key: path.to_string(),
        reason,
    };
    // The end (exclusive) of the `${...}` at `start`; nesting is not supported.
    let closing = |start: usize| {
        let body = &s[start + 2..];
        match body.find('}') {
            Some(end) if body[..end].contains("${") => {
                Err(err(format!("nested `${{` in \"{s}\" is not supported")))
            }
            Some(end) => Ok(start + 3 + end),
            None => Err(err(format!("unclosed `${{` in \"{s}\""))),
        }
    };
    if s.starts_with("${") && closing(0)? == s.len() {
        return resolve_expr(root, path, &s[2..s.len() - 1], stack);
    }
    let mut out = String::new();
    let mut i = 0;
    while let Some(at) = s[i..].find("${").map(|at| i + at) {
        if s[..at].ends_with('\\') {
            out.push_str(&s[i..at - 1]);
            out.push_str("${");
            i = at + 2;
            continue;
        }
        out.push_str(&s[i..at]);
        let end = closing(at)?;
        let v = resolve_expr(root, path, &s[at + 2..end - 1], stack)?;
        out.push_str(&as_text(&v).ok_or_else(|| {
            err(format!(
                "`{}` is a list or mapping and cannot be spliced into the string \"{s}\"",
                &s[at..end]
            ))
        })?);
        i = end;
    }
    out.push_str(&s[i..]);
    Ok(Value::String(out))
}

/// How OmegaConf prints a scalar spliced into a string (Python's `str`).
fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("None".into()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.into()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn resolve_expr(
    root: &Value,
    path: &str,
    expr: &str,
    stack: &mut Vec<String>,
) -> Result<Value, ConfigError> {
    let err = |reason: String| ConfigError::Interpolation {
        key: path.to_string(),
        reason,
    };
    let expr = expr.trim();
    if let Some(args) = expr.strip_prefix("oc.env:") {
        let (name, default) = match args.split_once(',') {
            Some((n, d)) => (n.trim(), Some(d.trim())),
            None => (args.trim(), None),
        };
        return match (std::env::var(name), default) {
            (Ok(v), _) => Ok(Value::String(v)),
            (Err(_), Some(d)) => Ok(match d {
                "null" => Value::Null,
                d => Value::String(d.trim_matches(|c| c == '\'' || c == '"').to_string()),
            }),
            (Err(_), None) => Err(err(format!(
                "environment variable `{name}` is not set (in `${{{expr}}}`)"
            ))),
        };
    }
    if let Some((resolver, _)) = expr.split_once(':') {
        return Err(err(format!(
            "unknown resolver `{resolver}` in `${{{expr}}}` (rlvr knows `oc.env`)"
        )));
    }
    let target = absolute(path, expr)
        .ok_or_else(|| err(format!("`${{{expr}}}` climbs above the top of the config")))?;
    if stack.contains(&target) {
        return Err(err(format!(
            "interpolation cycle: {} -> {target}",
            stack.join(" -> ")
        )));
    }
    let Some(v) = get(root, &target) else {
        return Err(err(format!(
            "`${{{expr}}}` refers to `{target}`, which does not exist"
        )));
    };
    stack.push(target.clone());
    let resolved = resolve_value(root, &target, v, stack);
    stack.pop();
    resolved
}

/// The absolute key an `${expr}` written at `path` refers to.
fn absolute(path: &str, expr: &str) -> Option<String> {
    let dots = expr.chars().take_while(|c| *c == '.').count();
    if dots == 0 {
        return Some(expr.to_string());
    }
    let mut base: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    // One dot is the node's own section; each further dot climbs one more level.
    for _ in 0..dots {
        base.pop()?;
    }
    Some(join(&base.join("."), &expr[dots..]))
}
