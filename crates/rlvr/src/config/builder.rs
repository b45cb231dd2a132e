//! Building a config: defaults, then YAML files, then command-line overrides, then resolution.
//! Every key is checked against the schema as it comes in, so an error names the file or the
//! override that caused it.

use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::Path;

use super::error::{ConfigError, Origin};
use super::override_arg::{self, Mode};
use super::resolved::ResolvedConfig;
use super::schema::{check, Kind, Schema};
use super::tree::{get, join, set};
use super::{defaults, interpolate, Config};

#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    tree: Value,
    schema: Schema,
    /// Keys a file or an override set (for "ignored key" warnings).
    explicit: BTreeSet<String>,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigBuilder {
    /// Start from the built-in defaults.
    pub fn new() -> Self {
        let tree = defaults::tree();
        let schema = Schema::from_defaults(&tree);
        ConfigBuilder {
            tree,
            schema,
            explicit: BTreeSet::new(),
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
        let doc: Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        let map = match doc {
            Value::Null => return Ok(self),
            Value::Mapping(map) => map,
            other => {
                return Err(ConfigError::Yaml {
                    origin,
                    message: format!(
                        "the top level must be a mapping of sections, found {}",
                        super::tree::kind_name_of(&other)
                    ),
                })
            }
        };
        for (k, v) in map {
            let Some(key) = k.as_str() else {
                return Err(ConfigError::Yaml {
                    origin,
                    message: format!("keys must be strings, found {k:?}"),
                });
            };
            // A SkyRL-style file may start with Hydra's `defaults: [ppo_base_config, _self_]`;
            // rlvr always starts from its base, so only that composition is accepted.
            if key == "defaults" {
                check_hydra_defaults(&v, &origin)?;
                continue;
            }
            self.assign(key, v, Mode::Set, &origin)?;
        }
        Ok(self)
    }

    /// Apply one `a.b=v`, `+a.b=v` or `++a.b=v` override.
    pub fn apply_override(&mut self, arg: &str) -> Result<&mut Self, ConfigError> {
        let o = override_arg::parse(arg)?;
        let origin = o.origin();
        self.assign(&o.key, o.value, o.mode, &origin)?;
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

    fn assign(
        &mut self,
        key: &str,
        value: Value,
        mode: Mode,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        let present = get(&self.tree, key).is_some_and(|v| !v.is_null());
        if let Some(spec) = self.schema.leaf(key) {
            if mode == Mode::Add && present {
                return Err(ConfigError::AlreadyExists {
                    origin: origin.clone(),
                    key: key.to_string(),
                });
            }
            let value = check(spec, value).map_err(|(expected, got)| ConfigError::Type {
                origin: origin.clone(),
                key: key.to_string(),
                expected,
                got,
            })?;
            self.write(key, value, origin)?;
            self.explicit.insert(key.to_string());
            return Ok(());
        }
        if let Some(nullable) = self.schema.section(key) {
            return match value {
                Value::Mapping(map) => {
                    for (k, v) in map {
                        let child =
                            k.as_str()
                                .map(|k| join(key, k))
                                .ok_or_else(|| ConfigError::Yaml {
                                    origin: origin.clone(),
                                    message: format!("keys under `{key}` must be strings"),
                                })?;
                        self.assign(&child, v, mode, origin)?;
                    }
                    Ok(())
                }
                Value::Null if nullable => {
                    self.write(key, Value::Null, origin)?;
                    self.explicit.insert(key.to_string());
                    Ok(())
                }
                other => Err(ConfigError::Type {
                    origin: origin.clone(),
                    key: key.to_string(),
                    expected: if nullable {
                        "a section (mapping) or null".into()
                    } else {
                        "a section (mapping)".into()
                    },
                    got: super::tree::kind_name_of(&other),
                }),
            };
        }
        // Not in the schema: only `+`/`++` may add it (or set it again once added).
        let exists = get(&self.tree, key).is_some();
        if mode == Mode::Set && !exists {
            return Err(ConfigError::UnknownKey {
                origin: origin.clone(),
                key: key.to_string(),
                suggestion: self.schema.nearest(key),
            });
        }
        if mode == Mode::Add && present {
            return Err(ConfigError::AlreadyExists {
                origin: origin.clone(),
                key: key.to_string(),
            });
        }
        if let Some((parent, spec)) = self.schema.leaf_prefix(key) {
            if !matches!(spec.kind, Kind::Map | Kind::Any) {
                return Err(ConfigError::NotASection {
                    origin: origin.clone(),
                    key: key.to_string(),
                    parent: parent.to_string(),
                    what: spec.kind.describe().to_string(),
                });
            }
        }
        self.write(key, value, origin)?;
        self.explicit.insert(key.to_string());
        Ok(())
    }

    fn write(&mut self, key: &str, value: Value, origin: &Origin) -> Result<(), ConfigError> {
        set(&mut self.tree, key, value).map_err(|b| ConfigError::NotASection {
            origin: origin.clone(),
            key: key.to_string(),
            parent: b.parent,
            what: b.what,
        })
    }

    /// Resolve interpolations, re-check every key's type, and build the typed [`Config`].
    pub fn resolve(&self) -> Result<ResolvedConfig, ConfigError> {
        let mut tree = interpolate::resolve(&self.tree)?;
        let keys: Vec<String> = self.schema.leaf_keys().map(str::to_string).collect();
        for key in keys {
            let spec = self.schema.leaf(&key).expect("key from the schema");
            let Some(value) = get(&tree, &key) else {
                continue;
            };
            let checked =
                check(spec, value.clone()).map_err(|(expected, got)| ConfigError::Type {
                    origin: Origin::Resolved,
                    key: key.clone(),
                    expected,
                    got,
                })?;
            if &checked != value {
                let _ = set(&mut tree, &key, checked);
            }
        }
        for (section, keys) in self.schema.optional_sections() {
            if let Some(Value::Mapping(_)) = get(&tree, section) {
                let missing: Vec<&str> = keys
                    .iter()
                    .copied()
                    .filter(|k| get(&tree, k).is_none())
                    .collect();
                if !missing.is_empty() {
                    return Err(ConfigError::Invalid(
                        missing
                            .iter()
                            .map(|k| {
                                format!(
                                    "`{k}` is missing: `{section}` needs all of {} once any is set \
                                     (e.g. `+{k}=...`)",
                                    keys.join(", ")
                                )
                            })
                            .collect(),
                    ));
                }
            }
        }
        let config: Config = serde_path_to_error::deserialize(tree.clone()).map_err(|e| {
            // Name the key: serde alone says only what type it expected.
            ConfigError::Typed(format!("`{}`: {}", e.path(), e.inner()))
        })?;
        Ok(ResolvedConfig::new(config, tree, self.explicit.clone()))
    }
}

fn check_hydra_defaults(v: &Value, origin: &Origin) -> Result<(), ConfigError> {
    let ok = match v {
        Value::Sequence(items) => items
            .iter()
            .all(|i| matches!(i.as_str(), Some("ppo_base_config" | "_self_"))),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Yaml {
            origin: origin.clone(),
            message:
                "Hydra `defaults:` composition is not supported; rlvr always starts from its \
                      built-in base config (only `defaults: [ppo_base_config, _self_]` is accepted)"
                    .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(args: &[&str]) -> Result<ResolvedConfig, ConfigError> {
        ConfigBuilder::new().apply_overrides(args)?.resolve()
    }

    #[test]
    fn overrides_set_typed_values() {
        let r = build(&[
            "trainer.algorithm.eps_clip_high=0.28",
            "trainer.algorithm.clip_ratio_c=10",
            "trainer.algorithm.dynamic_sampling.type=filter",
            "trainer.resume_mode=null",
            "trainer.policy.optimizer_config.adam_betas=[0.8,0.95]",
        ])
        .unwrap();
        let a = &r.config.trainer.algorithm;
        assert_eq!(a.eps_clip_high, 0.28);
        assert_eq!(a.clip_ratio_c, 10.0);
        assert_eq!(a.dynamic_sampling.kind.as_deref(), Some("filter"));
        assert_eq!(r.config.trainer.resume_mode, None);
        assert_eq!(
            r.config.trainer.policy.optimizer_config.adam_betas,
            vec![0.8, 0.95]
        );
        // Integers given to number keys are stored as numbers in the tree too.
        assert_eq!(
            r.get("trainer.algorithm.clip_ratio_c"),
            Some(&Value::from(10.0))
        );
    }

    #[test]
    fn unknown_key_names_the_nearest_valid_key() {
        let e = build(&["trainer.algorithm.eps_clip_hgih=0.3"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("trainer.algorithm.eps_clip_high"), "{e}");
        assert!(e.contains("eps_clip_hgih"), "{e}");
    }

    #[test]
    fn type_errors_name_key_and_expected_type() {
        let e = build(&["trainer.train_batch_size=abc"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("trainer.train_batch_size") && e.contains("non-negative integer"),
            "{e}"
        );
        let e = build(&["trainer.algorithm.eps_clip_low=high"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("eps_clip_low") && e.contains("a number"), "{e}");
        let e = build(&["trainer.algorithm.use_kl_loss=1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("use_kl_loss") && e.contains("boolean"), "{e}");
        let e = build(&["trainer.epochs=2.5"]).unwrap_err().to_string();
        assert!(e.contains("trainer.epochs"), "{e}");
        let e = build(&["trainer.train_batch_size=null"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("got null"), "{e}");
        let e = build(&["trainer.algorithm=3"]).unwrap_err().to_string();
        assert!(e.contains("section"), "{e}");
    }

    #[test]
    fn plus_adds_keys_and_refuses_existing_ones() {
        let r = build(&[
            "+trainer.algorithm.overlong_buffer.len=512",
            "+trainer.algorithm.overlong_buffer.penalty_factor=1",
            "+trainer.my_extension.alpha=0.5",
            "trainer.my_extension.alpha=0.25",
            "++trainer.seed=7",
        ])
        .unwrap();
        let ob = r.config.trainer.algorithm.overlong_buffer.clone().unwrap();
        assert_eq!((ob.len, ob.penalty_factor), (512, 1.0));
        assert_eq!(
            r.get("trainer.my_extension.alpha"),
            Some(&Value::from(0.25))
        );
        assert_eq!(r.config.trainer.seed, 7);
        let e = build(&["+trainer.seed=1"]).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        let e = build(&["+trainer.seed.x=1"]).unwrap_err().to_string();
        assert!(
            e.contains("trainer.seed") && e.contains("not a section"),
            "{e}"
        );
        // The rlvr-only optional section is known, so its keys are type-checked.
        let e = build(&["+trainer.algorithm.overlong_buffer.len=long"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlong_buffer.len"), "{e}");
    }

    #[test]
    fn every_key_accepts_what_its_kind_promises() {
        // The typed structs must hold whatever the schema lets through: -1 for signed integer
        // keys, a large value for non-negative ones, null for nullable ones.
        let b = ConfigBuilder::new();
        for key in b.schema.leaf_keys() {
            let spec = b.schema.leaf(key).unwrap();
            let mut values = Vec::new();
            match spec.kind {
                Kind::Int => values.push("-1".to_string()),
                Kind::UInt => values.push("4096".to_string()),
                Kind::Float => values.push("0.5".to_string()),
                _ => {}
            }
            if spec.nullable {
                values.push("null".to_string());
            }
            for v in values {
                let arg = format!("++{key}={v}");
                let mut b = ConfigBuilder::new();
                b.apply_override(&arg).unwrap();
                if key.starts_with("trainer.algorithm.overlong_buffer.") {
                    continue; // needs both keys; covered below
                }
                if let Err(e) = b.resolve() {
                    panic!("{arg}: {e}");
                }
            }
        }
    }

    #[test]
    fn optional_section_needs_all_its_keys() {
        let e = build(&["+trainer.algorithm.overlong_buffer.len=512"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlong_buffer.penalty_factor"), "{e}");
        let r = build(&[]).unwrap();
        assert!(r.config.trainer.algorithm.overlong_buffer.is_none());
    }

    #[test]
    fn interpolation_follows_overrides() {
        let r = build(&[
            "trainer.policy.model.path=/models/small",
            "trainer.max_prompt_length=256",
            "generator.sampling_params.max_generate_length=300",
        ])
        .unwrap();
        assert_eq!(r.config.generator.model_name, "/models/small");
        assert_eq!(r.config.trainer.reference.model.path, "/models/small");
        assert_eq!(r.config.generator.max_input_length, 256);
        assert_eq!(
            r.config.generator.eval_sampling_params.max_generate_length,
            300
        );
        // An interpolation written as an override is resolved too, and then type-checked.
        let r = build(&["generator.max_input_length=${trainer.eval_batch_size}"]).unwrap();
        assert_eq!(r.config.generator.max_input_length, 1024);
        let e = build(&["generator.max_input_length=${trainer.run_name}"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("generator.max_input_length"), "{e}");
    }

    #[test]
    fn yaml_file_merges_with_the_same_checks() {
        let mut b = ConfigBuilder::new();
        b.merge_yaml(
            "defaults: [ppo_base_config, _self_]\ntrainer:\n  algorithm:\n    eps_clip_high: 0.28\n    overlong_buffer: {len: 64, penalty_factor: 0.5}\n  policy:\n    model_config_kwargs: {attn: eager}\n",
            Origin::File("my.yaml".into()),
        )
        .unwrap();
        b.apply_override("trainer.algorithm.eps_clip_high=0.3")
            .unwrap();
        let r = b.resolve().unwrap();
        assert_eq!(r.config.trainer.algorithm.eps_clip_high, 0.3);
        assert_eq!(
            r.config
                .trainer
                .algorithm
                .overlong_buffer
                .as_ref()
                .unwrap()
                .len,
            64
        );
        assert_eq!(
            r.get("trainer.policy.model_config_kwargs.attn"),
            Some(&Value::from("eager"))
        );
        let e = ConfigBuilder::new()
            .merge_yaml(
                "generator:\n  sampling_params:\n    temprature: 0.5\n",
                Origin::File("my.yaml".into()),
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("my.yaml") && e.contains("generator.sampling_params.temperature"),
            "{e}"
        );
        let e = ConfigBuilder::new()
            .merge_yaml("trainer: {epochs: many}", Origin::File("my.yaml".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("my.yaml") && e.contains("trainer.epochs"), "{e}");
    }
}
