"""Versions and machine facts recorded in artifacts and reports."""
from __future__ import annotations

import importlib.metadata
import platform

import torch


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("torchao", "onnx", "onnxruntime", "quantwise"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# restoring an artifact rebuilds these libraries' quantized tensors and modules from stored codes,
# partly through private and prototype APIs: a file is read back only by the versions that wrote it
RESTORE_CRITICAL = ("torch", "torchao")


def check_restorable(recorded: dict[str, str], what: str) -> None:
    """Refuse ``what`` (an artifact) written by other torch / torchao versions than these, with the fix."""
    now = versions()
    differ = [(k, recorded[k], now.get(k, "not installed")) for k in RESTORE_CRITICAL if k in recorded and recorded[k] != now.get(k)]
    if differ:
        from quantwise.errors import QuantwiseError

        said = ", ".join(f"{k} {old} (this is {new})" for k, old, new in differ)
        pins = " ".join(f"{k}=={old}" for k, old, _ in differ)
        raise QuantwiseError(f"{what} was written with {said}; restoring it relies on their internal tensor layouts",
                             f"re-create it with 'quantwise quantize' here, or install the versions that wrote it (pip install {pins})")


NO_NATIVE_BF16 = ("not timed: this CPU has no native bfloat16 (AVX-512 BF16 or AMX on x86), so torch emulates it and bf16 runs "
                  "many times slower than float32; float32 is the baseline here")


def has_vnni() -> bool:
    """Whether ONNX Runtime multiplies uint8 x int8 here without saturating pairs of products:
    x86 with AVX-512 VNNI, AVX-VNNI or AMX, or ARM (dot products or widening multiplies)."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 / AMX on x86, BF16 on ARM). Without
    it, torch emulates bf16 and a bf16 model is many times slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def machine() -> dict[str, str]:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    flags = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os

    return {
        "cpu": flags or platform.processor(),
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "quantized_engines": ",".join(torch.backends.quantized.supported_engines),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": str(native_bf16()),
        "platform": platform.platform(),
    }
