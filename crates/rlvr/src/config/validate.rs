//! Validation before any work starts. Rules follow skyrl-train's `validate_cfg` with the same
//! meanings; rlvr trains on one device, so SkyRL's per-GPU batch sizes apply with a
//! data-parallel size of 1. Every problem is reported (not just the first), each naming its keys.
//! A key's type is checked when the tree is deserialised; here are its range and the rules
//! between keys. Keys rlvr parses but does not act on are `compat.rs`'s.

use std::fmt::Display;

use super::error::ConfigError;
use super::resolved::ResolvedConfig;
use super::{compat, Config, OptimizerConfig, ResumeMode};
use rlvr_algo::dynamic_sampling::Strategy;

/// Check every rule; Ok holds the warnings (one line per key that is parsed but not honoured).
pub fn validate(r: &ResolvedConfig) -> Result<Vec<String>, ConfigError> {
    let mut rules = Rules(Vec::new());
    // YAML's `.nan` / `.inf` parse as numbers; no setting means either, and one would reach the
    // weights (an lr of NaN writes NaN checkpoints).
    for (key, value) in super::tree::leaves(r.tree()) {
        if let Some(v) = value.as_f64().filter(|v| !v.is_finite()) {
            rules
                .0
                .push(format!("`{key}` must be a finite number, got {v}"));
        }
    }
    let cfg = &r.config;
    batch_sizes(cfg, &mut rules);
    algorithm(cfg, &mut rules);
    generator(cfg, &mut rules);
    trainer(cfg, &mut rules);
    let mut warnings = Vec::new();
    compat::check(r, &mut warnings, &mut rules.0);
    if cfg.trainer.algorithm.loss_reduction == rlvr_algo::LossReduction::SeqMeanTokenSumNorm
        && cfg.trainer.algorithm.max_seq_len.is_none()
    {
        warnings.push(format!(
            "`trainer.algorithm.max_seq_len` is null: seq_mean_token_sum_norm divides by \
             generator.max_input_length + generator.sampling_params.max_generate_length = {} (as SkyRL does)",
            cfg.max_seq_len()
        ));
    }
    if rules.0.is_empty() {
        Ok(warnings)
    } else {
        Err(ConfigError::Invalid(rules.0))
    }
}

/// One message per broken rule.
struct Rules(Vec<String>);

impl Rules {
    fn rule(&mut self, ok: bool, message: impl Display) {
        if !ok {
            self.0.push(message.to_string());
        }
    }

    /// `key` breaks its rule unless `ok`; `what` says what it takes.
    fn need(&mut self, ok: bool, key: &str, what: impl Display) {
        self.rule(ok, format_args!("`{key}` {what}"));
    }

    /// `v` must lie in `range`; `why` (may be empty) follows the range in the message. A
    /// non-finite `v` is left to the check of every number.
    fn within(&mut self, key: &str, v: f64, Range(ok, words): Range, why: &str) {
        let space = if why.is_empty() { "" } else { " " };
        let what = format_args!("must be {words}{space}{why}, got {v}");
        self.need(!v.is_finite() || ok(v), key, what);
    }

    /// `value` must be one of `names`; `what` says what they are.
    fn one_of(&mut self, key: &str, value: &str, names: &[String], what: &str) {
        let ok = names.iter().any(|n| n == value);
        let names = names.join(", ");
        self.need(
            ok,
            key,
            format_args!("= \"{value}\" is not {what} (one of {names})"),
        );
    }

    fn positive(&mut self, key: &str, v: usize) {
        self.need(v > 0, key, "must be > 0");
    }
}

