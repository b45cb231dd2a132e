#!/usr/bin/env bash
# DAPO on the toy task with generation on two `rlvr serve` processes as remote engines, the way
# SkyRL runs with `generator.run_engines_locally=false` against vLLM or SGLang servers. Weights are
# written to generator.weight_sync_dir after every step and each server reloads them.
#
#   bash examples/remote/run_two_servers.sh            # vLLM's API (BACKEND=vllm, default)
#   BACKEND=sglang bash examples/remote/run_two_servers.sh
#
# The servers could run on other machines: they only need to read the sync directory (a shared
# filesystem) and be reachable over HTTP.
set -euo pipefail
cd "$(dirname "$0")/../.."
BACKEND="${BACKEND:-vllm}"
cargo build --release -q -p rlvr
RLVR=./target/release/rlvr
DIR=remote_run
rm -rf "$DIR"
$RLVR toy "$DIR" > /dev/null

# vLLM reloads the checkpoint it was started on, so its servers serve the sync directory itself;
# SGLang loads whatever directory the reload names.
SYNC="$DIR/weight_sync"
cp -r "$DIR/model" "$SYNC"
SERVE_MODEL="$SYNC"
[ "$BACKEND" = sglang ] && SERVE_MODEL="$DIR/model"

$RLVR serve --model "$SERVE_MODEL" --served-model-name toy-policy --port 8101 2> "$DIR/server_a.log" &
A=$!
$RLVR serve --model "$SERVE_MODEL" --served-model-name toy-policy --port 8102 2> "$DIR/server_b.log" &
B=$!
trap 'kill $A $B 2> /dev/null || true' EXIT
for port in 8101 8102; do
  until curl -sf "http://127.0.0.1:$port/health" > /dev/null; do sleep 0.2; done
done

$RLVR train --config examples/toy/dapo_toy.yaml \
  trainer.policy.model.path="$DIR/model" \
  data.train_data="['$DIR/data/train.parquet']" \
  data.val_data="['$DIR/data/validation.parquet']" \
  trainer.log_path="$DIR/logs" trainer.ckpt_path="$DIR/ckpt" trainer.export_path="$DIR/export" \
  generator.run_engines_locally=false \
  generator.backend="$BACKEND" \
  generator.remote_inference_engine_urls="['127.0.0.1:8101','127.0.0.1:8102']" \
  generator.served_model_name=toy-policy \
  generator.weight_sync_dir="$SYNC" \
  "$@"
grep -h "generated" "$DIR"/server_*.log | tail -n 2
