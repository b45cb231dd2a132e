//! The schema: every valid dotted key and the kind of value it takes, read off the defaults in
//! `base.yaml`. A default of `null` says nothing about the type, so such keys get a hint here.

use serde_yaml::Value;
use std::collections::BTreeMap;

use super::tree::{join, kind_name_of};

/// The kind of value a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// An integer that may be negative (SkyRL uses -1 for "off" / "all").
    Int,
    /// A non-negative integer (sizes, counts, lengths).
    UInt,
    /// Any number; integers are widened.
    Float,
    Str,
    List,
    /// A free-form mapping (`{}` default, e.g. `model_config_kwargs`).
    Map,
    /// A string or a list of strings (`stop`, `exclude_modules`).
    StrOrList,
    /// Names as one comma-separated string; a list of names is joined (`trainer.logger`).
    Names,
    /// Anything (e.g. `rope_scaling`).
    Any,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Bool => "a boolean (true/false)",
            Kind::Int => "an integer",
            Kind::UInt => "a non-negative integer",
            Kind::Float => "a number",
            Kind::Str => "a string",
            Kind::List => "a list (e.g. ['a','b'])",
            Kind::Map => "a mapping",
            Kind::StrOrList => "a string or a list of strings",
            Kind::Names => "a name or a list of names",
            Kind::Any => "any value",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub kind: Kind,
    pub nullable: bool,
}

/// Types for keys whose SkyRL default is `null`.
const NULL_DEFAULT_HINTS: &[(&str, Kind)] = &[
    ("trainer.policy.model.lora.exclude_modules", Kind::StrOrList),
    ("trainer.critic.model.lora.exclude_modules", Kind::StrOrList),
    ("trainer.critic.model.path", Kind::Str),
    ("trainer.algorithm.max_seq_len", Kind::UInt),
    (
        "trainer.algorithm.off_policy_correction.tis_ratio_type",
        Kind::Str,
    ),
    (
        "trainer.algorithm.off_policy_correction.sequence_mask_metric",
        Kind::Str,
    ),
    (
        "trainer.algorithm.off_policy_correction.outlier_token_is_threshold_low",
        Kind::Float,
    ),
    (
        "trainer.algorithm.off_policy_correction.outlier_token_is_threshold_high",
        Kind::Float,
    ),
    ("trainer.algorithm.dynamic_sampling.type", Kind::Str),
    ("trainer.resume_path", Kind::Str),
    ("trainer.rope_scaling", Kind::Any),
    ("trainer.rope_theta", Kind::Float),
    ("generator.external_proxy_url", Kind::Str),
    ("generator.external_server_urls", Kind::List),
    ("generator.served_model_name", Kind::Str),
    ("generator.chat_template.name_or_path", Kind::Str),
    ("generator.sampling_params.stop", Kind::StrOrList),
    ("generator.eval_sampling_params.stop", Kind::StrOrList),
    ("environment.skyrl_gym.llm_as_a_judge.base_url", Kind::Str),
];

/// Integer defaults that stand for a number (`dropout: 0`, `cispo_eps_clip_high: 5`).
const FLOAT_WITH_INT_DEFAULT: &[&str] = &[
    "trainer.policy.model.lora.dropout",
    "trainer.critic.model.lora.dropout",
    "trainer.algorithm.cispo.cispo_eps_clip_low",
    "trainer.algorithm.cispo.cispo_eps_clip_high",
];

/// Integer keys with a non-negative default that also take -1 ("disabled" / "no limit").
const SIGNED_INT: &[&str] = &[
    "trainer.ckpt_interval",
    "trainer.eval_interval",
    "trainer.algorithm.dynamic_sampling.max_sample_batches",
];

/// String keys that also take a list (SkyRL's logger takes one backend or several).
const NAMES: &[&str] = &["trainer.logger"];

/// Keys with a non-null default that SkyRL also accepts as `null`.
const ALSO_NULLABLE: &[&str] = &[
    "trainer.resume_mode",
    "trainer.algorithm.value_clip",
    "generator.sampling_params.logprobs",
    "generator.eval_sampling_params.logprobs",
];

