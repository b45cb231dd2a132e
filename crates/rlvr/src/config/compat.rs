//! SkyRL keys that steer its GPU stack (Ray placement, FSDP, vLLM/SGLang engines, weight sync,
//! wandb). They parse so a SkyRL command line carries over; when a file or an override sets one,
//! rlvr says in one line what it does instead. (`trainer.logger` names rlvr cannot serve, such as
//! wandb, are reported by `crate::logging` when a run starts.) Features rlvr lacks whose absence would silently
//! change results are errors instead.

use serde_yaml::Value;

use super::resolved::ResolvedConfig;

const NO_CHECKPOINTING: &str =
    "rlvr keeps activations for the backward pass (memory, not results); ignored";
const ONE_TURN: &str = "multi-turn only; rlvr generates one turn (max_turns=1); ignored";

/// (key or `prefix.`, what rlvr does instead). A prefix ending in `.` covers its whole section.
const IGNORED: &[(&str, &str)] = &[
    (
        "trainer.placement.",
        "rlvr runs policy, ref and generation in one process on one device; placement is ignored",
    ),
    (
        "trainer.strategy",
        "rlvr trains in-process without FSDP/DeepSpeed/Megatron; ignored",
    ),
    ("trainer.policy.fsdp_config.", "no FSDP in rlvr; ignored"),
    ("trainer.ref.fsdp_config.", "no FSDP in rlvr; ignored"),
    ("trainer.critic.fsdp_config.", "no FSDP in rlvr; ignored"),
    (
        "trainer.policy.sequence_parallel_size",
        "no sequence parallelism in rlvr; ignored",
    ),
    (
        "trainer.ref.sequence_parallel_size",
        "no sequence parallelism in rlvr; ignored",
    ),
    (
        "trainer.critic.sequence_parallel_size",
        "no sequence parallelism in rlvr; ignored",
    ),
    (
        "trainer.policy.use_torch_compile",
        "no torch.compile in rlvr; ignored",
    ),
    (
        "trainer.policy.record_memory",
        "CUDA memory snapshots are SkyRL-only; ignored",
    ),
    (
        "trainer.policy.optimizer_config.offload_after_step",
        "optimizer state stays in place (no effect on results); ignored",
    ),
    (
        "trainer.critic.optimizer_config.offload_after_step",
        "optimizer state stays in place (no effect on results); ignored",
    ),
    (
        "trainer.policy.model.lora.lora_sync_path",
        "weights are shared in-process; ignored",
    ),
    (
        "trainer.use_sample_packing",
        "batch layout does not change results; ignored",
    ),
    (
        "trainer.flash_attn",
        "rlvr uses its own attention kernel; ignored",
    ),
    (
        "trainer.fully_async.",
        "fully-async training is SkyRL-only; ignored",
    ),
    (
        "generator.backend",
        "local engines are rlvr's embedded engine; the backend only picks the API of remote engines (run_engines_locally=false)",
    ),
    (
        "generator.num_inference_engines",
        "rlvr runs one embedded engine; ignored",
    ),
    (
        "generator.inference_engine_",
        "rlvr runs one embedded engine without engine parallelism; ignored",
    ),
    (
        "generator.weight_sync_backend",
        "the embedded engine shares the trainer's weights; remote engines reload them from generator.weight_sync_dir; ignored",
    ),
    (
        "generator.weight_transfer_threshold_cuda_ipc_GB",
        "weights are shared in-process; ignored",
    ),
    (
        "generator.override_existing_update_group",
        "weights are shared in-process; ignored",
    ),
    (
        "generator.async_engine",
        "the embedded engine schedules rollouts itself; ignored",
    ),
    (
        "generator.batched",
        "the embedded engine schedules rollouts itself; ignored",
    ),
    (
        "generator.gpu_memory_utilization",
        "the embedded engine sizes its KV cache per batch; ignored",
    ),
    (
        "generator.max_num_batched_tokens",
        "vLLM scheduler setting; ignored",
    ),
    ("generator.enable_prefix_caching", "vLLM setting; ignored"),
    ("generator.enable_chunked_prefill", "vLLM setting; ignored"),
    ("generator.enforce_eager", "vLLM setting; ignored"),
    (
        "generator.vllm_v1_disable_multiproc",
        "vLLM setting; ignored",
    ),
    ("generator.fully_sharded_loras", "vLLM setting; ignored"),
    (
        "generator.enable_ray_prometheus_stats",
        "Ray setting; ignored",
    ),
    (
        "generator.engine_init_kwargs",
        "vLLM/SGLang engine arguments; ignored",
    ),
    (
        "generator.remote_inference_engine_urls",
        "used only with generator.run_engines_locally=false; ignored",
    ),
    (
        "generator.external_proxy_url",
        "rlvr generates in-process; ignored",
    ),
    (
        "generator.external_server_urls",
        "rlvr generates in-process; ignored",
    ),
    (
        "generator.enable_http_endpoint",
        "rlvr serves no HTTP endpoint; ignored",
    ),
    (
        "generator.http_endpoint_host",
        "rlvr serves no HTTP endpoint; ignored",
    ),
    (
        "generator.http_endpoint_port",
        "rlvr serves no HTTP endpoint; ignored",
    ),
    (
        "generator.served_model_name",
        "used only with generator.run_engines_locally=false; ignored",
    ),
    (
        "environment.skyrl_gym.max_env_workers",
        "environments run inline; ignored",
    ),
    (
        "environment.skyrl_gym.text2sql.",
        "used only by SkyRL's text2sql environment; ignored",
    ),
    (
        "environment.skyrl_gym.llm_as_a_judge.",
        "used only by SkyRL's llm_as_a_judge environment; ignored",
    ),
    (
        "environment.skyrl_gym.search.",
        "used only by SkyRL's search environment; ignored",
    ),
    (
        "trainer.gradient_checkpointing",
        NO_CHECKPOINTING,
    ),
    (
        "trainer.gradient_checkpointing_use_reentrant",
        NO_CHECKPOINTING,
    ),
    (
        "trainer.disable_fast_tokenizer",
        "rlvr always uses the Hugging Face tokenizers library (the fast tokenizer); ignored",
    ),
    (
        "trainer.project_name",
        "names the wandb project; rlvr logs locally (trainer.logger); ignored",
    ),
    (
        "trainer.policy.model.lora.",
        "LoRA is off (lora.rank=0); ignored",
    ),
    (
        "trainer.critic.model.lora.",
        "LoRA is off (lora.rank=0); ignored",
    ),
    (
        "generator.use_conversation_multi_turn",
        ONE_TURN,
    ),
    (
        "generator.append_eos_token_after_stop_str_in_multi_turn",
        ONE_TURN,
    ),
];

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
        let Some((_, why)) = IGNORED.iter().find(|(p, _)| covered(key, p)) else {
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
            if critic_only && !IGNORED.iter().any(|(p, _)| covered(key, p)) {
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
