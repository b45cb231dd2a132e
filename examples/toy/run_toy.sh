#!/usr/bin/env bash
# DAPO on the toy task through `rlvr train` with a config file. Last line: `final mean reward: X`.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p rlvr
rm -rf toy_run
./target/release/rlvr toy toy_run
./target/release/rlvr train --config examples/toy/dapo_toy.yaml \
  +trainer.algorithm.overlong_buffer.len=4 +trainer.algorithm.overlong_buffer.penalty_factor=1.0 "$@"
