"""ONNX (QDQ) run in ONNX Runtime.

PT2E models go through the torch.export-based exporter, which writes a clean QDQ graph.
Legacy FX modules (static fx, QAT, 4-bit) hold packed parameters torch.export cannot
see, so they go through TorchScript and the deprecated ``dynamo=False`` exporter, the
only one that knows the quantized ops.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from quantwise.data.base import Inputs
from quantwise.export.base import ExportTarget, Runner, input_names, register
from quantwise.methods.base import dynamic_batch_shapes


def _is_pt2e(module: nn.Module) -> bool:
    return isinstance(module, torch.fx.GraphModule) and not any(
        type(m).__module__.startswith("torch.ao.nn.quantized") for m in module.modules()
    )


def write(module: nn.Module, example: Inputs, path: Path, dynamic_batch: bool) -> list[str]:
    names = input_names(example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if _is_pt2e(module):
            program = torch.onnx.export(
                module, example, dynamo=True, input_names=names, verbose=False,
                dynamic_shapes=dynamic_batch_shapes(example) if dynamic_batch else None,
            )
            program.save(str(path), external_data=False)
            return ["torch.export-based ONNX exporter (QDQ graph)"]
        traced = torch.jit.trace(module, example, check_trace=False)
        axes = {n: {0: "batch"} for n in names} if dynamic_batch else None
        torch.onnx.export(traced, example, str(path), dynamo=False, input_names=names, output_names=["output"], dynamic_axes=axes)
    return ["TorchScript-based ONNX exporter (deprecated upstream; the only one that exports eager quantized modules)"]


def load(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0])

    return run


TARGET = register(ExportTarget(
    name="onnx",
    suffix=".onnx",
    description="ONNX with QuantizeLinear/DequantizeLinear, run in ONNX Runtime (CPU)",
    families=("pt2e", "pt2e-xnnpack", "fx"),
    write=write,
    load=load,
    requires="onnxruntime",
    install="pip install onnxruntime",
    refusals=(
        ("dynamic", "torchao's dynamic int8 ops have no ONNX translation (use static-pt2e for ONNX, or --to pt2 for this recipe)"),
    ),
))
