//! The valid keys: every leaf and section of the defaults (`base.yaml`, SkyRL's layout). What
//! each key holds is the typed config's business ([`super::Config`]), checked when the merged
//! tree is deserialised.

use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;

use super::tree::get;

#[derive(Debug, Clone)]
pub struct Keys {
    /// Dotted key → whether it is a section (a non-empty mapping in the defaults).
    known: BTreeMap<String, bool>,
}

impl Keys {
    pub fn from_defaults(defaults: &Value) -> Keys {
        let mut known = BTreeMap::new();
        for (leaf, _) in super::tree::leaves(defaults) {
            let mut section = leaf.as_str();
            while let Some((parent, _)) = section.rsplit_once('.') {
                known.insert(parent.to_string(), true);
                section = parent;
            }
            known.insert(leaf, false);
        }
        Keys { known }
    }

    pub fn is_leaf(&self, key: &str) -> bool {
        self.known.get(key) == Some(&false)
    }

    pub fn is_section(&self, key: &str) -> bool {
        self.known.get(key) == Some(&true)
    }

    /// Every leaf key, sorted.
    pub fn leaves(&self) -> impl Iterator<Item = &str> {
        self.known
            .iter()
            .filter(|(_, section)| !**section)
            .map(|(k, _)| k.as_str())
    }

    /// The valid key closest to `key`: the full dotted key and its last segment both count,
    /// so a misspelling (`eps_clip_hgih`) and a wrong section (`trainer.eps_clip_high`) are found.
    pub fn nearest(&self, key: &str) -> Option<String> {
        let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
        let key_last = last(key);
        let mut best: Option<(f64, &str)> = None;
        for candidate in self.known.keys() {
            let full = strsim::normalized_levenshtein(key, candidate);
            let tail = strsim::normalized_levenshtein(&key_last, &last(candidate));
            let score = 0.5 * full + 0.5 * tail;
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, candidate));
            }
        }
        best.filter(|(score, _)| *score >= 0.5)
            .map(|(_, k)| k.to_string())
    }
}

/// What command lines write for the typed config: a number or boolean given for a key whose
/// default is a string is that text (`trainer.run_name=2024`), and a string spelling a YAML list
/// (`"['a','b']"`, as `$(...)` in a shell script leaves it) for a key whose default is a list is
/// that list.
pub fn coerce(tree: &mut Value, defaults: &Value, keys: &Keys) {
    for key in keys.leaves() {
        let (Some(default), Some(value)) = (get(defaults, key), get(tree, key)) else {
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
        let _ = super::tree::set(tree, key, fixed);
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
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Names {
        One(String),
        Many(Vec<String>),
    }
    Ok(match serde::Deserialize::deserialize(d)? {
        Names::One(s) => match flow_list(&s).map(serde_yaml::from_value::<Vec<String>>) {
            Some(Ok(list)) => list,
            _ => vec![s],
        },
        Names::Many(list) => list,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_defaults(&super::super::builder::defaults())
    }

    #[test]
    fn leaves_and_sections_come_from_the_defaults() {
        let k = keys();
        assert!(k.is_leaf("trainer.algorithm.eps_clip_high"));
        assert!(k.is_section("trainer.algorithm"));
        assert!(!k.is_leaf("trainer.algorithm"));
        // A null default is a leaf (rlvr's optional overlong_buffer, SkyRL's resume_path).
        assert!(k.is_leaf("trainer.algorithm.overlong_buffer"));
        // An empty mapping is a leaf too: it takes a whole mapping.
        assert!(k.is_leaf("generator.chat_template_kwargs"));
    }

    #[test]
    fn nearest_finds_misspellings_and_wrong_sections() {
        let k = keys();
        assert_eq!(
            k.nearest("trainer.algorithm.eps_clip_hgih").as_deref(),
            Some("trainer.algorithm.eps_clip_high")
        );
        assert_eq!(
            k.nearest("trainer.eps_clip_high").as_deref(),
            Some("trainer.algorithm.eps_clip_high")
        );
        assert_eq!(k.nearest("zzzzzzzzzzzzzzzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn strings_and_lists_from_the_command_line_are_read_as_their_keys_want() {
        let k = keys();
        let defaults = super::super::builder::defaults();
        let mut tree = defaults.clone();
        super::super::tree::set(&mut tree, "trainer.run_name", Value::from(2024)).unwrap();
        super::super::tree::set(
            &mut tree,
            "data.val_data",
            Value::from("['a.parquet', 'b']"),
        )
        .unwrap();
        super::super::tree::set(&mut tree, "trainer.epochs", Value::from("7")).unwrap();
        coerce(&mut tree, &defaults, &k);
        assert_eq!(get(&tree, "trainer.run_name"), Some(&Value::from("2024")));
        let list: Value = serde_yaml::from_str("[a.parquet, b]").unwrap();
        assert_eq!(get(&tree, "data.val_data"), Some(&list));
        // Only strings and lists are read again: a string for a number stays a type error.
        assert_eq!(get(&tree, "trainer.epochs"), Some(&Value::from("7")));
    }
}
