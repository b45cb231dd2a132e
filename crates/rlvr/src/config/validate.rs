//! Validation before any work starts. Rules follow skyrl-train's `validate_cfg` with the same
//! meanings; rlvr trains on one device, so SkyRL's per-GPU batch sizes apply with a
//! data-parallel size of 1. Every problem is reported (not just the first), each naming its keys.
//! Keys rlvr parses but cannot honour give one warning line each (see `compat.rs`); features
//! whose absence would silently change results are errors.

use super::compat;
use super::error::ConfigError;
use super::resolved::ResolvedConfig;
use super::{Config, ResumeMode};
use rlvr_algo::dynamic_sampling::Strategy;

/// Name lookups in the algorithm registries (so tests can substitute their own).
#[derive(Clone, Copy)]
pub struct NameChecks {
    pub advantage_estimator: fn(&str) -> bool,
    pub advantage_estimator_names: fn() -> Vec<String>,
    pub policy_loss: fn(&str) -> bool,
    pub policy_loss_names: fn() -> Vec<String>,
}

impl NameChecks {
    /// The registries of `rlvr_algo` (built-ins plus anything a binary registered).
    pub fn rlvr_algo() -> Self {
        NameChecks {
            advantage_estimator: rlvr_algo::advantages::is_registered,
            advantage_estimator_names: rlvr_algo::advantages::registered_names,
            policy_loss: rlvr_algo::policy_loss::is_registered,
            policy_loss_names: rlvr_algo::policy_loss::registered_names,
        }
    }
}

/// Check every rule; Ok holds the warnings (one line per key that is parsed but not honoured).
pub fn validate_with(r: &ResolvedConfig, names: &NameChecks) -> Result<Vec<String>, ConfigError> {
    let mut errors = Vec::new();
    let cfg = &r.config;
    // YAML's `.nan` / `.inf` parse as numbers; no setting means either, and one would reach the
    // weights (an lr of NaN writes NaN checkpoints).
    for (key, value) in super::tree::leaves(r.tree()) {
        if value.as_f64().is_some_and(|v| !v.is_finite()) {
            errors.push(format!(
                "`{key}` must be a finite number, got {}",
                value.as_f64().unwrap()
            ));
        }
    }
    batch_sizes(cfg, &mut errors);
    algorithm(cfg, names, &mut errors);
    sampling(cfg, &mut errors);
    trainer(cfg, &mut errors);
    let mut warnings = Vec::new();
    compat::check(r, &mut warnings, &mut errors);
    if cfg.trainer.algorithm.loss_reduction == rlvr_algo::LossReduction::SeqMeanTokenSumNorm
        && cfg.trainer.algorithm.max_seq_len.is_none()
    {
        warnings.push(format!(
            "`trainer.algorithm.max_seq_len` is null: seq_mean_token_sum_norm divides by \
             generator.max_input_length + generator.sampling_params.max_generate_length = {} (as SkyRL does)",
            cfg.max_seq_len()
        ));
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(ConfigError::Invalid(errors))
    }
}

/// Send each warning through `tracing::warn!`.
pub fn log_warnings(warnings: &[String]) {
    for w in warnings {
        tracing::warn!("{w}");
    }
}

fn batch_sizes(cfg: &Config, errors: &mut Vec<String>) {
    let t = &cfg.trainer;
    let n = cfg.generator.n_samples_per_prompt;
    let mut positive = |key: &str, v: usize| {
        if v == 0 {
            errors.push(format!("`{key}` must be > 0"));
        }
    };
    positive("trainer.train_batch_size", t.train_batch_size);
    positive(
        "trainer.micro_train_batch_size_per_gpu",
        t.micro_train_batch_size_per_gpu,
    );
    positive(
        "trainer.micro_forward_batch_size_per_gpu",
        t.micro_forward_batch_size_per_gpu,
    );
    positive("generator.n_samples_per_prompt", n);
    positive(
        "generator.eval_n_samples_per_prompt",
        cfg.generator.eval_n_samples_per_prompt,
    );
    positive("trainer.eval_batch_size", t.eval_batch_size);
    positive("trainer.update_epochs_per_batch", t.update_epochs_per_batch);
    if t.train_batch_size == 0 || t.micro_train_batch_size_per_gpu == 0 || n == 0 {
        return;
    }
    let mut mini_batch_rules = |role: &str, mini: usize| {
        let mini_key = format!("trainer.{role}_mini_batch_size");
        if mini == 0 {
            errors.push(format!("`{mini_key}` must be > 0"));
            return;
        }
        let left_over = t.train_batch_size % mini;
        if left_over != 0 {
            errors.push(format!(
                "trainer.train_batch_size % {mini_key} != 0 ({} % {mini} = {left_over}): a \
                 training batch must split into whole mini-batches",
                t.train_batch_size
            ));
        }
        let rows = mini * n;
        let left_over = rows % t.micro_train_batch_size_per_gpu;
        if left_over != 0 {
            errors.push(format!(
                "{mini_key} * generator.n_samples_per_prompt % trainer.micro_train_batch_size_per_gpu != 0 \
                 ({mini} * {n} = {rows} rows per mini-batch, micro-batch {}): a mini-batch must \
                 split into whole micro-batches (rlvr trains on one device, so the per-GPU size \
                 applies to the whole mini-batch)",
                t.micro_train_batch_size_per_gpu
            ));
        }
    };
    mini_batch_rules("policy", t.policy_mini_batch_size);
    if t.critic.model.path.is_some() {
        mini_batch_rules("critic", t.critic_mini_batch_size);
    }
}

