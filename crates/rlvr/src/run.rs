//! Assembling a run from a resolved config: model, tokenizer, data, environments, generator,
//! optimizer, loggers, checkpoints. `rlvr train` is this plus [`Trainer::fit`].

use crate::config::{Config, ResolvedConfig};
use crate::data::{self, PromptLoader, PromptRow};
use crate::dist::{self, ProcessGroup};
use crate::env::{EnvRegistry, Gsm8kEnv};
use crate::generator::remote::engine::Retry;
use crate::generator::{
    EmbeddedGenerator, Generator, RemoteGenerator, RemoteSettings, ShardedGenerator,
};
use crate::logging;
use crate::optimizer::{Optimizer, OptimizerSettings};
use crate::trainer::critic::Critic;
use crate::trainer::{checkpoint, DefaultHooks, Trainer, TrainerHooks};
use anyhow::{Context, Result};
use candle_core::Device;
use rlvr_algo::dynamic_sampling::{DynamicSampler, DynamicSamplingConfig};
use rlvr_model::{HeadInit, Model, Tokenizer, ValueModel};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// What a user can plug into a run from their own binary.
pub struct Extensions {
    pub hooks: Box<dyn TrainerHooks>,
    pub envs: EnvRegistry,
    /// The data-parallel ranks this process trains with ([`dist::from_launcher`] under
    /// `mpirun`); one process by default.
    pub group: Rc<dyn ProcessGroup>,
}

impl Extensions {
    /// The stock hooks and the built-in environments configured from `cfg`.
    pub fn defaults(cfg: &Config) -> Result<Self> {
        Ok(Self {
            hooks: Box::new(DefaultHooks),
            envs: EnvRegistry::with_builtins(Gsm8kEnv::new(
                cfg.environment.skyrl_gym.gsm8k.method,
                cfg.environment.skyrl_gym.gsm8k.format_score,
            )),
            group: Rc::new(dist::Solo),
        })
    }
}

/// Directory for metrics, eval dumps and plots: `trainer.log_path/trainer.run_name`.
pub fn run_dir(cfg: &Config) -> PathBuf {
    Path::new(&cfg.trainer.log_path).join(&cfg.trainer.run_name)
}

/// Reads every file of `data.train_data` (or `val_data`).
pub fn read_datasets(paths: &[String]) -> Result<Vec<PromptRow>> {
    let mut rows = Vec::new();
    for p in paths {
        rows.extend(data::read_rows(Path::new(p))?);
    }
    Ok(rows)
}

/// Drops rows whose chat-templated prompt exceeds `max_len` tokens; returns kept rows and the
/// number dropped.
pub fn filter_long_prompts(
    rows: Vec<PromptRow>,
    tokenizer: &Tokenizer,
    max_len: usize,
) -> Result<(Vec<PromptRow>, usize)> {
    let before = rows.len();
    let mut kept = Vec::with_capacity(before);
    for row in rows {
        let n = tokenizer.apply_chat_template_ids(&row.prompt, true)?.len();
        if n <= max_len {
            kept.push(row);
        }
    }
    let dropped = before - kept.len();
    Ok((kept, dropped))
}

/// What a trainer is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Train,
    /// `rlvr eval`: reads only `data.val_data`; no training rows, no reference model.
    Evaluate,
}

/// Builds the whole trainer for `resolved`, resuming per `trainer.resume_mode`.
pub fn build(resolved: &ResolvedConfig, ext: Extensions) -> Result<Trainer> {
    build_for(resolved, ext, Purpose::Train)
}

