"""How a model is run when it is timed: eager, torch.compile (Inductor, frozen weights) or bf16 autocast."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def eager(model: nn.Module) -> Callable[..., torch.Tensor]:
    return model


def compiled(model: nn.Module) -> Callable[..., torch.Tensor]:
    """torch.compile with weight freezing, which torchao int8 and PT2E need to reach their int8 kernels."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(model, dynamic=False)


def bf16_autocast(model: nn.Module) -> Callable[..., torch.Tensor]:
    """bf16 autocast: on CPUs with AMX a strong non-quantized baseline."""

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(*inputs).float()

    return run


RUNTIMES: dict[str, Callable[[nn.Module], Callable[..., torch.Tensor]]] = {
    "eager": eager,
    "compiled": compiled,
    "bf16": bf16_autocast,
}
