#!/usr/bin/env bash
# Builds `rlvr --features cuda` on a machine with no GPU and no CUDA install: NVIDIA's CUDA 13.0
# compiler and headers come from PyPI wheels, and the libraries the binary links against
# (libcuda, cuBLAS, cuBLASLt, cuRAND, NVRTC) are stand-in stubs with the real sonames, so the
# binary loads the real ones on the GPU machine. This is how docs/cuda.md's H100 check was built.
#
#   bash scripts/cuda_toolkit_from_pypi.sh [PREFIX]      # default PREFIX=/opt/cuda13
#   . PREFIX/env.sh && cargo build --release --features cuda -p rlvr
#
# CUDA_COMPUTE_CAP (default 90: Hopper) picks the GPU generation the kernels are built for.
# With a real CUDA toolkit installed none of this is needed: `cargo build --release --features cuda`.
set -euo pipefail
PREFIX="${1:-/opt/cuda13}"
CAP="${CUDA_COMPUTE_CAP:-90}"
WHEELS="$(mktemp -d)"
trap 'rm -rf "$WHEELS"' EXIT

python3 -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_12_x86_64 \
  --python-version 3.12 \
  "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*" \
  "nvidia-nvvm==13.0.*" "nvidia-cuda-cccl==13.0.*"
mkdir -p "$PREFIX"
for w in "$WHEELS"/*.whl; do python3 -m zipfile -e "$w" "$WHEELS/x"; done
cp -r "$WHEELS"/x/nvidia/cu13/* "$PREFIX"/
chmod +x "$PREFIX"/bin/* "$PREFIX"/nvvm/bin/* 2>/dev/null || true
"$PREFIX/bin/nvcc" --version | tail -1

# Stubs: every function cudarc declares, as an empty symbol, under the real library's soname.
CUDARC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | sort -V | tail -1)"
if [ -z "$CUDARC" ]; then
  echo "cudarc sources not found: run \`cargo fetch\` in the repository first" >&2
  exit 1
fi
stub() { # sys-module  library  soname
  grep -ohE '\bfn (cu|nvrtc|cublas|curand)[A-Za-z0-9_]*' "$CUDARC/src/$1/sys/mod.rs" | sed 's/^fn //' |
    sort -u | awk '{print "void " $1 "(void) {}"}' > "$WHEELS/$2.c"
  cc -shared -fPIC -w -Wl,-soname,"$3" -o "$PREFIX/lib/lib$2.so" "$WHEELS/$2.c"
}
stub driver cuda libcuda.so.1
stub cublas cublas libcublas.so.13
stub cublaslt cublasLt libcublasLt.so.13
stub curand curand libcurand.so.10
stub nvrtc nvrtc libnvrtc.so.13
ln -sf libcudart.so.13 "$PREFIX/lib/libcudart.so"

cat > "$PREFIX/env.sh" <<ENV
export CUDA_HOME="$PREFIX" PATH="$PREFIX/bin:\$PATH" CUDA_COMPUTE_CAP="$CAP"
ENV
echo "toolkit in $PREFIX; next: . $PREFIX/env.sh && cargo build --release --features cuda -p rlvr"
