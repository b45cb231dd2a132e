//! A fully resolved config: the typed view the trainer reads, plus the raw merged tree for the
//! keys the typed view does not hold (SkyRL's keys of `skyrl_compat.yaml`, keys added with `+`).

use serde_yaml::Value;
use std::collections::BTreeSet;

use super::error::ConfigError;
use super::tree::get;
use super::validate;
use super::Config;

#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    /// Typed access to every key rlvr acts on.
    pub config: Config,
    tree: Value,
    explicit: BTreeSet<String>,
}

impl ResolvedConfig {
    pub(crate) fn new(config: Config, tree: Value, explicit: BTreeSet<String>) -> Self {
        ResolvedConfig {
            config,
            tree,
            explicit,
        }
    }

    /// The raw merged tree after interpolation, `+` keys included.
    pub fn tree(&self) -> &Value {
        &self.tree
    }

    /// The value at a dotted key, `+` keys included.
    pub fn get(&self, key: &str) -> Option<&Value> {
        get(&self.tree, key)
    }

    /// Whether a file or an override set `key` (as opposed to the defaults).
    pub fn is_explicit(&self, key: &str) -> bool {
        self.explicit.contains(key)
    }

    /// Keys a file or an override set, in sorted order.
    pub fn explicit_keys(&self) -> impl Iterator<Item = &str> {
        self.explicit.iter().map(String::as_str)
    }

    /// The resolved config as YAML, in `base.yaml`'s key order.
    /// Secrets (`generator.remote_api_key`) are written as `"***"`: this text goes to run
    /// directories and logs.
    pub fn to_yaml(&self) -> String {
        let mut tree = self.tree.clone();
        if let Some(key) = tree
            .get_mut("generator")
            .and_then(|g| g.get_mut("remote_api_key"))
            .filter(|k| !k.is_null())
        {
            *key = Value::from("***");
        }
        serde_yaml::to_string(&tree).expect("a YAML tree serializes")
    }

    /// Check every rule (see [`validate`](super::validate)) with rlvr-algo's registries.
    /// Ok holds one line per key rlvr parses but cannot honour.
    pub fn validate(&self) -> Result<Vec<String>, ConfigError> {
        validate::validate(self)
    }
}