fn algorithm(cfg: &Config, names: &NameChecks, errors: &mut Vec<String>) {
    let a = &cfg.trainer.algorithm;
    if a.use_kl_in_reward && a.use_kl_loss {
        errors.push(
            "`trainer.algorithm.use_kl_in_reward` and `trainer.algorithm.use_kl_loss` are both true; \
             use one KL placement (they are mutually exclusive)"
                .into(),
        );
    }
    if !(names.advantage_estimator)(&a.advantage_estimator) {
        errors.push(format!(
            "`trainer.algorithm.advantage_estimator` = \"{}\" is not a registered advantage \
             estimator (registered: {})",
            a.advantage_estimator,
            (names.advantage_estimator_names)().join(", ")
        ));
    }
    if a.advantage_estimator == "gae" && cfg.trainer.critic.model.path.is_none() {
        // GAE takes a critic's values; without one a run would fail at its first step.
        errors.push(
            "`trainer.algorithm.advantage_estimator` = \"gae\" needs a critic: set \
             `trainer.critic.model.path` (e.g. to the policy's checkpoint), or use a critic-free \
             estimator (grpo, rloo, reinforce++)"
                .into(),
        );
    }
    if let Some(c) = a.value_clip {
        if !(c.is_finite() && c >= 0.0) {
            errors.push(format!(
                "`trainer.algorithm.value_clip` = {c}: expected a non-negative number, or null \
                 for an unclipped value loss"
            ));
        }
    }
    if !(names.policy_loss)(&a.policy_loss_type) {
        errors.push(format!(
            "`trainer.algorithm.policy_loss_type` = \"{}\" is not a registered policy loss \
             (registered: {})",
            a.policy_loss_type,
            (names.policy_loss_names)().join(", ")
        ));
    }
    if a.max_seq_len == Some(0) {
        errors.push("`trainer.algorithm.max_seq_len` must be > 0 (or null)".into());
    }
    if a.kl_loss_coef < 0.0 {
        errors.push(format!(
            "`trainer.algorithm.kl_loss_coef` must be >= 0, got {}",
            a.kl_loss_coef
        ));
    }
    if !(0.0..=1.0).contains(&a.eps_clip_low) {
        errors.push(format!(
            "`trainer.algorithm.eps_clip_low` must be in [0, 1] (the ratio is clipped to \
             [1 - eps_clip_low, 1 + eps_clip_high]), got {}",
            a.eps_clip_low
        ));
    }
    if a.eps_clip_high < 0.0 {
        errors.push(format!(
            "`trainer.algorithm.eps_clip_high` must be >= 0, got {}",
            a.eps_clip_high
        ));
    }
    if a.policy_loss_type == "dual_clip" && a.clip_ratio_c <= 1.0 {
        errors.push(format!(
            "`trainer.algorithm.clip_ratio_c` must be > 1 for policy_loss_type=dual_clip, got {}",
            a.clip_ratio_c
        ));
    }
    for (key, v) in [("gamma", a.gamma), ("lambd", a.lambd)] {
        if !(0.0..=1.0).contains(&v) {
            errors.push(format!(
                "`trainer.algorithm.{key}` must be in [0, 1], got {v}"
            ));
        }
    }
    let ds = &a.dynamic_sampling;
    if let Some(kind) = ds.kind {
        if cfg.generator.n_samples_per_prompt < 2 {
            errors.push(format!(
                "`trainer.algorithm.dynamic_sampling.type` = {kind:?} needs \
                 `generator.n_samples_per_prompt` >= 2 (a group of one always has zero reward std)"
            ));
        }
        if kind == Strategy::Replace && !(0.0..=1.0).contains(&ds.min_replace_ratio) {
            errors.push(format!(
                "`trainer.algorithm.dynamic_sampling.min_replace_ratio` must be in [0, 1], got {}",
                ds.min_replace_ratio
            ));
        }
    }
    if a.use_tis && a.tis_imp_ratio_cap <= 0.0 {
        errors.push(format!(
            "`trainer.algorithm.use_tis` is true, so `trainer.algorithm.tis_imp_ratio_cap` must be > 0, got {}",
            a.tis_imp_ratio_cap
        ));
    }
    let oc = &a.off_policy_correction;
    if let Some(t) = oc.tis_ratio_type.as_deref() {
        if !matches!(t, "token" | "sequence") {
            errors.push(format!(
                "`trainer.algorithm.off_policy_correction.tis_ratio_type` = \"{t}\" is not one of null, token, sequence"
            ));
        }
    }
    if let Some(m) = oc.sequence_mask_metric.as_deref() {
        if !matches!(m, "geometric" | "product") {
            errors.push(format!(
                "`trainer.algorithm.off_policy_correction.sequence_mask_metric` = \"{m}\" is not one of null, geometric, product"
            ));
        }
    }
    if let Some(ob) = &a.overlong_buffer {
        let max_len = cfg.generator.sampling_params.max_generate_length;
        if ob.len == 0 || ob.len > max_len {
            errors.push(format!(
                "`trainer.algorithm.overlong_buffer.len` must be in 1..=generator.sampling_params.max_generate_length \
                 ({max_len}), got {}",
                ob.len
            ));
        }
        if ob.penalty_factor < 0.0 {
            errors.push(format!(
                "`trainer.algorithm.overlong_buffer.penalty_factor` must be >= 0, got {}",
                ob.penalty_factor
            ));
        }
    }
}

