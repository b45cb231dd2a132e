//! How values written on command lines read as the typed config wants them. What each key holds
//! is the typed config's business ([`super::Config`]), checked when the merged tree is
//! deserialised.

use serde::Deserialize;
use serde_yaml::Value;

use super::tree::{get, leaves, set};

/// What command lines write for the typed config: a number or boolean given for a key whose
/// default is a string is that text (`trainer.run_name=2024`), and a string spelling a YAML list
/// (`"['a','b']"`, as `$(...)` in a shell script leaves it) for a key whose default is a list is
/// that list.
pub fn coerce(tree: &mut Value, defaults: &Value) {
    for (key, default) in leaves(defaults) {
        let Some(value) = get(tree, &key) else {
            continue;
        };
        let fixed = match (default, value) {
            // A default of `${a.b}` takes `a.b`'s type, not a string's.
            (Value::String(d), _) if d.contains("${") => continue,
            (Value::String(_), Value::Number(n)) => Value::String(n.to_string()),
            (Value::String(_), Value::Bool(b)) => Value::String(b.to_string()),
            (Value::Sequence(_), Value::String(s)) => match flow_list(s) {
                Some(list) => list,
                None => continue,
            },
            _ => continue,
        };
        let _ = set(tree, &key, fixed);
    }
}

/// `Some(list)` when `s` is a YAML flow sequence such as `['a', 'b']`.
pub fn flow_list(s: &str) -> Option<Value> {
    let t = s.trim();
    if !(t.starts_with('[') && t.ends_with(']')) {
        return None;
    }
    match serde_yaml::from_str::<Value>(t) {
        Ok(v @ Value::Sequence(_)) => Some(v),
        _ => None,
    }
}

/// One name or a list of them; a string spelling a YAML list (`"['a','b']"`, as a shell script's
/// `$(...)` leaves it) is that list.
pub fn names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let strings = |v: &Value| -> Option<Vec<String>> {
        let items = v.as_sequence()?.iter();
        items.map(|x| x.as_str().map(String::from)).collect()
    };
    match Value::deserialize(d)? {
        Value::String(s) => Ok(flow_list(&s).as_ref().and_then(strings).unwrap_or(vec![s])),
        v => strings(&v).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid type: {}, expected a name or a list of names (e.g. ['a','b'])",
                super::tree::kind_name_of(&v)
            ))
        }),
    }
}

/// [`names`], or null.
pub fn optional_names<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Wrap(#[serde(deserialize_with = "names")] Vec<String>);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

/// [`names`] joined with commas (`trainer.logger`).
pub fn joined_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(names(d)?.join(","))
}

/// serde's words for what a key expected, in the config's words.
pub fn expected_in_words(serde_expected: &str) -> String {
    match serde_expected {
        "usize" | "u64" | "u32" => "a non-negative integer",
        "i64" | "i32" => "an integer",
        "f64" | "f32" => "a number",
        "a boolean" => "a boolean (true/false)",
        "a sequence" => "a list (e.g. ['a','b'])",
        "a map" | "struct" => "a mapping",
        other => return other.replace('`', ""),
    }
    .to_string()
}
