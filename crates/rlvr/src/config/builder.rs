//! Building a config: defaults, then YAML files, then command-line overrides, then resolution.
//! Keys are checked as they come in (an unknown key names the file or override and the nearest
//! key of the defaults); values are checked by deserialising the merged tree into the typed
//! [`Config`], whose errors name the key and where its value came from.

use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::path::Path;

use super::error::{ConfigError, Origin};
use super::override_arg::{self, Mode};
use super::resolved::ResolvedConfig;
use super::tree::{get, is_section, join, kind_name_of, leaves, set};
use super::{interpolate, values, Config};

/// The built-in defaults: `crates/rlvr/config/base.yaml`, compiled into the binary.
const BASE_YAML: &str = include_str!("../../config/base.yaml");

/// The defaults as a tree.
pub(crate) fn defaults() -> Value {
    serde_yaml::from_str(BASE_YAML).expect("crates/rlvr/config/base.yaml is valid YAML")
}

#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    tree: Value,
    defaults: Value,
    /// Keys a file or an override set, and where the last value came from.
    origins: BTreeMap<String, Origin>,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigBuilder {
    /// Start from the built-in defaults.
    pub fn new() -> Self {
        let tree = defaults();
        ConfigBuilder {
            defaults: tree.clone(),
            tree,
            origins: BTreeMap::new(),
        }
    }

    /// Merge a YAML file over the current config; unknown keys are errors naming the file.
    pub fn merge_file(&mut self, path: &Path) -> Result<&mut Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.merge_yaml(&text, Origin::File(path.display().to_string()))
    }

    /// Merge YAML text (a mapping with the config's section layout).
    pub fn merge_yaml(&mut self, text: &str, origin: Origin) -> Result<&mut Self, ConfigError> {
        let yaml_error = |message: String| ConfigError::Yaml {
            origin: origin.clone(),
            message,
        };
        let mut map = match serde_yaml::from_str(text).map_err(|e| yaml_error(e.to_string()))? {
            Value::Null => Mapping::new(),
            Value::Mapping(map) => map,
            other => {
                let found = kind_name_of(&other);
                return Err(yaml_error(format!(
                    "the top level must be a mapping of sections, found {found}"
                )));
            }
        };
        // A SkyRL-style file may start with Hydra's `defaults: [ppo_base_config, _self_]`;
        // rlvr always starts from its base, so only that composition is accepted.
        if let Some(list) = map.remove("defaults") {
            let ours = |n: &Value| matches!(n.as_str(), Some("ppo_base_config" | "_self_"));
            if !list
                .as_sequence()
                .is_some_and(|names| names.iter().all(ours))
            {
                return Err(yaml_error(
                    "Hydra `defaults:` composition is not supported; rlvr always starts from its \
                     built-in base config (only `defaults: [ppo_base_config, _self_]` is accepted)"
                        .into(),
                ));
            }
        }
        self.assign("", Value::Mapping(map), Mode::Set, &origin)?;
        Ok(self)
    }

    /// Apply one `a.b=v`, `+a.b=v` or `++a.b=v` override.
    pub fn apply_override(&mut self, arg: &str) -> Result<&mut Self, ConfigError> {
        let o = override_arg::parse(arg)?;
        self.assign(&o.key, o.value, o.mode, &Origin::Override(arg.to_string()))?;
        Ok(self)
    }

    /// Apply overrides in order; later ones win.
    pub fn apply_overrides<S: AsRef<str>>(&mut self, args: &[S]) -> Result<&mut Self, ConfigError> {
        for arg in args {
            self.apply_override(arg.as_ref())?;
        }
        Ok(self)
    }

    /// The merged tree before interpolation.
    pub fn unresolved(&self) -> &Value {
        &self.tree
    }

    /// Set `key` (`""` is the top) to `value`; a mapping given for a section of the defaults
    /// sets its keys one by one, so each is checked and keeps its own origin.
    fn assign(
        &mut self,
        key: &str,
        value: Value,
        mode: Mode,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        if key.is_empty() || is_section(&self.defaults, key) {
            let Value::Mapping(map) = value else {
                return Err(ConfigError::Type {
                    origin: origin.clone(),
                    key: key.to_string(),
                    expected: "a section (mapping)".into(),
                    got: kind_name_of(&value),
                });
            };
            for (k, v) in map {
                let Some(k) = k.as_str() else {
                    return Err(ConfigError::Yaml {
                        origin: origin.clone(),
                        message: format!("keys must be strings, found {k:?}"),
                    });
                };
                self.assign(&join(key, k), v, mode, origin)?;
            }
            return Ok(());
        }
        // Outside the defaults' keys only `+`/`++` may add a key (or set it again once added).
        if mode == Mode::Set && get(&self.tree, key).is_none() {
            return Err(ConfigError::UnknownKey {
                origin: origin.clone(),
                key: key.to_string(),
                suggestion: self.nearest(key),
            });
        }
        if mode == Mode::Add && get(&self.tree, key).is_some_and(|v| !v.is_null()) {
            return Err(ConfigError::AlreadyExists {
                origin: origin.clone(),
                key: key.to_string(),
            });
        }
        set(&mut self.tree, key, value).map_err(|b| ConfigError::NotASection {
            origin: origin.clone(),
            key: key.to_string(),
            parent: b.parent,
            what: b.what,
        })?;
        self.origins.insert(key.to_string(), origin.clone());
        Ok(())
    }

    /// The key or section of the defaults closest to `key`, the whole dotted key and its last
    /// segment counting alike: a misspelling (`eps_clip_hgih`) and a wrong section
    /// (`trainer.eps_clip_high`) are both found.
    fn nearest(&self, key: &str) -> Option<String> {
        let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
        let score = |c: &str| {
            strsim::normalized_levenshtein(key, c)
                + strsim::normalized_levenshtein(&last(key), &last(c))
        };
        let sections = |leaf: String| {
            std::iter::successors(Some(leaf), |k| k.rsplit_once('.').map(|p| p.0.to_string()))
        };
        let candidates = leaves(&self.defaults)
            .into_iter()
            .flat_map(|(k, _)| sections(k));
        // The first of the best (`min_by` keeps the first of equals).
        candidates
            .map(|k| (score(&k), k))
            .min_by(|a, b| b.0.total_cmp(&a.0))
            .filter(|(score, _)| *score >= 1.0)
            .map(|(_, k)| k)
    }

    /// Resolve interpolations and build the typed [`Config`].
    pub fn resolve(&self) -> Result<ResolvedConfig, ConfigError> {
        let mut tree = interpolate::resolve(&self.tree)?;
        values::coerce(&mut tree, &self.defaults);
        let config: Config = serde_path_to_error::deserialize(tree.clone())
            .map_err(|e| self.type_error(&tree, e))?;
        let explicit = self.origins.keys().cloned().collect();
        Ok(ResolvedConfig::new(config, tree, explicit))
    }

    /// A deserialisation error in the config's words: the key, what it takes, what it got and
    /// where that came from.
    fn type_error(
        &self,
        tree: &Value,
        e: serde_path_to_error::Error<serde_yaml::Error>,
    ) -> ConfigError {
        let key = e.path().to_string();
        let message = e.inner().to_string();
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            return ConfigError::Invalid(vec![format!(
                "`{key}.{field}` is missing: `{key}` needs it once any of its keys is set \
                 (e.g. `+{key}.{field}=...`)"
            )]);
        }
        // Where the value came from: the key itself, or the section that was set whole.
        let origin = std::iter::successors(Some(key.as_str()), |k| k.rsplit_once('.').map(|p| p.0))
            .find_map(|k| self.origins.get(k))
            .cloned()
            .unwrap_or(if get(&self.defaults, &key).is_some() {
                Origin::Defaults
            } else {
                Origin::Resolved
            });
        let value = get(tree, &key).cloned().unwrap_or(Value::Null);
        let got = match &value {
            Value::Number(n) => format!("{} {n}", kind_name_of(&value)),
            Value::String(s) => format!("{} \"{s}\"", kind_name_of(&value)),
            other => kind_name_of(other),
        };
        let expected = match message.split_once(", expected ") {
            Some((_, what)) if message.starts_with("unknown variant") => {
                let names = what.trim_start_matches("one of ").replace(" or ", ", ");
                format!("one of {}", names.replace('`', ""))
            }
            Some((_, what)) => values::expected_in_words(what),
            None => message,
        };
        ConfigError::Type {
            origin,
            key,
            expected,
            got,
        }
    }
}