/// [`build`] for `purpose`.
pub fn build_for(resolved: &ResolvedConfig, ext: Extensions, purpose: Purpose) -> Result<Trainer> {
    let cfg = resolved.config.clone();
    let device_spec = dist::device_for_rank(&cfg.trainer.device);
    let device = rlvr_model::parse_device(&device_spec)
        .with_context(|| format!("trainer.device={device_spec}"))?;
    tracing::info!("device {}", rlvr_model::device_name(&device));
    tracing::info!(
        "training products: {}",
        match (cfg.trainer.bf16, device.is_cpu()) {
            (false, _) => "f32 (trainer.bf16=false)",
            (true, false) => "bf16 inputs, f32 accumulation",
            (true, true) if rlvr_model::kernels::amx::available() => {
                "bf16 inputs, f32 accumulation (AMX tiles)"
            }
            (true, true) => {
                "bf16 inputs, f32 accumulation (no AMX on this CPU: rounded, then f32 gemm)"
            }
        }
    );

    let model_path = PathBuf::from(&cfg.trainer.policy.model.path);
    tracing::info!("loading {}", model_path.display());
    let pretrained = rlvr_model::load_pretrained(&model_path, &device)
        .with_context(|| format!("trainer.policy.model.path={}", model_path.display()))?;
    let policy = Arc::new(Model::from_tensors(
        &pretrained.config,
        &pretrained.tensors,
        &device,
    )?);
    let uses_kl = cfg.trainer.algorithm.use_kl_loss || cfg.trainer.algorithm.use_kl_in_reward;
    let reference = if uses_kl && purpose == Purpose::Train {
        let ref_path = PathBuf::from(&cfg.trainer.reference.model.path);
        let reference = if ref_path == model_path {
            Model::from_tensors(&pretrained.config, &pretrained.tensors, &device)?
        } else {
            let p = rlvr_model::load_pretrained(&ref_path, &device)
                .with_context(|| format!("trainer.ref.model.path={}", ref_path.display()))?;
            Model::from_tensors(&p.config, &p.tensors, &device)?
        };
        Some(reference)
    } else {
        None
    };
    let critic = match (&cfg.trainer.critic.model.path, purpose) {
        (Some(path), Purpose::Train) => {
            Some(load_critic(&cfg, Path::new(path), &pretrained, &device)?)
        }
        _ => None,
    };
    // What vLLM and `rlvr serve` stop on too: generation_config.json's EOS ids as well.
    let stop_ids = crate::generator::stop_token_ids(&pretrained);
    let tokenizer = Arc::new(pretrained.tokenizer);
    assemble(
        resolved,
        Models {
            policy,
            reference,
            critic,
        },
        ext,
        tokenizer,
        stop_ids,
        purpose,
    )
}

/// The critic of `trainer.critic.model.path`: a value head on that checkpoint's decoder, drawn as
/// SkyRL draws it where the checkpoint has none (`policy` is reused when the paths are equal).
fn load_critic(
    cfg: &Config,
    path: &Path,
    policy: &rlvr_model::Pretrained,
    device: &Device,
) -> Result<ValueModel> {
    let same = path == Path::new(&cfg.trainer.policy.model.path);
    let loaded;
    let source = if same {
        policy
    } else {
        tracing::info!("loading the critic from {}", path.display());
        loaded = rlvr_model::load_pretrained(path, device)
            .with_context(|| format!("trainer.critic.model.path={}", path.display()))?;
        &loaded
    };
    let init = HeadInit::skyrl(&source.config, same, cfg.trainer.seed);
    ValueModel::from_tensors(
        &source.config,
        &source.tensors,
        device,
        &cfg.trainer.algorithm.value_head_prefix,
        init,
    )
    .with_context(|| format!("trainer.critic.model.path={}", path.display()))
}

/// The models a trainer is built around.
pub struct Models {
    pub policy: Arc<Model>,
    /// Only with `use_kl_loss` or `use_kl_in_reward`.
    pub reference: Option<Model>,
    /// Only with `trainer.critic.model.path`.
    pub critic: Option<ValueModel>,
}

/// `generator.model_dtype`: the weights the embedded engine decodes with on `device` (the trainer
/// keeps f32). On the CPU bf16 needs AVX-512 and falls back to f32 without it.
pub fn decode_dtype(name: &str, device: &Device) -> Result<candle_core::DType> {
    use candle_core::DType;
    match name {
        "float32" | "fp32" | "f32" => Ok(DType::F32),
        "bfloat16" | "bf16" => {
            if !device.is_cpu() || rlvr_model::model::bf16_decode_supported() {
                Ok(DType::BF16)
            } else {
                tracing::warn!(
                    "generator.model_dtype={name}: this CPU lacks AVX-512, decoding in float32"
                );
                Ok(DType::F32)
            }
        }
        other => anyhow::bail!("generator.model_dtype={other}: expected bfloat16 or float32"),
    }
}