fn sampling(cfg: &Config, errors: &mut Vec<String>) {
    let g = &cfg.generator;
    for (section, p, training) in [
        ("generator.sampling_params", &g.sampling_params, true),
        (
            "generator.eval_sampling_params",
            &g.eval_sampling_params,
            false,
        ),
    ] {
        if training && p.temperature <= 0.0 {
            errors.push(format!(
                "`{section}.temperature` must be > 0 for training rollouts (log-probs are computed \
                 from logits / temperature), got {}",
                p.temperature
            ));
        } else if p.temperature < 0.0 {
            errors.push(format!(
                "`{section}.temperature` must be >= 0 (0 = greedy), got {}",
                p.temperature
            ));
        }
        if !(p.top_p > 0.0 && p.top_p <= 1.0) {
            errors.push(format!(
                "`{section}.top_p` must be in (0, 1], got {}",
                p.top_p
            ));
        }
        if !(0.0..=1.0).contains(&p.min_p) {
            errors.push(format!(
                "`{section}.min_p` must be in [0, 1], got {}",
                p.min_p
            ));
        }
        if p.top_k == 0 || p.top_k < -1 {
            errors.push(format!(
                "`{section}.top_k` must be -1 (off) or >= 1, got {}",
                p.top_k
            ));
        }
        if p.repetition_penalty <= 0.0 {
            errors.push(format!(
                "`{section}.repetition_penalty` must be > 0, got {}",
                p.repetition_penalty
            ));
        }
        if p.max_generate_length == 0 {
            errors.push(format!("`{section}.max_generate_length` must be > 0"));
        }
    }
    if g.max_turns == 1 && g.max_input_length != cfg.trainer.max_prompt_length {
        errors.push(format!(
            "`generator.max_input_length` ({}) must equal `trainer.max_prompt_length` ({}) for \
             single-turn generation (generator.max_turns=1)",
            g.max_input_length, cfg.trainer.max_prompt_length
        ));
    }
    if g.max_turns > 1 && g.max_input_length < cfg.trainer.max_prompt_length {
        errors.push(format!(
            "`generator.max_input_length` ({}) must be >= `trainer.max_prompt_length` ({}) for \
             multi-turn generation",
            g.max_input_length, cfg.trainer.max_prompt_length
        ));
    }
}

