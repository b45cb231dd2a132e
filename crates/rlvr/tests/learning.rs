//! The whole loop moves the policy the right way: on the toy task (prompt `qK` → answer `aK`), a
//! freshly initialised model scores about 1/18, and GRPO and DAPO must each lift the mean reward
//! above 0.8 within a bounded number of steps, with a fixed seed. A sign error, a wrong mask, a
//! wrong ratio or a broken optimizer step makes this fail.
//!
//! The reward is measured by sampling (temperature 1, 8 samples per prompt) on the validation
//! prompts, not on the training batch: DAPO's dynamic sampling keeps only groups whose rewards
//! differ, so a training batch's mean reward is biased and can never reach 1.

use rlvr::config::ConfigBuilder;
use rlvr::run::{self, Extensions};
use std::path::{Path, PathBuf};

fn toy_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/toy/dapo_toy.yaml")
}

/// The toy task's trainer with `overrides`, its files under `dir`.
fn toy_trainer(dir: &Path, overrides: &[&str]) -> rlvr::trainer::Trainer {
    rlvr::toy::write(dir, 0).unwrap();
    let mut args = rlvr::toy::run_overrides(dir);
    args.extend(
        [
            "trainer.epochs=20",
            "trainer.eval_before_train=false",
            "trainer.eval_interval=-1",
            "generator.eval_sampling_params.temperature=1.0",
            "generator.eval_n_samples_per_prompt=8",
            "trainer.ckpt_interval=-1",
        ]
        .map(String::from),
    );
    args.extend(overrides.iter().map(|s| s.to_string()));
    let mut builder = ConfigBuilder::new();
    builder.merge_file(&toy_config()).unwrap();
    builder.apply_overrides(&args).unwrap();
    let resolved = builder.resolve().unwrap();
    resolved.validate().unwrap();
    let ext = Extensions::defaults(&resolved.config).unwrap();
    run::build(&resolved, ext).unwrap()
}

/// Trains on the toy task with `overrides`; returns the sampled eval reward before training and
/// after every 8 steps, stopping once it exceeds 0.8 (or after `max_steps`).
fn train(dir: &Path, overrides: &[&str], max_steps: usize) -> Vec<f64> {
    let mut trainer = toy_trainer(dir, overrides);
    let mut rewards = vec![trainer.evaluate().unwrap()["eval/all/avg_score"]];
    for step in 1..=max_steps {
        trainer.step().unwrap().unwrap();
        if step % 8 == 0 {
            rewards.push(trainer.evaluate().unwrap()["eval/all/avg_score"]);
            if *rewards.last().unwrap() > 0.8 {
                break;
            }
        }
    }
    rewards
}

fn assert_learns(name: &str, rewards: &[f64]) {
    eprintln!("{name}: {rewards:.2?}");
    assert!(
        rewards[0] < 0.3,
        "{name}: the untrained policy should score below 0.3, got {}",
        rewards[0]
    );
    let last = *rewards.last().unwrap();
    assert!(
        last > 0.8,
        "{name}: sampled eval reward is {last:.3} after {} steps",
        8 * (rewards.len() - 1)
    );
}

#[test]
fn grpo_learns_the_toy_task() {
    let dir = tempfile::tempdir().unwrap();
    let rewards = train(
        dir.path(),
        &[
            "trainer.algorithm.policy_loss_type=regular",
            "trainer.algorithm.eps_clip_high=0.2",
            "trainer.algorithm.dynamic_sampling.type=null",
            "trainer.algorithm.use_kl_loss=true",
            "generator.apply_overlong_filtering=false",
        ],
        200,
    );
    assert_learns("grpo", &rewards);
}

#[test]
fn dapo_learns_the_toy_task() {
    let dir = tempfile::tempdir().unwrap();
    // The toy config is DAPO: clip-higher, dual clip, dynamic sampling (filter), token mean,
    // overlong filtering; plus the soft overlong punishment as SkyRL's script adds it.
    let rewards = train(
        dir.path(),
        &[
            "+trainer.algorithm.overlong_buffer.len=4",
            "+trainer.algorithm.overlong_buffer.penalty_factor=1.0",
        ],
        200,
    );
    assert_learns("dapo", &rewards);
}

