//! Dotted-path access into a YAML tree (`serde_yaml::Value`, insertion-ordered mappings).

use serde_yaml::{Mapping, Value};

pub fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The value at `path` (`a.b.c`), if every segment exists.
pub fn get<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = tree;
    for seg in path.split('.') {
        node = node.as_mapping()?.get(seg)?;
    }
    Some(node)
}

/// Whether `key` is a section of `tree` (a non-empty mapping; an empty one is a leaf that takes
/// a whole mapping).
pub fn is_section(tree: &Value, key: &str) -> bool {
    get(tree, key)
        .and_then(Value::as_mapping)
        .is_some_and(|m| !m.is_empty())
}

/// Why a value cannot be written at a path: the first prefix holding a non-mapping value.
#[derive(Debug)]
pub struct Blocked {
    pub parent: String,
    pub what: String,
}

/// Write `value` at `path`, turning absent or null intermediate nodes into mappings.
pub fn set(tree: &mut Value, path: &str, value: Value) -> Result<(), Blocked> {
    let segs: Vec<&str> = path.split('.').collect();
    let mut node = tree;
    for (i, seg) in segs.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else {
            return Err(Blocked {
                parent: segs[..i].join("."),
                what: kind_name_of(node),
            });
        };
        let key = Value::String(seg.to_string());
        if i + 1 == segs.len() {
            map.insert(key, value);
            return Ok(());
        }
        node = map.entry(key).or_insert(Value::Null);
    }
    Ok(())
}

/// Every leaf of `tree` as (dotted key, value); empty mappings count as leaves.
pub fn leaves(tree: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(path: &str, v: &'a Value, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Mapping(m) if !m.is_empty() => {
                for (k, child) in m {
                    let k = match k {
                        Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    walk(&join(path, &k), child, out);
                }
            }
            _ => out.push((path.to_string(), v)),
        }
    }
    let mut out = Vec::new();
    walk("", tree, &mut out);
    out
}

/// "an integer", "a string", ... for error messages.
pub fn kind_name_of(v: &Value) -> String {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_creates_sections_and_get_reads_back() {
        let mut tree: Value = serde_yaml::from_str("a: {b: 1, c: null}").unwrap();
        set(&mut tree, "a.c.d", Value::from(2)).unwrap();
        set(&mut tree, "x.y", Value::from("z")).unwrap();
        assert_eq!(get(&tree, "a.c.d"), Some(&Value::from(2)));
        assert_eq!(get(&tree, "x.y"), Some(&Value::from("z")));
        assert_eq!(get(&tree, "a.b"), Some(&Value::from(1)));
        let blocked = set(&mut tree, "a.b.q", Value::Null).err().unwrap();
        assert_eq!(blocked.parent, "a.b");
        assert_eq!(blocked.what, "an integer");
        let keys: Vec<String> = leaves(&tree).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a.b", "a.c.d", "x.y"]);
    }
}