fn trainer(cfg: &Config, errors: &mut Vec<String>) {
    let t = &cfg.trainer;
    if t.max_ckpts_to_keep == 0 {
        errors.push(
            "`trainer.max_ckpts_to_keep` must be > 0 (keep the last N) or negative (keep all), got 0"
                .into(),
        );
    }
    if t.resume_mode == Some(ResumeMode::FromPath) && t.resume_path.is_none() {
        errors.push("`trainer.resume_mode` = from_path needs `trainer.resume_path`".into());
    }
    let mut optimizer = |role: &str, o: &super::OptimizerConfig| {
        let key = format!("trainer.{role}.optimizer_config");
        if o.lr < 0.0 {
            errors.push(format!("`{key}.lr` must be >= 0, got {}", o.lr));
        }
        if o.adam_betas.len() != 2 || o.adam_betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            errors.push(format!(
                "`{key}.adam_betas` must be two numbers in [0, 1), got {:?}",
                o.adam_betas
            ));
        }
        if o.weight_decay < 0.0 {
            errors.push(format!(
                "`{key}.weight_decay` must be >= 0, got {}",
                o.weight_decay
            ));
        }
        // <= 0 turns clipping off, as in SkyRL.
        if o.max_grad_norm.is_nan() {
            errors.push(format!("`{key}.max_grad_norm` must be a number, got NaN"));
        }
    };
    optimizer("policy", &t.policy.optimizer_config);
    if t.critic.model.path.is_some() {
        optimizer("critic", &t.critic.optimizer_config);
    }
    if cfg.data.train_data.is_empty() {
        errors.push("`data.train_data` is empty; give at least one file".into());
    }
    let fs = cfg.environment.skyrl_gym.gsm8k.format_score;
    if !(0.0..=1.0).contains(&fs) {
        errors.push(format!(
            "`environment.skyrl_gym.gsm8k.format_score` is {fs}; expected a number in [0, 1] (the reward of a formatted wrong answer; a correct one scores 1)"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigBuilder;

    const KNOWN: [&str; 7] = [
        "grpo",
        "rloo",
        "reinforce++",
        "gae",
        "regular",
        "dual_clip",
        "gspo",
    ];
    fn known(name: &str) -> bool {
        KNOWN.contains(&name)
    }
    fn names() -> Vec<String> {
        KNOWN.iter().map(|s| s.to_string()).collect()
    }
    const NAMES: NameChecks = NameChecks {
        advantage_estimator: known,
        advantage_estimator_names: names,
        policy_loss: known,
        policy_loss_names: names,
    };

    fn check(args: &[&str]) -> Result<Vec<String>, String> {
        let r = ConfigBuilder::new()
            .apply_overrides(args)
            .map_err(|e| e.to_string())?
            .resolve()
            .map_err(|e| e.to_string())?;
        validate_with(&r, &NAMES).map_err(|e| e.to_string())
    }

    /// The rule fires and its message names `key`.
    fn fails(args: &[&str], key: &str) {
        match check(args) {
            Ok(w) => panic!("{args:?} passed validation (warnings {w:?})"),
            Err(e) => assert!(
                e.contains(key),
                "{args:?}: error does not name `{key}`: {e}"
            ),
        }
    }

    #[test]
    fn defaults_are_valid_and_quiet() {
        assert_eq!(check(&[]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn batch_size_rules() {
        fails(
            &["trainer.train_batch_size=1000"],
            "trainer.train_batch_size % trainer.policy_mini_batch_size",
        );
        fails(
            &["trainer.policy_mini_batch_size=0"],
            "trainer.policy_mini_batch_size",
        );
        fails(
            &["trainer.micro_train_batch_size_per_gpu=3"],
            "trainer.policy_mini_batch_size * generator.n_samples_per_prompt % trainer.micro_train_batch_size_per_gpu",
        );
        // 256 * 5 = 1280 rows split into micro-batches of 64.
        assert!(check(&["trainer.micro_train_batch_size_per_gpu=64"]).is_ok());
        fails(
            &["generator.n_samples_per_prompt=0"],
            "generator.n_samples_per_prompt",
        );
        fails(
            &[
                "trainer.critic.model.path=/m",
                "trainer.critic_mini_batch_size=1000",
            ],
            "trainer.critic_mini_batch_size",
        );
    }

    #[test]
    fn algorithm_rules() {
        fails(
            &["trainer.algorithm.use_kl_in_reward=true"],
            "use_kl_in_reward",
        );
        fails(
            &["trainer.algorithm.advantage_estimator=nope"],
            "trainer.algorithm.advantage_estimator",
        );
        fails(
            &["trainer.algorithm.advantage_estimator=gae"],
            "trainer.critic.model.path",
        );
        assert!(check(&[
            "trainer.algorithm.advantage_estimator=gae",
            "trainer.critic.model.path=/c",
            "trainer.algorithm.value_clip=null",
        ])
        .is_ok());
        fails(
            &["trainer.algorithm.value_clip=-0.5"],
            "trainer.algorithm.value_clip",
        );
        fails(
            &["trainer.algorithm.policy_loss_type=nope"],
            "trainer.algorithm.policy_loss_type",
        );
        fails(
            &["trainer.algorithm.loss_reduction=mean"],
            "trainer.algorithm.loss_reduction",
        );
        fails(
            &["trainer.algorithm.dynamic_sampling.type=drop"],
            "trainer.algorithm.dynamic_sampling.type",
        );
        fails(
            &[
                "trainer.algorithm.dynamic_sampling.type=filter",
                "generator.n_samples_per_prompt=1",
            ],
            "generator.n_samples_per_prompt",
        );
        fails(
            &["trainer.algorithm.kl_estimator_type=k4"],
            "kl_estimator_type",
        );
        fails(
            &[
                "trainer.algorithm.policy_loss_type=dual_clip",
                "trainer.algorithm.clip_ratio_c=1.0",
            ],
            "clip_ratio_c",
        );
        fails(&["trainer.algorithm.eps_clip_low=1.5"], "eps_clip_low");
        fails(
            &[
                "+trainer.algorithm.overlong_buffer.len=2048",
                "+trainer.algorithm.overlong_buffer.penalty_factor=1.0",
            ],
            "overlong_buffer.len",
        );
        for r in rlvr_algo::LossReduction::NAMES {
            assert!(
                check(&[&format!("trainer.algorithm.loss_reduction={r}")]).is_ok(),
                "{r}"
            );
        }
    }

    #[test]
    fn non_finite_numbers_are_refused_by_key() {
        fails(
            &["trainer.policy.optimizer_config.lr=.nan"],
            "trainer.policy.optimizer_config.lr",
        );
        fails(
            &["generator.sampling_params.temperature=.inf"],
            "temperature",
        );
        fails(&["trainer.algorithm.eps_clip_high=-.inf"], "eps_clip_high");
    }

    #[test]
    fn seq_mean_token_sum_norm_defaults_max_seq_len_like_skyrl() {
        let w = check(&["trainer.algorithm.loss_reduction=seq_mean_token_sum_norm"]).unwrap();
        assert!(
            w.iter()
                .any(|w| w.contains("max_seq_len") && w.contains("1536")),
            "{w:?}"
        );
        let w = check(&[
            "trainer.algorithm.loss_reduction=seq_mean_token_sum_norm",
            "trainer.algorithm.max_seq_len=4096",
        ])
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        fails(&["trainer.algorithm.max_seq_len=0"], "max_seq_len");
    }

    #[test]
    fn sampling_and_trainer_rules() {
        fails(
            &["generator.sampling_params.temperature=0"],
            "generator.sampling_params.temperature",
        );
        assert!(check(&["generator.eval_sampling_params.temperature=0"]).is_ok());
        fails(
            &["generator.eval_sampling_params.top_p=0"],
            "generator.eval_sampling_params.top_p",
        );
        fails(
            &["generator.sampling_params.top_k=0"],
            "generator.sampling_params.top_k",
        );
        fails(
            &["generator.max_input_length=100"],
            "generator.max_input_length",
        );
        fails(
            &["trainer.max_ckpts_to_keep=0"],
            "trainer.max_ckpts_to_keep",
        );
        fails(&["trainer.resume_mode=from_path"], "trainer.resume_path");
        fails(
            &["trainer.policy.optimizer_config.adam_betas=[0.9]"],
            "adam_betas",
        );
        fails(
            &["trainer.policy.optimizer_config.scheduler=polynomial"],
            "scheduler",
        );
        fails(
            &["trainer.sequence_parallel_backend=ring"],
            "trainer.sequence_parallel_backend",
        );
        fails(
            &["environment.skyrl_gym.gsm8k.method=fuzzy"],
            "environment.skyrl_gym.gsm8k.method",
        );
        fails(&["data.train_data=[]"], "data.train_data");
    }

    #[test]
    fn all_errors_are_reported_together() {
        let e = check(&[
            "trainer.train_batch_size=1000",
            "generator.sampling_params.top_p=2",
        ])
        .unwrap_err();
        assert!(e.contains("train_batch_size") && e.contains("top_p"), "{e}");
    }
}