/// A range a number must lie in, and its words.
struct Range(fn(f64) -> bool, &'static str);
const UNIT: Range = Range(|v| (0.0..=1.0).contains(&v), "in [0, 1]");
const NON_NEGATIVE: Range = Range(|v| v >= 0.0, ">= 0");
const POSITIVE: Range = Range(|v| v > 0.0, "> 0");

fn batch_sizes(cfg: &Config, r: &mut Rules) {
    let t = &cfg.trainer;
    let n = cfg.generator.n_samples_per_prompt;
    r.positive("trainer.train_batch_size", t.train_batch_size);
    let micro = t.micro_train_batch_size_per_gpu;
    r.positive("trainer.micro_train_batch_size_per_gpu", micro);
    let micro_forward = t.micro_forward_batch_size_per_gpu;
    r.positive("trainer.micro_forward_batch_size_per_gpu", micro_forward);
    r.positive("generator.n_samples_per_prompt", n);
    let eval_n = cfg.generator.eval_n_samples_per_prompt;
    r.positive("generator.eval_n_samples_per_prompt", eval_n);
    r.positive("trainer.eval_batch_size", t.eval_batch_size);
    r.positive("trainer.update_epochs_per_batch", t.update_epochs_per_batch);
    let critic = t.critic.model.path.is_some();
    for (role, mini) in [
        ("policy", t.policy_mini_batch_size),
        ("critic", t.critic_mini_batch_size),
    ] {
        let key = format!("trainer.{role}_mini_batch_size");
        if (role == "critic" && !critic) || t.train_batch_size == 0 || micro == 0 || n == 0 {
            continue;
        }
        r.positive(&key, mini);
        let (batch, rows) = (t.train_batch_size, mini * n);
        r.rule(
            mini == 0 || batch % mini == 0,
            format_args!(
                "trainer.train_batch_size % {key} != 0 ({batch} % {mini} = {}): a training \
                 batch must split into whole mini-batches",
                batch % mini.max(1)
            ),
        );
        r.rule(
            rows % micro == 0,
            format_args!(
                "{key} * generator.n_samples_per_prompt % trainer.micro_train_batch_size_per_gpu \
                 != 0 ({mini} * {n} = {rows} rows per mini-batch, micro-batch {micro}): a \
                 mini-batch must split into whole micro-batches (rlvr trains on one device, so \
                 the per-GPU size applies to the whole mini-batch)"
            ),
        );
    }
}

fn algorithm(cfg: &Config, r: &mut Rules) {
    let a = &cfg.trainer.algorithm;
    let key = |k: &str| format!("trainer.algorithm.{k}");
    r.need(
        !(a.use_kl_in_reward && a.use_kl_loss),
        "trainer.algorithm.use_kl_in_reward",
        "and `trainer.algorithm.use_kl_loss` are both true; use one KL placement (they are \
         mutually exclusive)",
    );
    let estimators = rlvr_algo::advantages::registered_names();
    let estimator = &a.advantage_estimator;
    r.one_of(
        &key("advantage_estimator"),
        estimator,
        &estimators,
        "a registered advantage estimator",
    );
    // GAE takes a critic's values; without one a run would fail at its first step.
    r.need(
        a.advantage_estimator != "gae" || cfg.trainer.critic.model.path.is_some(),
        &key("advantage_estimator"),
        "= \"gae\" needs a critic: set `trainer.critic.model.path` (e.g. to the policy's \
         checkpoint), or use a critic-free estimator (grpo, rloo, reinforce++)",
    );
    if let Some(c) = a.value_clip {
        r.within(
            &key("value_clip"),
            c,
            NON_NEGATIVE,
            "(or null for an unclipped value loss)",
        );
    }
    let losses = rlvr_algo::policy_loss::registered_names();
    r.one_of(
        &key("policy_loss_type"),
        &a.policy_loss_type,
        &losses,
        "a registered policy loss",
    );
    r.need(
        a.max_seq_len != Some(0),
        &key("max_seq_len"),
        "must be > 0 (or null)",
    );
    r.within(&key("kl_loss_coef"), a.kl_loss_coef, NON_NEGATIVE, "");
    let clip = "(the ratio is clipped to [1 - eps_clip_low, 1 + eps_clip_high])";
    r.within(&key("eps_clip_low"), a.eps_clip_low, UNIT, clip);
    r.within(&key("eps_clip_high"), a.eps_clip_high, NON_NEGATIVE, "");
    if a.policy_loss_type == "dual_clip" {
        let above_one = Range(|v| v > 1.0, "> 1");
        let why = "for policy_loss_type=dual_clip";
        r.within(&key("clip_ratio_c"), a.clip_ratio_c, above_one, why);
    }
    r.within(&key("gamma"), a.gamma, UNIT, "");
    r.within(&key("lambd"), a.lambd, UNIT, "");
    let ds = &a.dynamic_sampling;
    if let Some(kind) = ds.kind {
        r.need(
            cfg.generator.n_samples_per_prompt >= 2,
            "generator.n_samples_per_prompt",
            format_args!(
                "must be >= 2 for `trainer.algorithm.dynamic_sampling.type` = {kind} (a group \
                 of one always has zero reward std)"
            ),
        );
        if kind == Strategy::Replace {
            let ratio = ds.min_replace_ratio;
            r.within(&key("dynamic_sampling.min_replace_ratio"), ratio, UNIT, "");
        }
    }
    if a.use_tis {
        let why = "(trainer.algorithm.use_tis is true)";
        r.within(
            &key("tis_imp_ratio_cap"),
            a.tis_imp_ratio_cap,
            POSITIVE,
            why,
        );
    }
    if let Some(ob) = &a.overlong_buffer {
        let max_len = cfg.generator.sampling_params.max_generate_length;
        r.need(
            (1..=max_len).contains(&ob.len),
            &key("overlong_buffer.len"),
            format_args!(
                "must be in 1..=generator.sampling_params.max_generate_length ({max_len}), got {}",
                ob.len
            ),
        );
        r.within(
            &key("overlong_buffer.penalty_factor"),
            ob.penalty_factor,
            NON_NEGATIVE,
            "",
        );
    }
}

fn generator(cfg: &Config, r: &mut Rules) {
    let g = &cfg.generator;
    for (section, p, temperature, why) in [
        (
            "generator.sampling_params",
            &g.sampling_params,
            POSITIVE,
            "for training rollouts (log-probs are computed from logits / temperature)",
        ),
        (
            "generator.eval_sampling_params",
            &g.eval_sampling_params,
            NON_NEGATIVE,
            "(0 = greedy)",
        ),
    ] {
        let key = |k: &str| format!("{section}.{k}");
        r.within(&key("temperature"), p.temperature, temperature, why);
        let top_p = Range(|v| v > 0.0 && v <= 1.0, "in (0, 1]");
        r.within(&key("top_p"), p.top_p, top_p, "");
        r.within(&key("min_p"), p.min_p, UNIT, "");
        let top_k = p.top_k;
        let top_k_ok = top_k == -1 || top_k >= 1;
        r.need(
            top_k_ok,
            &key("top_k"),
            format_args!("must be -1 (off) or >= 1, got {top_k}"),
        );
        r.positive(&key("max_generate_length"), p.max_generate_length);
    }
    let (input, prompt) = (g.max_input_length, cfg.trainer.max_prompt_length);
    r.need(
        input == prompt,
        "generator.max_input_length",
        format_args!(
            "({input}) must equal `trainer.max_prompt_length` ({prompt}) for single-turn generation"
        ),
    );
}

fn trainer(cfg: &Config, r: &mut Rules) {
    let t = &cfg.trainer;
    r.need(
        t.max_ckpts_to_keep != 0,
        "trainer.max_ckpts_to_keep",
        "must be > 0 (keep the last N) or negative (keep all), got 0",
    );
    r.need(
        t.resume_mode != Some(ResumeMode::FromPath) || t.resume_path.is_some(),
        "trainer.resume_mode",
        "= from_path needs `trainer.resume_path`",
    );
    let mut optimizer = |role: &str, o: &OptimizerConfig| {
        let key = |k: &str| format!("trainer.{role}.optimizer_config.{k}");
        r.within(&key("lr"), o.lr, NON_NEGATIVE, "");
        let betas = &o.adam_betas;
        let ok = betas.len() == 2 && betas.iter().all(|b| (0.0..1.0).contains(b));
        let what = format_args!("must be two numbers in [0, 1), got {betas:?}");
        r.need(ok, &key("adam_betas"), what);
        r.within(&key("weight_decay"), o.weight_decay, NON_NEGATIVE, "");
        // <= 0 turns clipping off, as in SkyRL; NaN is refused with every non-finite number.
    };
    optimizer("policy", &t.policy.optimizer_config);
    if t.critic.model.path.is_some() {
        optimizer("critic", &t.critic.optimizer_config);
    }
    r.need(
        !cfg.data.train_data.is_empty(),
        "data.train_data",
        "is empty; give at least one file",
    );
    let fs = cfg.environment.skyrl_gym.gsm8k.format_score;
    let why = "(the reward of a formatted wrong answer; a correct one scores 1)";
    r.within("environment.skyrl_gym.gsm8k.format_score", fs, UNIT, why);
}
