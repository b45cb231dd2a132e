//! SkyRL keys that steer its GPU stack (Ray placement, FSDP, vLLM/SGLang engines, weight sync,
//! wandb) or features rlvr lacks, listed in `crates/rlvr/config/skyrl_compat.yaml`. They parse so
//! a SkyRL command line carries over, and none has a field in the typed config. An ignored key
//! set by a file or an override gets one warning line saying what rlvr does instead; a refused
//! key whose value would silently change results is an error. The same file lists the typed keys
//! that only remote engines read, which get a warning line when rlvr runs its embedded engine.
//! (`trainer.logger` names rlvr cannot serve, such as wandb, are reported by `crate::logging` when
//! a run starts.)

use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;

use super::resolved::ResolvedConfig;

#[derive(Deserialize)]
pub(crate) struct Table {
    /// Key or prefix (ending in `.` or `_`) → what rlvr does instead.
    ignored: BTreeMap<String, String>,
    /// Key → (the one value rlvr runs with, why).
    pub(crate) refused: BTreeMap<String, (Value, String)>,
    /// Typed keys that only remote engines read → what rlvr does with them otherwise.
    remote_only: BTreeMap<String, String>,
}

impl Table {
    /// What rlvr does instead of `key`, for an ignored key (the most specific pattern's words).
    fn ignored_why(&self, key: &str) -> Option<&str> {
        let patterns = self.ignored.iter().filter(|(p, _)| covered(key, p));
        patterns
            .max_by_key(|(p, _)| p.len())
            .map(|(_, why)| why.as_str())
    }

    /// Whether the table lists `key` (ignored or refused).
    pub(crate) fn listed(&self, key: &str) -> bool {
        self.refused.contains_key(key) || self.ignored_why(key).is_some()
    }
}

pub(crate) fn table() -> &'static Table {
    static TABLE: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        serde_yaml::from_str(include_str!("../../config/skyrl_compat.yaml")).expect(
            "crates/rlvr/config/skyrl_compat.yaml holds `ignored`, `refused`, `remote_only`",
        )
    })
}

/// Whether `pattern` (a key, or a prefix ending in `.` or `_`) covers `key`.
pub(crate) fn covered(key: &str, pattern: &str) -> bool {
    if pattern.ends_with('.') || pattern.ends_with('_') {
        key.starts_with(pattern)
    } else {
        key == pattern
    }
}

/// A value as the command line would write it (`null` for none; a string that would read as
/// another type quoted).
fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "null".into(),
        Some(v) => serde_yaml::to_string(v)
            .unwrap_or_default()
            .trim()
            .replace('\n', " "),
    }
}

/// Equal as YAML values, with `1` and `1.0` the same number.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

pub fn check(r: &ResolvedConfig, warnings: &mut Vec<String>, errors: &mut Vec<String>) {
    let local = r.config.generator.run_engines_locally;
    let t = table();
    for (key, (only, why)) in &t.refused {
        let value = r.get(key);
        if !same(value.unwrap_or(&Value::Null), only) {
            let (value, only) = (show(value), show(Some(only)));
            errors.push(format!("`{key}={value}`: {why}; use {only}"));
        }
    }
    // Remote engines' settings act only on remote engines.
    for (key, why) in t
        .remote_only
        .iter()
        .filter(|(k, _)| local && r.is_explicit(k))
    {
        warnings.push(format!("`{key}={}`: {why}", show(r.get(key))));
    }
    for key in r.explicit_keys() {
        let Some(why) = t.ignored_why(key).filter(|_| !t.refused.contains_key(key)) else {
            continue;
        };
        // The in-process choices rlvr makes anyway are not worth a warning.
        let value = r.get(key);
        let one = value.and_then(Value::as_u64) == Some(1);
        let honoured = match key {
            // One engine, one device, everything colocated: what rlvr does anyway.
            k if k.ends_with("_size") || k.ends_with("_num_nodes") => one,
            k if k.ends_with("_num_gpus_per_node") || k == "generator.num_inference_engines" => one,
            k if k.starts_with("trainer.placement.colocate_") => value == Some(&Value::Bool(true)),
            _ => false,
        };
        if !honoured {
            warnings.push(format!("`{key}={}`: {why}", show(value)));
        }
    }
    // Critic settings act only on a critic (as in SkyRL); say so where one is set without it.
    if r.config.trainer.critic.model.path.is_none() {
        for key in r.explicit_keys() {
            let critic_only = (key.starts_with("trainer.critic.")
                && key != "trainer.critic.model.path")
                || key == "trainer.critic_mini_batch_size"
                || key == "trainer.algorithm.value_clip"
                || key == "trainer.algorithm.value_head_prefix";
            if critic_only && !t.listed(key) {
                warnings.push(format!(
                    "`{key}={}`: only for a critic, and trainer.critic.model.path is null; ignored",
                    show(r.get(key))
                ));
            }
        }
    }
    if !local && r.config.generator.remote_inference_engine_urls.is_empty() {
        errors.push(
            "`generator.remote_inference_engine_urls=[]`: run_engines_locally=false needs at least \
             one server (host:port)"
                .into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{covered, table};
    use crate::config::{flatten, ConfigBuilder};

    #[test]
    fn every_listed_key_is_a_key_of_the_defaults() {
        let defaults = super::super::builder::defaults();
        let keys: Vec<String> = flatten(&defaults).into_iter().map(|(k, _)| k).collect();
        assert!(table().ignored.len() > 40 && table().refused.len() > 10);
        for (pattern, why) in &table().ignored {
            assert!(
                keys.iter().any(|k| covered(k, pattern)),
                "{pattern} covers no key of base.yaml"
            );
            assert!(!why.is_empty());
        }
        for key in table().refused.keys().chain(table().remote_only.keys()) {
            assert!(keys.contains(key), "{key} is not a key of base.yaml");
        }
    }

    /// One definition per key: each key of the resolved tree is a field of the typed config or
    /// listed in the compat table, never both (`tests/config.rs` checks the typed values).
    #[test]
    fn typed_config_and_compat_table_split_the_keys() {
        let r = ConfigBuilder::new().resolve().unwrap();
        let typed = serde_yaml::to_value(&r.config).unwrap();
        let typed: Vec<(String, &serde_yaml::Value)> = flatten(&typed);
        for (key, _) in &typed {
            assert!(
                !table().listed(key),
                "`{key}` is typed and listed in skyrl_compat.yaml"
            );
        }
        for (key, _) in flatten(r.tree()) {
            let is_typed = typed.iter().any(|(k, _)| *k == key);
            assert!(
                is_typed || table().listed(&key),
                "`{key}` is neither typed nor listed"
            );
        }
    }
}