/// rlvr-only sections that are absent (`null`) by default, with the kinds of their keys.
const OPTIONAL_SECTIONS: &[(&str, &[(&str, Kind)])] = &[(
    "trainer.algorithm.overlong_buffer",
    &[("len", Kind::UInt), ("penalty_factor", Kind::Float)],
)];

#[derive(Debug, Clone)]
pub struct Schema {
    leaves: BTreeMap<String, Spec>,
    /// Section path -> whether the whole section may be null (optional sections).
    sections: BTreeMap<String, bool>,
}

impl Schema {
    pub fn from_defaults(defaults: &Value) -> Schema {
        let mut schema = Schema {
            leaves: BTreeMap::new(),
            sections: BTreeMap::new(),
        };
        let mut interpolated = Vec::new();
        schema.walk("", defaults, &mut interpolated);
        // A default of exactly `${a.b}` takes the kind of `a.b` (e.g. `generator.max_input_length`).
        for (key, target) in interpolated {
            let spec = schema.leaves.get(&target).copied().unwrap_or(Spec {
                kind: Kind::Any,
                nullable: true,
            });
            schema.leaves.insert(key, spec);
        }
        schema
    }

    fn walk(&mut self, path: &str, value: &Value, interpolated: &mut Vec<(String, String)>) {
        match value {
            Value::Mapping(map) if !map.is_empty() => {
                if !path.is_empty() {
                    self.sections.insert(path.to_string(), false);
                }
                for (k, v) in map {
                    let k = k.as_str().expect("base.yaml keys are strings");
                    self.walk(&join(path, k), v, interpolated);
                }
            }
            Value::Null => {
                if let Some((_, keys)) = OPTIONAL_SECTIONS.iter().find(|(p, _)| *p == path) {
                    self.sections.insert(path.to_string(), true);
                    for (k, kind) in keys.iter() {
                        let spec = Spec {
                            kind: *kind,
                            nullable: false,
                        };
                        self.leaves.insert(join(path, k), spec);
                    }
                    return;
                }
                let kind = NULL_DEFAULT_HINTS
                    .iter()
                    .find(|(k, _)| *k == path)
                    .map(|(_, kind)| *kind)
                    .unwrap_or(Kind::Any);
                let spec = Spec {
                    kind,
                    nullable: true,
                };
                self.leaves.insert(path.to_string(), spec);
            }
            Value::String(s) if whole_reference(s).is_some() => {
                interpolated.push((path.to_string(), whole_reference(s).unwrap().to_string()));
            }
            other => {
                let kind = match other {
                    Value::Bool(_) => Kind::Bool,
                    Value::Number(n) if n.is_f64() => Kind::Float,
                    Value::Number(_) if FLOAT_WITH_INT_DEFAULT.contains(&path) => Kind::Float,
                    Value::Number(n) if n.is_i64() && n.as_i64() < Some(0) => Kind::Int,
                    Value::Number(_) if SIGNED_INT.contains(&path) => Kind::Int,
                    Value::Number(_) => Kind::UInt,
                    Value::String(_) if NAMES.contains(&path) => Kind::Names,
                    Value::String(_) => Kind::Str,
                    Value::Sequence(_) => Kind::List,
                    Value::Mapping(_) => Kind::Map,
                    _ => Kind::Any,
                };
                let nullable = ALSO_NULLABLE.contains(&path);
                self.leaves
                    .insert(path.to_string(), Spec { kind, nullable });
            }
        }
    }

    pub fn leaf(&self, key: &str) -> Option<Spec> {
        self.leaves.get(key).copied()
    }

    /// `Some(nullable)` when `key` is a section.
    pub fn section(&self, key: &str) -> Option<bool> {
        self.sections.get(key).copied()
    }

    /// Optional sections (absent by default) with the keys each needs when present.
    pub fn optional_sections(&self) -> impl Iterator<Item = (&str, Vec<&str>)> {
        self.sections
            .iter()
            .filter(|(_, nullable)| **nullable)
            .map(|(path, _)| {
                let prefix = format!("{path}.");
                let keys = self
                    .leaves
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .map(String::as_str)
                    .collect();
                (path.as_str(), keys)
            })
    }

    /// Every valid dotted leaf key, in sorted order.
    pub fn leaf_keys(&self) -> impl Iterator<Item = &str> {
        self.leaves.keys().map(String::as_str)
    }

