#!/usr/bin/env bash
# Benchmark-only dependency: llama-cpp-python (llama.cpp) for benchmarks/llamacpp_peer.py.
# Not part of CI or scripts/setup.sh. Builds llama.cpp from source (10+ minutes on 2 cores).
#
# The default build (GGML_NATIVE=ON) enables AMX on CPUs that have it, and llama.cpp's AMX
# matmul segfaults on SmolLM2-135M here; so build for a fixed AVX-512 (+VNNI/BF16) target
# with AMX off. GGML_AVX_VNNI is left off on purpose: with -mavxvnni GCC emits the VEX
# (AVX-VNNI) encoding of vpdpbusd even when AVX512-VNNI is available, and CPUs with
# AVX512-VNNI but no AVX-VNNI (e.g. AMD Zen 4, this machine) then die with SIGILL.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  .venv/bin/pip install --no-cache-dir "llama-cpp-python==${VERSION}"
