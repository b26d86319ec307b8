"""TorchScript lite-interpreter file (``.ptl``) for legacy mobile runtimes.

TorchScript is deprecated upstream; ExecuTorch is its successor. ``optimize_for_mobile``
needs XNNPACK: it is applied when this torch build has it, and otherwise the note says
plainly that the file is unoptimised.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from quantwise.data.base import Inputs, TensorSet
from quantwise.export.base import ExportTarget, Runner, register

DEPRECATED = "TorchScript is deprecated upstream (ExecuTorch replaces it on mobile)"


def write(module: nn.Module, example: Inputs, path: Path, dynamic_batch: bool, calibration: TensorSet | None = None) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # not frozen: freezing folds the dequantization of int8 weights into float constants.
        # Traced at batch 1, as mobile runs it: a trace bakes exported graphs' reshapes to the example's batch.
        scripted = torch.jit.trace(module, tuple(t[:1] for t in example), check_trace=False)
    notes = [DEPRECATED, "traced for batch 1: call it once per sample"]
    if torch._C._is_xnnpack_enabled():
        from torch.utils.mobile_optimizer import optimize_for_mobile

        scripted = optimize_for_mobile(scripted)
        notes.append("optimized for mobile (XNNPACK)")
    else:
        notes.append("NOT optimized for mobile: this torch build has no XNNPACK, so optimize_for_mobile cannot run; the file is correct but unoptimised")
    scripted._save_for_lite_interpreter(str(path))
    return notes


def load(path: Path, threads: int) -> Runner:
    from torch.jit.mobile import _load_for_lite_interpreter

    module = _load_for_lite_interpreter(str(path))

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([module(*(t[i : i + 1] for t in inputs)) for i in range(inputs[0].shape[0])])

    return run


TARGET = register(ExportTarget(
    name="torchscript",
    suffix=".ptl",
    description="TorchScript lite interpreter (legacy mobile; deprecated upstream)",
    families=("fx", "pt2e", "pt2e-xnnpack", "pt2e-xnnpack-dynamic"),
    write=write,
    load=load,
    refusals=(
        ("dynamic", "torchao's int8 tensor subclasses cannot be traced by TorchScript (use --to pt2, or static-fx for TorchScript)"),
    ),
))