/// PPO with a critic (SkyRL's `advantage_estimator=gae`): the value model is trained beside the
/// policy, its loss falls as it learns the reward, and the policy learns the task.
#[test]
fn ppo_with_a_critic_learns_the_toy_task() {
    let dir = tempfile::tempdir().unwrap();
    let critic = format!("trainer.critic.model.path={}/model", dir.path().display());
    let overrides = [
        "trainer.algorithm.advantage_estimator=gae",
        "trainer.algorithm.policy_loss_type=regular",
        "trainer.algorithm.eps_clip_high=0.2",
        "trainer.algorithm.dynamic_sampling.type=null",
        "generator.apply_overlong_filtering=false",
        critic.as_str(),
        "trainer.critic.optimizer_config.lr=3.0e-3",
        "trainer.critic.optimizer_config.weight_decay=0.0",
        "trainer.critic_mini_batch_size=4",
    ];
    let mut trainer = toy_trainer(dir.path(), &overrides);
    let first = trainer.step().unwrap().unwrap();
    for k in [
        "critic/critic_loss",
        "critic/values_mean",
        "critic/values_clipfrac",
        "critic/critic_lr",
        "critic/grad_norm",
    ] {
        assert!(first[k].is_finite(), "{k} = {}", first[k]);
    }
    assert_eq!(first["critic/critic_lr"], 3.0e-3);
    // Over steps 21-40 (rewards rising from ~0.1 to ~0.5): the values follow the mean reward, and
    // the critic beats predicting 0 (loss ½·E[r²] = ½·mean reward for 0/1 rewards).
    let (mut reward, mut values, mut loss) = (0.0, 0.0, 0.0);
    for step in 2..=40 {
        let m = trainer.step().unwrap().unwrap();
        if step > 20 {
            reward += m["reward/avg_raw_reward"] / 20.0;
            values += m["critic/values_mean"] / 20.0;
            loss += m["critic/critic_loss"] / 20.0;
        }
    }
    eprintln!("steps 21-40: reward {reward:.3}, values {values:.3}, critic loss {loss:.4}");
    assert!(reward > 0.15, "the policy improves: mean reward {reward}");
    assert!(
        (values - reward).abs() < 0.1,
        "values {values} vs rewards {reward}"
    );
    assert!(
        loss < 0.75 * 0.5 * reward,
        "critic loss {loss}, predicting 0 gives {}",
        0.5 * reward
    );

    let rewards = train(dir.path(), &overrides, 200);
    assert_learns("ppo+critic", &rewards);
}

/// One prompt pass per group (the default) trains as the unshared rows do: the same first step's
/// loss, gradient norm and updated weights, up to f32 summation order (f32 products: with bf16
/// ones, the different sums round differently to bf16 and the loss, a near-cancelling sum of
/// advantage-weighted ratios, moves by ~3e-4 of itself).
#[test]
fn shared_prompt_training_matches_whole_rows() {
    let run = |shared: &str| {
        let dir = tempfile::tempdir().unwrap();
        let mut trainer = toy_trainer(dir.path(), &[shared, "trainer.bf16=false"]);
        assert_eq!(trainer.share_prompts, shared.ends_with("true"));
        let m = trainer.step().unwrap().unwrap();
        let (_, w) = trainer.policy.named_vars()[1].clone();
        let w: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        (m, w)
    };
    let (a, wa) = run("+trainer.shared_prompt=true");
    let (b, wb) = run("+trainer.shared_prompt=false");
    // 8 prompts x 16 samples in micro-batches of 16 rows: 15 of every 16 prompt passes saved.
    assert_eq!(a["train/prompt_passes_saved"], 8.0 * 15.0);
    assert_eq!(b["train/prompt_passes_saved"], 0.0);
    for k in [
        "policy/final_loss",
        "policy/grad_norm",
        "policy/policy_entropy",
    ] {
        assert!(
            (a[k] - b[k]).abs() <= 1e-5 * (1.0 + b[k].abs()),
            "{k}: {} shared vs {} whole rows",
            a[k],
            b[k]
        );
    }
    let diff = wa
        .iter()
        .zip(&wb)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-6, "weights differ by {diff} after one step");
}

/// SkyRL's default `max_seq_len: null` with `seq_mean_token_sum_norm` normalises by max input +
/// max generate length instead of failing at the first step.
#[test]
fn seq_mean_token_sum_norm_trains_with_max_seq_len_null() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = toy_trainer(
        dir.path(),
        &[
            "trainer.algorithm.loss_reduction=seq_mean_token_sum_norm",
            "trainer.algorithm.max_seq_len=null",
        ],
    );
    for _ in 0..2 {
        let m = trainer.step().unwrap().unwrap();
        let loss = m["policy/final_loss"];
        assert!(loss.is_finite(), "loss {loss}");
    }
}

