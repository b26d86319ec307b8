"""What ``quantwise debug`` measures, as dataclasses (the report layer prints them)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from quantwise.debug.ablation import NoiseSources
from quantwise.debug.stats import ActivationStats, ErrorStats, WeightStats


@dataclass
class LayerDebug:
    """One quantized layer, named after the float module it replaces.

    ``fused``: the float modules it stands for (e.g. conv, bn, act), the last of which
    gives the float output it is compared with. ``isolated``: the quantized layer fed the
    float model's input to that layer (its own error only); ``propagated``: the quantized
    model's own activations (the error accumulated up to and including this layer).
    ``inputs``: the float input against the layer's input grid; ``outputs``: the float
    reference output against the grid the quantized layer writes its output on (None when
    its output stays float, e.g. dynamic quantization or a conv feeding a fused add).
    ``sources``: the layer's own error split by quantization step (debug/ablation.py).
    ``nearest``: where the recipe's algorithm chose the codes (language-model GPTQ, SignRound,
    HQQ), the layer's isolated error had its float weight been rounded to nearest on a
    min/max grid of the same bits and groups instead: what the algorithm gained (or lost).
    """

    index: int
    name: str
    kind: str
    quantized_as: str
    fused: list[str]
    isolated: ErrorStats | None
    propagated: ErrorStats
    weights: WeightStats | None
    inputs: ActivationStats | None
    outputs: ActivationStats | None = None
    sources: NoiseSources | None = None
    nearest: ErrorStats | None = None


@dataclass
class HistogramData:
    """Raw values of one layer for histograms, with the quantization range of each.

    ``weights``: float weights as quantized (BatchNorm folded where the layer folds it),
    flattened and subsampled; ``weight_range``: the widest per-channel range and
    ``weight_channel_ranges`` each output channel's [lo, hi]. ``activations``: the
    layer's float input values (subsampled across the evaluated samples);
    ``activation_range``: the quantized input range, None for dynamic quantization.
    """

    layer: str
    weights: torch.Tensor | None
    weight_range: tuple[float, float] | None
    weight_channel_ranges: torch.Tensor | None
    activations: torch.Tensor | None
    activation_range: tuple[float, float] | None


@dataclass
class Diagnosis:
    worst_layer: str | None
    worst_isolated_sqnr_db: float | None
    accumulates_at: str | None
    accumulation_drop_db: float | None
    cause: str  # "clipping", "input rounding", "weight rounding" or "" when unknown
    summary: str
    hints: list[str] = field(default_factory=list)


@dataclass
class DebugReport:
    model: str
    recipe: str
    task: str
    samples: int
    data: str
    output: dict[str, float]
    layers: list[LayerDebug]
    diagnosis: Diagnosis
    histogram: HistogramData | None
    notes: list[str] = field(default_factory=list)

    def layer(self, name: str) -> LayerDebug:
        for layer in self.layers:
            if layer.name == name or name in layer.fused:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: tensors become lists, infinities stay floats (JSON Infinity)."""
        return _plain(asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
