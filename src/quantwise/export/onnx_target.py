"""ONNX (QDQ) run in ONNX Runtime.

PT2E models go through the torch.export-based exporter, which writes a clean QDQ graph.
Legacy FX modules (static fx, QAT, 4-bit) hold packed parameters torch.export cannot
see, so they go through TorchScript and the deprecated ``dynamo=False`` exporter, the
only one that knows the quantized ops. torchao dynamic int8 models (the ``dynamic``
recipe) are translated to integer ONNX ops by ``onnx_dynamic``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from quantwise import legacy
from quantwise.data.base import Inputs, TensorSet
from quantwise.export import onnx_dynamic, onnx_qdq, portable
from quantwise.export.base import ExportTarget, Runner, input_names, register
from quantwise.methods.base import dynamic_batch_shapes


def _is_pt2e(module: nn.Module) -> bool:
    return isinstance(module, torch.fx.GraphModule) and not any(
        type(m).__module__.startswith("torch.ao.nn.quantized") for m in module.modules()
    )


def _is_torchao(module: nn.Module) -> bool:
    return any(type(t).__module__.startswith("torchao") for t in module.parameters()) or legacy.has_recurrent_quantized(module)


def make_portable(path: Path) -> list[str]:
    """Rewrite the file's int8 weights that meet uint8 activations so that no CPU saturates them."""
    import onnx

    model = onnx.load(str(path))
    rewritten = portable.make_portable(model)
    if not rewritten:
        return []
    onnx.save(model, str(path))
    return [f"{rewritten} int8 weight(s) stored as uint8 + 128 (same values) so that ONNX Runtime's integer kernels compute the same "
            "on every CPU (its u8 x s8 kernel saturates without VNNI)"]


def write(module: nn.Module, example: Inputs, path: Path, dynamic_batch: bool, calibration: TensorSet | None = None) -> list[str]:
    if _is_torchao(module):
        return onnx_dynamic.write(module, example, path, dynamic_batch)
    names = input_names(example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if _is_pt2e(module):
            program = torch.onnx.export(
                module, example, dynamo=True, input_names=names, verbose=False,
                dynamic_shapes=dynamic_batch_shapes(example) if dynamic_batch else None,
            )
            program.save(str(path), external_data=False)
            fixed_batch = None if dynamic_batch else len(example[0])
            return ["torch.export-based ONNX exporter (QDQ graph)", *onnx_qdq.optimize(path, calibration, names, fixed_batch)]
        traced = torch.jit.trace(module, example, check_trace=False)
        axes = {n: {0: "batch"} for n in names} if dynamic_batch else None
        torch.onnx.export(traced, example, str(path), dynamo=False, input_names=names, output_names=["output"], dynamic_axes=axes)
    return ["TorchScript-based ONNX exporter (deprecated upstream; the only one that exports eager quantized modules)"]


def open_session(path: Path, threads: int):  # noqa: ANN201 (onnxruntime.InferenceSession, imported lazily)
    """An ONNX Runtime CPU session on ``threads`` intra-op threads (one inter-op)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load(path: Path, threads: int) -> Runner:
    session = open_session(path, threads)
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0])

    return run


TARGET = register(ExportTarget(
    name="onnx",
    suffix=".onnx",
    description="ONNX (QDQ, or integer MatMul for dynamic int8), run in ONNX Runtime (CPU)",
    families=("pt2e", "pt2e-xnnpack", "fx", "dynamic"),
    write=write,
    load=load,
    make_portable=make_portable,
    requires="onnxruntime",
    install="pip install onnxruntime",
    refusals=(
        ("pt2e-xnnpack-dynamic", "the ONNX exporter has no translation for PT2E's run-time choose_qparams (use the dynamic recipe for ONNX; dynamic-xnnpack is for --to executorch)"),
    ),
))