/// `use_kl_in_reward` with `kl_ctrl.type=adaptive`: the coefficient starts at `kl_loss_coef` and
/// moves as SkyRL's AdaptiveKLController does (KL 0 at the first step: down by 20 % x rows / horizon).
#[test]
fn adaptive_kl_in_reward_updates_its_coefficient() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = toy_trainer(
        dir.path(),
        &[
            "trainer.algorithm.use_kl_loss=false",
            "trainer.algorithm.use_kl_in_reward=true",
            "trainer.algorithm.kl_ctrl.type=adaptive",
            "trainer.algorithm.kl_ctrl.horizon=100",
        ],
    );
    let first = trainer.step().unwrap().unwrap();
    assert_eq!(first["loss/kl_loss_coef"], 0.001);
    assert_eq!(
        first["loss/avg_kl"], 0.0,
        "the policy is the reference at step 1"
    );
    let rows =
        (trainer.cfg.trainer.train_batch_size * trainer.cfg.generator.n_samples_per_prompt) as f64;
    let second = trainer.step().unwrap().unwrap();
    let want = 0.001 * (1.0 - 0.2 * rows / 100.0);
    assert!(
        (second["loss/kl_loss_coef"] - want).abs() < 1e-15,
        "{} vs {want}",
        second["loss/kl_loss_coef"]
    );
}

/// As SkyRL's `for epoch in range(epochs): for batch in dataloader`: the extra generation batches
/// of dynamic sampling come out of the same passes over the data, so a one-epoch run ends when
/// that epoch's batches are drawn, after fewer global steps than batches, and saves a checkpoint.
#[test]
fn dynamic_sampling_run_ends_after_its_epochs_of_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = toy_trainer(
        dir.path(),
        &[
            "trainer.epochs=1",
            "trainer.ckpt_interval=100",
            "trainer.algorithm.dynamic_sampling.type=filter",
        ],
    );
    let batches_per_epoch = trainer.loader.batches_per_epoch();
    assert_eq!(trainer.total_steps(), batches_per_epoch);
    let last = trainer.fit().unwrap();

    let steps = trainer.global_step;
    let log = std::fs::read_to_string(trainer.run_dir.join("metrics.jsonl")).unwrap();
    let per_step: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(per_step.len(), steps, "one metrics line per step");
    let drawn: f64 = per_step
        .iter()
        .map(|m| m["dynamic_sampling/num_gen_batches"].as_f64().unwrap())
        .sum();
    assert!(
        steps < batches_per_epoch,
        "some step needed more than one batch, so the epoch ends in fewer steps ({steps} of {batches_per_epoch})"
    );
    assert!(drawn <= batches_per_epoch as f64, "{drawn} batches drawn");
    assert_eq!(
        last["dynamic_sampling/total_gen_batches"], drawn,
        "the run's count of generation batches"
    );
    let state = trainer.loader_state();
    assert_eq!(
        (state.epoch, state.batch_in_epoch),
        (0, batches_per_epoch),
        "the one epoch is drawn to its end, no second epoch is started"
    );
    assert!(
        trainer
            .ckpt_dir
            .as_ref()
            .unwrap()
            .join(format!("global_step_{steps}"))
            .is_dir(),
        "a final checkpoint at step {steps}"
    );
}

/// The metrics SkyRL logs beside the loss: the advantage step's, the worker's response width,
/// the generator's token counts by reward, and the evaluation's positive reward and lengths.
#[test]
fn skyrl_step_and_eval_metrics_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = toy_trainer(dir.path(), &[]);
    let m = trainer.step().unwrap().unwrap();
    let abs = m["loss/avg_raw_advantages_abs"];
    assert!(
        abs > 0.0 && abs >= m["loss/avg_raw_advantages"].abs(),
        "mean |advantage| {abs}"
    );
    assert!(m["loss/avg_final_rewards"].is_finite());
    let width = m["policy/response_length"];
    let max_len = trainer.cfg.generator.sampling_params.max_generate_length as f64;
    assert!((1.0..=max_len).contains(&width), "response width {width}");
    let (lo, hi) = (m["generate/min_num_tokens"], m["generate/max_num_tokens"]);
    for k in [
        "generate/avg_tokens_non_zero_rewards",
        "generate/avg_tokens_zero_rewards",
    ] {
        let v = m[k];
        assert!(
            v == 0.0 || (lo..=hi).contains(&v),
            "{k} = {v} outside [{lo}, {hi}]"
        );
    }

    // Before any evaluation the closing figure is the training batch's; after one, the evaluation's.
    let (_, r) = trainer.final_mean_reward(&m).unwrap();
    assert_eq!(r, m["reward/avg_raw_reward"]);
    let e = trainer.evaluate().unwrap();
    let (detail, r) = trainer.final_mean_reward(&m).unwrap();
    assert_eq!(r, e["eval/all/avg_score"]);
    assert!(detail.contains("evaluation at step 1"), "{detail}");
    assert!(e["eval/all/mean_positive_reward"] >= e["eval/all/avg_score"]);
    assert!(e.contains_key("eval/toy/mean_positive_reward"), "{e:?}");
    let (a, b) = (
        e["eval/all/generate/avg_num_tokens"],
        e["eval/all/response_length"],
    );
    assert!((a - b).abs() < 1e-9, "mean eval length {a} vs {b}");
}