    /// The valid key closest to `key`: the full dotted key and its last segment both count,
    /// so a misspelling (`eps_clip_hgih`) and a wrong section (`trainer.eps_clip_high`) are found.
    pub fn nearest(&self, key: &str) -> Option<String> {
        let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
        let key_last = last(key);
        let mut best: Option<(f64, &str)> = None;
        for candidate in self.leaves.keys().chain(self.sections.keys()) {
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

    /// The closest prefix of `key` that is a leaf, with its spec (for `+` keys below a leaf).
    pub fn leaf_prefix<'a>(&self, key: &'a str) -> Option<(&'a str, Spec)> {
        let mut end = key.len();
        while let Some(dot) = key[..end].rfind('.') {
            end = dot;
            if let Some(spec) = self.leaf(&key[..end]) {
                return Some((&key[..end], spec));
            }
        }
        None
    }
}

/// `Some("a.b")` when `s` is exactly one `${a.b}` reference to another key.
pub fn whole_reference(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("${")?.strip_suffix('}')?;
    if inner.contains(['$', '{', '}', ':']) || inner.is_empty() {
        return None;
    }
    Some(inner)
}

/// Check `value` against `spec`, widening integers for number keys and parsing a quoted list
/// (`"['x','y']"`) for list keys. Strings holding `${...}` pass; they are checked after resolution.
pub fn check(spec: Spec, value: Value) -> Result<Value, (String, String)> {
    let expected = || {
        if spec.nullable {
            format!("{} or null", spec.kind.describe())
        } else {
            spec.kind.describe().to_string()
        }
    };
    let got = |v: &Value| kind_name_of(v);
    if let Value::String(s) = &value {
        if s.contains("${") {
            return Ok(value);
        }
    }
    if value.is_null() {
        return if spec.nullable {
            Ok(value)
        } else {
            Err((expected(), "null".into()))
        };
    }
    let ok = match (spec.kind, &value) {
        (Kind::Any, _) => true,
        // `stop="['</s>']"` through `$(...)` keeps its quotes; read it as the list it spells.
        (Kind::StrOrList, Value::String(s)) => return Ok(flow_list(s).unwrap_or(value)),
        (Kind::StrOrList, Value::Sequence(items)) => items.iter().all(Value::is_string),
        (Kind::Names, Value::String(s)) => match flow_list(s) {
            Some(list) => return check(spec, list),
            None => true,
        },
        (Kind::Names, Value::Sequence(items)) if items.iter().all(Value::is_string) => {
            let names: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            return Ok(Value::String(names.join(",")));
        }
        (Kind::Bool, Value::Bool(_)) => true,
        (Kind::Int, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Kind::UInt, Value::Number(n)) => n.is_u64(),
        (Kind::Float, Value::Number(n)) => {
            return Ok(Value::Number(n.as_f64().unwrap_or(f64::NAN).into()));
        }
        (Kind::Str, Value::String(_)) => true,
        // `trainer.run_name=2024` means the string "2024".
        (Kind::Str, Value::Number(n)) => return Ok(Value::String(n.to_string())),
        (Kind::List, Value::Sequence(_)) => true,
        (Kind::List, Value::String(s)) => match flow_list(s) {
            Some(list) => return Ok(list),
            None => false,
        },
        (Kind::Map, Value::Mapping(_)) => true,
        _ => false,
    };
    if ok {
        Ok(value)
    } else {
        let mut got_text = got(&value);
        if let Value::Number(n) = &value {
            got_text = format!("{got_text} {n}");
        } else if let Value::String(s) = &value {
            got_text = format!("{got_text} \"{s}\"");
        }
        Err((expected(), got_text))
    }
}

/// `Some(list)` when `s` is a YAML flow sequence such as `['a', 'b']`.
fn flow_list(s: &str) -> Option<Value> {
    let t = s.trim();
    if !(t.starts_with('[') && t.ends_with(']')) {
        return None;
    }
    match serde_yaml::from_str::<Value>(t) {
        Ok(v @ Value::Sequence(_)) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::from_defaults(&super::super::defaults::tree())
    }

    #[test]
    fn kinds_come_from_defaults_and_hints() {
        let s = schema();
        assert_eq!(s.leaf("trainer.train_batch_size").unwrap().kind, Kind::UInt);
        assert_eq!(s.leaf("trainer.eval_interval").unwrap().kind, Kind::Int);
        assert_eq!(s.leaf("trainer.max_ckpts_to_keep").unwrap().kind, Kind::Int);
        assert_eq!(
            s.leaf("trainer.policy.model.lora.dropout").unwrap().kind,
            Kind::Float
        );
        assert_eq!(
            s.leaf("trainer.algorithm.eps_clip_high").unwrap().kind,
            Kind::Float
        );
        let max_seq_len = s.leaf("trainer.algorithm.max_seq_len").unwrap();
        assert_eq!((max_seq_len.kind, max_seq_len.nullable), (Kind::UInt, true));
        // `${trainer.max_prompt_length}` makes max_input_length an integer key.
        assert_eq!(
            s.leaf("generator.max_input_length").unwrap().kind,
            Kind::UInt
        );
        assert_eq!(
            s.leaf("trainer.policy.optimizer_config.weight_decay")
                .unwrap()
                .kind,
            Kind::Float
        );
        assert_eq!(s.section("trainer.algorithm.overlong_buffer"), Some(true));
        assert_eq!(s.section("trainer.algorithm"), Some(false));
        assert_eq!(
            s.leaf("trainer.algorithm.overlong_buffer.len")
                .unwrap()
                .kind,
            Kind::UInt
        );
    }

    #[test]
    fn nearest_finds_misspelling_and_wrong_section() {
        let s = schema();
        assert_eq!(
            s.nearest("trainer.algorithm.eps_clip_hgih").as_deref(),
            Some("trainer.algorithm.eps_clip_high")
        );
        assert_eq!(
            s.nearest("trainer.eps_clip_high").as_deref(),
            Some("trainer.algorithm.eps_clip_high")
        );
        assert_eq!(
            s.nearest("generator.sampling_params.temprature").as_deref(),
            Some("generator.sampling_params.temperature")
        );
    }

    #[test]
    fn check_widens_parses_and_rejects() {
        let int = Spec {
            kind: Kind::Int,
            nullable: false,
        };
        let float = Spec {
            kind: Kind::Float,
            nullable: false,
        };
        let list = Spec {
            kind: Kind::List,
            nullable: false,
        };
        assert!(check(int, Value::from(3)).is_ok());
        assert!(check(int, Value::from(-1)).is_ok());
        let uint = Spec {
            kind: Kind::UInt,
            nullable: false,
        };
        assert!(check(uint, Value::from(-1)).is_err());
        assert!(check(int, Value::from(3.5)).is_err());
        assert!(check(int, Value::Null).is_err());
        assert_eq!(check(float, Value::from(10)).unwrap(), Value::from(10.0));
        let (expected, got) = check(float, Value::from("abc")).unwrap_err();
        assert_eq!(expected, "a number");
        assert!(got.contains("abc"), "{got}");
        assert_eq!(
            check(list, Value::from("['x', 'y']")).unwrap(),
            serde_yaml::from_str::<Value>("[x, y]").unwrap()
        );
        assert!(check(list, Value::from("x")).is_err());
        let stop = Spec {
            kind: Kind::StrOrList,
            nullable: true,
        };
        assert_eq!(
            check(stop, Value::from("['</s>']")).unwrap(),
            Value::Sequence(vec![Value::from("</s>")])
        );
        assert_eq!(
            check(stop, Value::from("</s>")).unwrap(),
            Value::from("</s>")
        );
        assert!(check(stop, Value::from(3)).is_err());
        let names = Spec {
            kind: Kind::Names,
            nullable: false,
        };
        let joined = Value::from("console,jsonl");
        assert_eq!(
            check(names, Value::from("['console', 'jsonl']")).unwrap(),
            joined
        );
        assert_eq!(
            check(names, serde_yaml::from_str("[console, jsonl]").unwrap()).unwrap(),
            joined
        );
        assert_eq!(
            check(names, Value::from("wandb")).unwrap(),
            Value::from("wandb")
        );
        assert!(check(int, Value::from("${trainer.seed}")).is_ok());
    }
}