/// The remote engines of `generator.*` (`run_engines_locally=false`).
pub fn remote_settings(cfg: &Config) -> Result<RemoteSettings> {
    let g = &cfg.generator;
    Ok(RemoteSettings {
        urls: g.remote_inference_engine_urls.clone(),
        backend: g.backend,
        model: g
            .served_model_name
            .clone()
            .unwrap_or_else(|| g.model_name.clone()),
        weight_sync_dir: PathBuf::from(&g.weight_sync_dir),
        request_timeout: std::time::Duration::from_secs_f64(g.remote_request_timeout_s.max(1.0)),
        retry: Retry {
            max_retries: g.remote_max_retries,
            backoff: std::time::Duration::from_millis(500),
        },
        max_in_flight: g.max_num_seqs,
        api_key: g
            .remote_api_key
            .clone()
            .or_else(|| std::env::var(crate::serve::API_KEY_ENV).ok())
            .filter(|k| !k.is_empty()),
    })
}

/// Data-parallel ranks must start from the same step: each reads `trainer.ckpt_path` itself.
fn check_same_start(t: &Trainer) -> Result<()> {
    let group = t.group.as_ref();
    if group.size() == 1 {
        return Ok(());
    }
    let steps = group.all_gather_bytes(&(t.global_step as u64).to_le_bytes(), "resume step")?;
    for (rank, b) in steps.iter().enumerate() {
        let step = u64::from_le_bytes(b[..8].try_into()?);
        if step != t.global_step as u64 {
            anyhow::bail!(
                "rank {rank} starts at step {step} but rank {} at step {}: every rank must read \
                 the same checkpoints (put trainer.ckpt_path on a filesystem all ranks share)",
                group.rank(),
                t.global_step
            );
        }
    }
    Ok(())
}

/// Like [`build`] for already constructed models (tests use tiny models).
pub fn build_with_models(
    resolved: &ResolvedConfig,
    ext: Extensions,
    models: Models,
    tokenizer: Arc<Tokenizer>,
) -> Result<Trainer> {
    let stop_ids = crate::generator::eos_ids(models.policy.config(), &tokenizer);
    assemble(resolved, models, ext, tokenizer, stop_ids, Purpose::Train)
}

