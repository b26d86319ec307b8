#!/usr/bin/env bash
# Benchmark-only: llama.cpp's own tools (llama-quantize, llama-imatrix, llama-perplexity, llama-bench)
# built from the llama.cpp source that llama-cpp-python 0.3.36 vendors (the same llama.cpp that
# 'export --to gguf' checks with), into ~/.cache/quantwise/llama.cpp/bin. About 12 minutes on 2 cores.
# Native build for this CPU (AMX off); the files llama.cpp writes and reads are the same on every CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
DEST="${LLAMA_CPP_BIN:-$HOME/.cache/quantwise/llama.cpp/bin}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
.venv/bin/pip download -q --no-deps --no-binary :all: "llama-cpp-python==${VERSION}" -d "$WORK"
tar xzf "$WORK"/llama_cpp_python-*.tar.gz -C "$WORK"
SRC="$(echo "$WORK"/llama_cpp_python-*/vendor/llama.cpp)"
NOAMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"  # as scripts/setup.sh: llama.cpp's AMX kernels crashed on SmolLM2 here
cmake -S "$SRC" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF "-DCMAKE_C_FLAGS=$NOAMX" "-DCMAKE_CXX_FLAGS=$NOAMX" >/dev/null
ninja -C "$WORK/build" -j"$(nproc)" llama-quantize llama-imatrix llama-perplexity llama-bench
mkdir -p "$DEST"
cp -a "$WORK/build/bin/." "$DEST/"
echo "llama.cpp tools in $DEST"
