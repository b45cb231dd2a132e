//! Building a config: defaults, then YAML files, then command-line overrides, then resolution.
//! Keys are checked as they come in (an unknown key names the file or override and the nearest
//! valid key); values are checked by deserialising the merged tree into the typed [`Config`],
//! whose errors name the key and where its value came from.

use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::Path;

use super::error::{ConfigError, Origin};
use super::keys::{self, Keys};
use super::override_arg::{self, Mode};
use super::resolved::ResolvedConfig;
use super::tree::{get, join, kind_name_of, set};
use super::{interpolate, Config};

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
    keys: Keys,
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
            keys: Keys::from_defaults(&tree),
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
        if self.keys.is_section(key) {
            let Value::Mapping(map) = value else {
                return Err(ConfigError::Type {
                    origin: origin.clone(),
                    key: key.to_string(),
                    expected: "a section (mapping)".into(),
                    got: kind_name_of(&value),
                });
            };
            for (k, v) in map {
                let child = k
                    .as_str()
                    .map(|k| join(key, k))
                    .ok_or_else(|| ConfigError::Yaml {
                        origin: origin.clone(),
                        message: format!("keys under `{key}` must be strings"),
                    })?;
                self.assign(&child, v, mode, origin)?;
            }
            return Ok(());
        }
        // Outside the defaults' keys only `+`/`++` may add a key (or set it again once added).
        if mode == Mode::Set && !self.keys.is_leaf(key) && get(&self.tree, key).is_none() {
            return Err(ConfigError::UnknownKey {
                origin: origin.clone(),
                key: key.to_string(),
                suggestion: self.keys.nearest(key),
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

    /// Resolve interpolations and build the typed [`Config`].
    pub fn resolve(&self) -> Result<ResolvedConfig, ConfigError> {
        let mut tree = interpolate::resolve(&self.tree)?;
        keys::coerce(&mut tree, &self.defaults, &self.keys);
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
            Some((_, what)) => keys::expected_in_words(what),
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
        assert_eq!(
            a.dynamic_sampling.kind,
            Some(rlvr_algo::dynamic_sampling::Strategy::Filter)
        );
        assert_eq!(r.config.trainer.resume_mode, None);
        assert_eq!(
            r.config.trainer.policy.optimizer_config.adam_betas,
            vec![0.8, 0.95]
        );
    }

    #[test]
    fn names_and_stop_strings_take_one_a_list_or_a_quoted_list() {
        // SkyRL's scripts write `trainer.logger="['console','wandb']"`: the shell hands over a
        // list; through `$(...)` the quotes stay and a string spelling the list arrives.
        for arg in [
            "trainer.logger=['console','jsonl']",
            "trainer.logger=\"['console','jsonl']\"",
        ] {
            let r = build(&[arg]).unwrap();
            assert_eq!(r.config.trainer.logger, "console,jsonl", "{arg}");
        }
        assert_eq!(
            build(&["trainer.logger=csv"])
                .unwrap()
                .config
                .trainer
                .logger,
            "csv"
        );
        let stop = |arg: &str| {
            build(&[arg])
                .unwrap()
                .config
                .generator
                .sampling_params
                .stop_strings()
        };
        assert_eq!(
            stop("generator.sampling_params.stop=\"['</s>', 'END']\""),
            ["</s>", "END"]
        );
        assert_eq!(stop("generator.sampling_params.stop=['x']"), ["x"]);
        assert_eq!(stop("generator.sampling_params.stop=END"), ["END"]);
        assert!(stop("generator.sampling_params.stop=null").is_empty());
        let e = build(&["trainer.logger=[1,2]"]).unwrap_err().to_string();
        assert!(e.contains("trainer.logger"), "{e}");
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
        // A value outside an enum's list names the list and the override.
        let e = build(&["generator.backend=trt"]).unwrap_err().to_string();
        assert!(
            e.contains("override `generator.backend=trt`") && e.contains("one of vllm, sglang"),
            "{e}"
        );
        let e = build(&["trainer.resume_mode=sometimes"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("one of none, latest, from_path"), "{e}");
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
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("my.yaml") && e.contains("trainer.epochs"), "{e}");
    }
}