fn assemble(
    resolved: &ResolvedConfig,
    models: Models,
    ext: Extensions,
    tokenizer: Arc<Tokenizer>,
    stop_ids: Vec<u32>,
    purpose: Purpose,
) -> Result<Trainer> {
    let Models {
        policy,
        reference,
        critic,
    } = models;
    // SkyRL passes generator.chat_template_kwargs to every apply_chat_template call.
    let kwargs = &resolved.config.generator.chat_template_kwargs;
    let tokenizer = if kwargs.is_empty() {
        tokenizer
    } else {
        let kwargs = kwargs
            .iter()
            .map(|(k, v)| {
                let name = k.as_str().map(str::to_owned).ok_or_else(|| {
                    anyhow::anyhow!(
                        "generator.chat_template_kwargs: keys must be strings, got {k:?}"
                    )
                })?;
                Ok((name, serde_json::to_value(v)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Arc::new((*tokenizer).clone().with_template_kwargs(&kwargs))
    };
    let cfg = resolved.config.clone();
    let max_prompt = cfg.trainer.max_prompt_length;
    let (train_rows, dropped) = match purpose {
        Purpose::Train => {
            filter_long_prompts(read_datasets(&cfg.data.train_data)?, &tokenizer, max_prompt)?
        }
        Purpose::Evaluate => (Vec::new(), 0),
    };
    if dropped > 0 {
        tracing::warn!(
            "dropped {dropped} training prompts longer than trainer.max_prompt_length={max_prompt}"
        );
    }
    let (val_rows, val_dropped) =
        filter_long_prompts(read_datasets(&cfg.data.val_data)?, &tokenizer, max_prompt)?;
    if val_dropped > 0 {
        tracing::warn!("dropped {val_dropped} validation prompts longer than trainer.max_prompt_length={max_prompt}");
    }
    tracing::info!(
        "{} training prompts, {} validation prompts",
        train_rows.len(),
        val_rows.len()
    );
    let loader = PromptLoader::new(
        train_rows,
        cfg.trainer.train_batch_size,
        cfg.trainer.seed,
        true,
    );

    let pad_id = tokenizer
        .pad_token_id()
        .or(tokenizer.eos_token_id())
        .unwrap_or(0);
    let main = ext.group.is_main();
    let generator: Box<dyn Generator> = if cfg.generator.run_engines_locally {
        Box::new(
            EmbeddedGenerator::new(
                policy.clone(),
                tokenizer.clone(),
                ext.envs.clone(),
                cfg.generator.max_num_seqs,
            )
            .with_weights(decode_dtype(&cfg.generator.model_dtype, policy.device())?)
            .with_stop_ids(stop_ids)
            .with_progress(main),
        )
    } else {
        Box::new(RemoteGenerator::connect(
            remote_settings(&cfg)?,
            tokenizer.clone(),
            ext.envs.clone(),
            stop_ids,
        )?)
    };
    // Data-parallel ranks generate their shares of each batch and exchange the results.
    let generator: Box<dyn Generator> = match ext.group.size() {
        1 => generator,
        _ => Box::new(ShardedGenerator::new(generator, ext.group.clone())),
    };

    let max_steps = match resolved.get("trainer.max_steps") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .context("+trainer.max_steps: expected a non-negative integer")?
                as usize,
        ),
    };
    let share_prompts = match resolved.get("trainer.shared_prompt") {
        None => true,
        Some(v) => v
            .as_bool()
            .context("+trainer.shared_prompt: expected true or false")?,
    };
    let opt = &cfg.trainer.policy.optimizer_config;
    let batches = loader.batches_per_epoch();
    let mini_batches = cfg.trainer.train_batch_size / cfg.trainer.policy_mini_batch_size.max(1);
    let all_steps = cfg.trainer.epochs * batches;
    let steps = max_steps.map_or(all_steps, |m| m.min(all_steps));
    let total_updates = steps * mini_batches.max(1) * cfg.trainer.update_epochs_per_batch;
    let optimizer = Optimizer::new(
        policy.named_vars().to_vec(),
        OptimizerSettings::new(opt, total_updates),
    )?;
    // SkyRL: `train_batch_size // critic_mini_batch_size * update_epochs_per_batch` critic steps
    // per global step.
    let critic = match (critic, &cfg.trainer.critic.model.path) {
        (Some(model), Some(_)) => {
            let per_step = cfg.trainer.train_batch_size / cfg.trainer.critic_mini_batch_size.max(1)
                * cfg.trainer.update_epochs_per_batch;
            let optimizer = Optimizer::new(
                model.named_vars(),
                OptimizerSettings::new(&cfg.trainer.critic.optimizer_config, steps * per_step),
            )?;
            Some(Critic { model, optimizer })
        }
        (None, Some(path)) if purpose == Purpose::Train => {
            anyhow::bail!("trainer.critic.model.path={path} is set but no critic model was built")
        }
        _ => None,
    };

    let ds = &cfg.trainer.algorithm.dynamic_sampling;
    let sampler = DynamicSampler::new(
        DynamicSamplingConfig {
            strategy: ds.kind,
            train_batch_size: cfg.trainer.train_batch_size,
            n_samples_per_prompt: cfg.generator.n_samples_per_prompt,
            max_sample_batches: ds.max_sample_batches,
            min_replace_ratio: ds.min_replace_ratio,
        },
        cfg.trainer.seed,
    );

    // Rank 0 writes the run's files and logs; the other ranks compute.
    let run_dir = run_dir(&cfg);
    let loggers = if main {
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        std::fs::write(run_dir.join("config.yaml"), resolved.to_yaml())?;
        let names: Vec<String> = cfg
            .trainer
            .logger
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
        let (loggers, warnings) = logging::from_names(&names, &run_dir)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        loggers
    } else {
        Vec::new()
    };

    let k = &cfg.trainer.algorithm;
    let reward_kl = rlvr_algo::kl::KlController::new(
        k.kl_ctrl.kind,
        k.kl_loss_coef,
        k.kl_ctrl.kl_target,
        k.kl_ctrl.horizon,
    )?;
    let ckpt_dir = Some(PathBuf::from(&cfg.trainer.ckpt_path));
    let mut trainer = Trainer {
        cfg: cfg.clone(),
        policy,
        reference,
        reward_kl,
        optimizer,
        critic,
        generator,
        loader,
        val_rows,
        hooks: ext.hooks,
        loggers,
        sampler,
        pad_id,
        global_step: 0,
        ckpt_dir: ckpt_dir.clone(),
        run_dir,
        stop: Arc::new(AtomicBool::new(false)),
        envs: ext.envs,
        tokenizer: Some(tokenizer),
        max_steps,
        share_prompts,
        last_eval: None,
        group: ext.group,
    };
    checkpoint::resume(
        &mut trainer,
        cfg.trainer.resume_mode,
        cfg.trainer.resume_path.as_deref(),
        ckpt_dir.as_deref().unwrap_or(Path::new(".")),
    )?;
    check_same_start(&trainer)?;
    Ok(trainer)
}
