"""A torch.export program (``.pt2``): reloads with ``torch.export.load`` in a fresh process,
without quantwise or the model's Python code (torchao must be importable for its ops)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from quantwise.data.base import Inputs, TensorSet
from quantwise.export.base import ExportTarget, Runner, register
from quantwise.methods.base import dynamic_batch_shapes


def write(module: nn.Module, example: Inputs, path: Path, dynamic_batch: bool, calibration: TensorSet | None = None) -> list[str]:
    program = torch.export.export(module, example, dynamic_shapes=dynamic_batch_shapes(example) if dynamic_batch else None)
    torch.export.save(program, str(path))
    return ["torch.export program; load with torch.export.load(path).module() (import torchao first for its quantized ops)"]


def load(path: Path, threads: int) -> Runner:
    import torchao  # noqa: F401  (registers the torchao ops a program may call)

    return torch.export.load(str(path)).module()


TARGET = register(ExportTarget(
    name="pt2",
    suffix=".pt2",
    description="torch.export program (torch.export.save), runs without the model's code",
    families=("pt2e", "pt2e-xnnpack", "pt2e-xnnpack-dynamic", "dynamic"),
    write=write,
    load=load,
    refusals=(
        ("fx", "legacy FX quantized modules keep packed parameters that torch.export cannot trace (use static-pt2e, or --to torchscript / onnx for this recipe)"),
    ),
))
