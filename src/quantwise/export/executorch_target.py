"""ExecuTorch ``.pte`` with the XNNPACK backend (executorch from PyPI), run with its Python runtime."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from quantwise.data.base import Inputs
from quantwise.export.base import ExportTarget, Runner, register
from quantwise.methods.base import dynamic_batch_shapes


def write(module: nn.Module, example: Inputs, path: Path, dynamic_batch: bool) -> list[str]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(module, example, dynamic_shapes=dynamic_batch_shapes(example) if dynamic_batch else None)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    delegated = sum(1 for n in edge.exported_program().graph.nodes if n.op == "call_function" and "executorch_call_delegate" in str(n.target))
    path.write_bytes(edge.to_executorch().buffer)
    return [f"ExecuTorch program, {delegated} XNNPACK-delegated subgraph(s); run with executorch.runtime"]


def load(path: Path, threads: int) -> Runner:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        return method.execute(list(inputs))[0]

    return run


TARGET = register(ExportTarget(
    name="executorch",
    suffix=".pte",
    description="ExecuTorch program with the XNNPACK backend (mobile), run with executorch.runtime",
    families=("pt2e",),
    write=write,
    load=load,
    requires="executorch",
    install="pip install executorch==1.5.1 (about 1.5 GB)",
    refusals=(
        ("fx", "legacy FX quantized modules cannot be torch.exported (use static-pt2e)"),
        ("dynamic", "torchao's dynamic int8 tensors do not lower to XNNPACK here (use static-pt2e)"),
    ),
))
