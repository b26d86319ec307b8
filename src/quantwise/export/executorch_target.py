"""ExecuTorch ``.pte`` with the XNNPACK backend (executorch from PyPI), run with its Python runtime."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from quantwise.data.base import Inputs, TensorSet
from quantwise.errors import QuantwiseError
from quantwise.export.base import ExportTarget, Runner, register


RECURRENT_OPS = ("aten.lstm", "aten.gru")


def write(module: nn.Module, example: Inputs, path: Path, dynamic_batch: bool, calibration: TensorSet | None = None) -> list[str]:
    graph = getattr(module, "graph", None)
    recurrent = sorted({str(n.target) for n in graph.nodes if str(n.target).startswith(RECURRENT_OPS)}) if graph is not None else []
    if recurrent:
        # measured on resemblyzer-lstm (3 layers, 160 steps): stopped after 8 and 15 minutes, 7.9 GB, unfinished
        raise QuantwiseError(f"cannot export this model to executorch: ExecuTorch unrolls its recurrent layer ({', '.join(recurrent)}) over every "
                             "time step, and that lowering did not finish in 15 minutes here", "export it with --to onnx or --to pt2")
    import executorch.kernels.quantized  # noqa: F401  (the quantize/dequantize ops outside delegated parts)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    # one sample per call, as on a phone: ExecuTorch plans memory for the largest shape it may see
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, tuple(t[:1] for t in example))
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    delegated = sum(1 for n in edge.exported_program().graph.nodes if n.op == "call_function" and "executorch_call_delegate" in str(n.target))
    path.write_bytes(edge.to_executorch().buffer)
    return [f"ExecuTorch program for batch 1, {delegated} XNNPACK-delegated subgraph(s); run with executorch.runtime"]


def load(path: Path, threads: int) -> Runner:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([method.execute([t[i : i + 1] for t in inputs])[0] for i in range(inputs[0].shape[0])])

    return run


TARGET = register(ExportTarget(
    name="executorch",
    suffix=".pte",
    description="ExecuTorch program with the XNNPACK backend (mobile), run with executorch.runtime",
    families=("pt2e-xnnpack", "pt2e-xnnpack-dynamic"),
    write=write,
    load=load,
    requires="executorch",
    install="pip install executorch==1.5.1 (about 1.5 GB)",
    refusals=(
        ("pt2e", "the x86 quantizer's graph (uint8 activations) does not run correctly on XNNPACK; quantize with static:path=pt2e,backend=xnnpack"),
        ("fx", "legacy FX quantized modules cannot be torch.exported (use static-pt2e)"),
        ("dynamic", "torchao's dynamic int8 tensors do not lower to XNNPACK here (use dynamic-xnnpack, or static-xnnpack for convolutional models)"),
    ),
))
