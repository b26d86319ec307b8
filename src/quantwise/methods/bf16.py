"""bf16 autocast as a recipe: the float model wrapped so that it always runs under CPU autocast."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from quantwise.built import Built
from quantwise.config import BF16
from quantwise.data.base import Inputs
from quantwise.methods.base import ClassicMethod, QuantData, Quantized, load_state, register


class Bf16Autocast(nn.Module):
    """Runs ``model`` under ``torch.autocast("cpu", bfloat16)`` and returns float32 outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(*inputs).float()


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    # tied weights share storage, which safetensors refuses: store each name on its own
    return {k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


@register(BF16)
class Bf16(ClassicMethod):
    def quantize(self, model: nn.Module, recipe: BF16, data: QuantData) -> Quantized:
        wrapped = Bf16Autocast(copy.deepcopy(model).eval())
        return Quantized(wrapped, recipe, _tensors(wrapped.model), {}, Built("bf16"),
                         notes=["bf16 autocast: float32 weights, conv/linear/matmul in bfloat16 (fast on CPUs with AMX)"])

    def restore(self, arch: nn.Module, recipe: BF16, example: Inputs, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Quantized:
        load_state(arch, tensors)
        wrapped = Bf16Autocast(arch.eval())
        return Quantized(wrapped, recipe, tensors, meta, Built("bf16"), notes=["bf16 autocast"])
