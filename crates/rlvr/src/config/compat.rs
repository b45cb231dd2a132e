//! SkyRL keys that steer its GPU stack (Ray placement, FSDP, vLLM/SGLang engines, weight sync,
//! wandb). They parse so a SkyRL command line carries over; when a file or an override sets one,
//! rlvr says in one line what it does instead. (`trainer.logger` names rlvr cannot serve, such as
//! wandb, are reported by `crate::logging` when a run starts.) Features rlvr lacks whose absence would silently
//! change results are errors instead.

use serde_yaml::Value;

use super::resolved::ResolvedConfig;

/// (key or `prefix.`, what rlvr does instead), from `crates/rlvr/config/skyrl_ignored.yaml`. A
/// prefix ending in `.` or `_` covers every key it starts.
fn ignored() -> &'static [(String, String)] {
    static TABLE: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let map: serde_yaml::Mapping =
            serde_yaml::from_str(include_str!("../../config/skyrl_ignored.yaml"))
                .expect("crates/rlvr/config/skyrl_ignored.yaml is a mapping of strings");
        map.into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
            .collect()
    })
}

fn covered(key: &str, pattern: &str) -> bool {
    if pattern.ends_with('.') || pattern.ends_with('_') {
        key.starts_with(pattern)
    } else {
        key == pattern
    }
}

fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "null".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .replace('\n', " "),
    }
}

pub fn check(r: &ResolvedConfig, warnings: &mut Vec<String>, errors: &mut Vec<String>) {
    let cfg = &r.config;
    for key in r.explicit_keys() {
        let Some((_, why)) = ignored().iter().find(|(p, _)| covered(key, p)) else {
            continue;
        };
        // The in-process choices rlvr makes anyway are not worth a warning.
        let value = r.get(key);
        let one = value.and_then(Value::as_u64) == Some(1);
        let remote = !cfg.generator.run_engines_locally;
        let honoured = match key {
            "generator.backend" => remote,
            "generator.remote_inference_engine_urls" | "generator.served_model_name" => remote,
            // One engine, one device, everything colocated: what rlvr does anyway.
            k if k.ends_with("_size") || k.ends_with("_num_nodes") => one,
            k if k.ends_with("_num_gpus_per_node") || k == "generator.num_inference_engines" => one,
            k if k.starts_with("trainer.placement.colocate_") => value == Some(&Value::Bool(true)),
            // Rank 0 is "off", what rlvr does; a rank above 0 is refused below.
            k if k.ends_with("lora.rank") => value.and_then(Value::as_u64) == Some(0),
            _ => false,
        };
        if !honoured {
            warnings.push(format!("`{key}={}`: {why}", show(value)));
        }
    }

    // Critic settings act only on a critic (as in SkyRL); say so where one is set without it.
    if cfg.trainer.critic.model.path.is_none() {
        for key in r.explicit_keys() {
            let critic_only = (key.starts_with("trainer.critic.")
                && key != "trainer.critic.model.path")
                || key == "trainer.critic_mini_batch_size"
                || key == "trainer.algorithm.value_clip"
                || key == "trainer.algorithm.value_head_prefix";
            if critic_only && !ignored().iter().any(|(p, _)| covered(key, p)) {
                warnings.push(format!(
                    "`{key}={}`: only for a critic, and trainer.critic.model.path is null; ignored",
                    show(r.get(key))
                ));
            }
        }
    }

    let unsupported = |errors: &mut Vec<String>, active: bool, key: &str, what: &str| {
        if active {
            errors.push(format!("`{key}={}`: {what}", show(r.get(key))));
        }
    };
    let g = &cfg.generator;
    let t = &cfg.trainer;
    unsupported(
        errors,
        !g.run_engines_locally && g.remote_inference_engine_urls.is_empty(),
        "generator.remote_inference_engine_urls",
        "run_engines_locally=false needs at least one server (host:port)",
    );
    unsupported(
        errors,
        g.max_turns > 1,
        "generator.max_turns",
        "multi-turn generation is not supported by rlvr (use 1)",
    );
    unsupported(
        errors,
        g.step_wise_trajectories,
        "generator.step_wise_trajectories",
        "step-wise trajectories are not supported by rlvr",
    );
    for (key, rank) in [
        ("trainer.policy.model.lora.rank", t.policy.model.lora.rank),
        ("trainer.critic.model.lora.rank", t.critic.model.lora.rank),
    ] {
        unsupported(
            errors,
            rank > 0,
            key,
            "LoRA is not supported by rlvr; training would update all weights instead (use 0)",
        );
    }
    for section in ["sampling_params", "eval_sampling_params"] {
        let p = if section == "sampling_params" {
            &g.sampling_params
        } else {
            &g.eval_sampling_params
        };
        unsupported(
            errors,
            p.repetition_penalty != 1.0,
            &format!("generator.{section}.repetition_penalty"),
            "rlvr's engines sample without a repetition penalty (use 1.0)",
        );
    }
    unsupported(
        errors,
        t.update_ref_every_epoch,
        "trainer.update_ref_every_epoch",
        "rlvr keeps the reference model frozen for the whole run (use false)",
    );
    unsupported(
        errors,
        t.dump_data_batch,
        "trainer.dump_data_batch",
        "rlvr does not dump training batches (use false; trainer.dump_eval_results dumps evaluations)",
    );
    for (section, kwargs) in [
        ("policy", &t.policy.model_config_kwargs),
        ("ref", &t.reference.model_config_kwargs),
        ("critic", &t.critic.model_config_kwargs),
    ] {
        unsupported(
            errors,
            !kwargs.is_empty(),
            &format!("trainer.{section}.model_config_kwargs"),
            "rlvr builds the model from the checkpoint's config.json: change it there (use {})",
        );
    }
    for (key, set) in [
        ("trainer.rope_scaling", t.rope_scaling.is_some()),
        ("trainer.rope_theta", t.rope_theta.is_some()),
        ("generator.rope_scaling", g.rope_scaling.is_some()),
        ("generator.rope_theta", g.rope_theta.is_some()),
    ] {
        unsupported(
            errors,
            set,
            key,
            "rlvr takes RoPE settings from the checkpoint's config.json: change them there (use null)",
        );
    }
    unsupported(
        errors,
        g.chat_template.name_or_path.is_some(),
        "generator.chat_template.name_or_path",
        "SkyRL applies a custom chat template only when it re-tokenizes multi-turn histories; \
         rlvr generates one turn with the model's own template (use null; \
         generator.chat_template_kwargs is passed to it)",
    );
    unsupported(
        errors,
        t.algorithm.zero_variance_filter,
        "trainer.algorithm.zero_variance_filter",
        "not implemented in rlvr (dynamic_sampling.type=filter drops zero-variance groups instead)",
    );
}

