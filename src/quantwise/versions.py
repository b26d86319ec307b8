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
        "platform": platform.platform(),
    }
