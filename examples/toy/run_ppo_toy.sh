#!/usr/bin/env bash
# PPO with a critic on the toy task, with the keys of SkyRL's examples/train/ppo/run_ppo.sh: GAE
# advantages (gamma = lambda = 1), a value model started from the policy's checkpoint, the
# regular PPO clip, the clipped value loss (value_clip 0.2). Last line: `final mean reward: X`.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p rlvr
rm -rf toy_run
./target/release/rlvr toy toy_run
./target/release/rlvr train --config examples/toy/dapo_toy.yaml \
  trainer.algorithm.advantage_estimator="gae" \
  trainer.critic.model.path="toy_run/model" \
  trainer.critic_mini_batch_size=4 \
  trainer.critic.optimizer_config.lr=3.0e-3 \
  trainer.critic.optimizer_config.weight_decay=0.0 \
  trainer.algorithm.policy_loss_type="regular" \
  trainer.algorithm.eps_clip_high=0.2 \
  trainer.algorithm.dynamic_sampling.type=null \
  generator.apply_overlong_filtering=false \
  trainer.run_name=toy_ppo \
  "$@"
