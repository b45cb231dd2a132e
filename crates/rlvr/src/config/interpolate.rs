//! OmegaConf-style interpolation, applied once after every override is in:
//! `${a.b.c}` (absolute), `${.sibling}` / `${..uncle}` (relative), `${oc.env:VAR}` and
//! `${oc.env:VAR,default}`. A string that is exactly one `${...}` takes the referenced value with
//! its type (a list stays a list); inside a longer string the value is spliced in as text.
//! `\${` is a literal `${`.

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

/// The byte range of the `${...}` starting at `start` (balanced braces), end exclusive.
fn closing(s: &str, start: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            depth += 1;
            i += 2;
            continue;
        }
        if bytes[i] == b'}' {
            depth -= 1;
            if depth == 0 {
                return Some(i + 1);
            }
        }
        i += 1;
    }
    None
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
    if s.starts_with("${") && closing(s, 0) == Some(s.len()) {
        return resolve_expr(root, path, &s[2..s.len() - 1], stack);
    }
    let mut out = String::new();
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        if rest.starts_with("\\${") {
            out.push_str("${");
            i += 3;
        } else if rest.starts_with("${") {
            let end = closing(s, i).ok_or_else(|| err(format!("unclosed `${{` in \"{s}\"")))?;
            let v = resolve_expr(root, path, &s[i + 2..end - 1], stack)?;
            out.push_str(&as_text(&v).ok_or_else(|| {
                err(format!(
                    "`{}` is a list or mapping and cannot be spliced into the string \"{s}\"",
                    &s[i..end]
                ))
            })?);
            i = end;
        } else {
            let c = rest.chars().next().expect("non-empty");
            out.push(c);
            i += c.len_utf8();
        }
    }
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
    // Nested interpolations inside the expression come first (`${oc.env:${a.b}}`).
    let expr = if expr.contains("${") {
        match resolve_string(root, path, expr, stack)? {
            Value::String(s) => s,
            other => as_text(&other).unwrap_or_default(),
        }
    } else {
        expr.to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn whole_references_keep_their_type() {
        let t = yaml("a: {n: 512, l: [1, 2], z: null}\nb: {n: '${a.n}', l: '${a.l}', z: '${a.z}', c: '${.n}'}");
        let r = resolve(&t).unwrap();
        assert_eq!(get(&r, "b.n"), Some(&Value::from(512)));
        assert_eq!(get(&r, "b.l"), Some(&yaml("[1, 2]")));
        assert_eq!(get(&r, "b.z"), Some(&Value::Null));
        assert_eq!(get(&r, "b.c"), Some(&Value::from(512)));
    }

    #[test]
    fn chains_strings_env_and_escapes() {
        std::env::set_var("RLVR_TEST_INTERP_VAR", "/home/x");
        let t = yaml(
            "p: '${q}'\nq: '${oc.env:RLVR_TEST_INTERP_VAR}/ckpt'\n\
             l: ['${oc.env:RLVR_TEST_INTERP_VAR}/d.parquet']\n\
             d: '${oc.env:RLVR_TEST_SURELY_UNSET,fallback}'\ne: 'cost \\${x} ${n}'\nn: 3",
        );
        let r = resolve(&t).unwrap();
        assert_eq!(get(&r, "p"), Some(&Value::from("/home/x/ckpt")));
        assert_eq!(get(&r, "l"), Some(&yaml("['/home/x/d.parquet']")));
        assert_eq!(get(&r, "d"), Some(&Value::from("fallback")));
        assert_eq!(get(&r, "e"), Some(&Value::from("cost ${x} 3")));
    }

    #[test]
    fn errors_name_the_key() {
        let missing = resolve(&yaml("a: {b: '${a.nope}'}"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("`a.b`") && missing.contains("a.nope"),
            "{missing}"
        );
        let cycle = resolve(&yaml("a: '${b}'\nb: '${a}'"))
            .unwrap_err()
            .to_string();
        assert!(cycle.contains("cycle"), "{cycle}");
        let unset = resolve(&yaml("a: '${oc.env:RLVR_TEST_SURELY_UNSET}'"))
            .unwrap_err()
            .to_string();
        assert!(unset.contains("RLVR_TEST_SURELY_UNSET"), "{unset}");
        let resolver = resolve(&yaml("a: '${oc.decode:x}'"))
            .unwrap_err()
            .to_string();
        assert!(resolver.contains("oc.decode"), "{resolver}");
    }
}