#[cfg(test)]
mod tests {
    use super::{covered, ignored};
    use crate::config::validate::{validate_with, NameChecks};
    use crate::config::ConfigBuilder;

    fn any(_: &str) -> bool {
        true
    }
    const NAMES: NameChecks = NameChecks {
        advantage_estimator: any,
        advantage_estimator_names: Vec::new,
        policy_loss: any,
        policy_loss_names: Vec::new,
    };

    fn run(args: &[&str]) -> Result<Vec<String>, String> {
        let r = ConfigBuilder::new()
            .apply_overrides(args)
            .unwrap()
            .resolve()
            .unwrap();
        validate_with(&r, &NAMES).map_err(|e| e.to_string())
    }

    #[test]
    fn every_ignored_key_is_a_key_of_the_defaults() {
        let keys = super::super::keys::Keys::from_defaults(&super::super::defaults::tree());
        assert!(ignored().len() > 40);
        for (pattern, why) in ignored() {
            assert!(
                keys.leaves().any(|k| covered(k, pattern)),
                "{pattern} covers no key of base.yaml"
            );
            assert!(!why.is_empty());
        }
    }

    #[test]
    fn explicit_gpu_keys_warn_once_each() {
        let w = run(&[
            "generator.backend=vllm",
            "trainer.placement.policy_num_gpus_per_node=4",
            "generator.inference_engine_tensor_parallel_size=1",
        ])
        .unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("`generator.backend=vllm`: local engines are rlvr's embedded engine"),
            "{w:?}"
        );
        assert!(w
            .iter()
            .any(|l| l.contains("trainer.placement.policy_num_gpus_per_node=4")));
        assert!(w.iter().all(|l| !l.contains('\n')));
    }

    #[test]
    fn result_changing_features_are_errors() {
        for (arg, key) in [
            (
                "generator.step_wise_trajectories=true",
                "generator.step_wise_trajectories",
            ),
            ("trainer.policy.model.lora.rank=8", "lora.rank"),
            ("generator.max_turns=2", "generator.max_turns"),
            (
                "generator.sampling_params.repetition_penalty=1.1",
                "sampling_params.repetition_penalty",
            ),
            (
                "generator.eval_sampling_params.repetition_penalty=1.05",
                "eval_sampling_params.repetition_penalty",
            ),
            (
                "trainer.update_ref_every_epoch=true",
                "update_ref_every_epoch",
            ),
            ("trainer.dump_data_batch=true", "dump_data_batch"),
        ] {
            let e = run(&arg.split_whitespace().collect::<Vec<_>>()).unwrap_err();
            assert!(e.contains(key), "{arg}: {e}");
        }
    }
}
