"""What the debugger needs from a quantized model, whatever produced it, and the backend
that provides it: module hooks for eager-module models (FX static/QAT, dynamic), graph
nodes for PT2E graphs (which have no modules left)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from quantwise.data.base import Inputs
from quantwise.debug.float_side import Call
from quantwise.debug.stats import QuantRange


@dataclass
class QuantLayer:
    """One quantized layer, named by the float layer call it replaces.

    ``folds_batch_norm``: the quantized weights include the BatchNorm that follows the
    float layer; ``activation``: the activation the quantized layer applies itself (a
    fused ReLU), as a function, or None. Both decide which float output it is compared with.
    """

    call: Call
    kind: str
    module_type: str
    folds_batch_norm: bool = False
    activation: Callable[[torch.Tensor], torch.Tensor] | None = None
    activation_name: str = ""
    handle: Any = None


@dataclass
class LayerWeights:
    """Dequantized weights (same names and shapes as the float module's parameters) and,
    per output channel (rows), the representable range [lo, hi]."""

    dequantized: dict[str, torch.Tensor]
    channel_ranges: torch.Tensor


@dataclass
class QuantizedRun:
    """One forward of the quantized model: its output, each layer's (dequantized) output
    and the grids its input and output were quantized to (None where they stay float)."""

    output: torch.Tensor
    layer_outputs: dict[Call, torch.Tensor] = field(default_factory=dict)
    input_grids: dict[Call, QuantRange | None] = field(default_factory=dict)
    output_grids: dict[Call, QuantRange | None] = field(default_factory=dict)


class Backend(Protocol):
    layers: list[QuantLayer]

    def run(self, inputs: Inputs) -> QuantizedRun: ...

    def isolated(self, layer: QuantLayer, float_args: tuple[Any, ...], inputs: Inputs, grid: QuantRange | None) -> torch.Tensor: ...

    def weights(self, layer: QuantLayer) -> LayerWeights | None: ...

    def close(self) -> None: ...


def symmetric_ranges(weight: torch.Tensor) -> torch.Tensor:
    """[-max|w|, max|w|] per output row: the range of a symmetric min/max grid."""
    peak = weight.detach().float().flatten(1).abs().amax(1)
    return torch.stack([-peak, peak], 1)


def grid_ranges(scales: torch.Tensor, zero_points: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    scales, zero_points = scales.double().flatten(), zero_points.double().flatten()
    return torch.stack([scales * (qmin - zero_points), scales * (qmax - zero_points)], 1).float()
