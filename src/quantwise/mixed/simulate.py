"""Cheap models with any chosen subset of layers quantized, for per-layer sensitivity.

Converting the whole model once per layer subset is slow for static recipes (a PT2E
export and calibration each time), so two stand-ins are used:

- ``SwapModel`` (dynamic recipes): quantize the model once with the real method and
  move each quantized layer into a float copy on demand. Dynamic quantization treats
  layers independently, so any subset is *exactly* the model ``keep_float`` gives.
- ``FakeQuantModel`` (static recipes): the float model with each chosen layer's weight
  fake-quantized (symmetric, per channel or per tensor) and its input fake-quantized
  with a range from the recipe's observer, calibrated once on float activations. It
  ignores fusion, residual adds and matmuls, so it is a proxy: good to rank layers,
  not to report a final metric. BatchNorm folding does not change per-channel weight
  codes (folding scales each output channel), so per-channel weights are simulated
  exactly.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from quantwise.config import DynamicInt8, Recipe, StaticInt8
from quantwise.data.base import TensorSet
from quantwise.errors import QuantwiseError
from quantwise.progress import ProgressFn, no_progress
from quantwise.methods.layers import quantizable_layers


class SwapModel:
    """A float copy whose layers are swapped for the really quantized ones on request."""

    exact = True

    def __init__(self, model: nn.Module, quantized: nn.Module, layers: list[str]) -> None:
        self.layers = layers
        self.module = copy.deepcopy(model).eval()
        self._float = {n: self.module.get_submodule(n) for n in layers}
        self._quantized = {n: quantized.get_submodule(n) for n in layers}

    def set_quantized(self, names: Iterable[str]) -> nn.Module:
        chosen = set(names)
        for n in self.layers:
            self.module.set_submodule(n, self._quantized[n] if n in chosen else self._float[n])
        return self.module


def _activation_observer(recipe: StaticInt8) -> nn.Module:
    from quantwise.methods.static_pt2e import activation_observer

    cls, kwargs = activation_observer(recipe.observer, recipe.percentile)
    # the fx path on x86 keeps 7-bit activations (legacy.qconfig); pt2e uses 8 bits
    qmax = 127 if recipe.path == "fx" and recipe.backend == "x86" else 255
    return cls(dtype=torch.uint8, quant_min=0, quant_max=qmax, qscheme=torch.per_tensor_affine, eps=2**-12, **kwargs)


def fake_quant_weight(weight: torch.Tensor, granularity: str, bits: int) -> torch.Tensor:
    """Symmetric fake quantization, scale = max|w| / ((qmax - qmin) / 2) as the observers compute it."""
    qmin, qmax = (-8, 7) if bits == 4 else (-128, 127)
    if granularity == "per-channel":
        amax = weight.detach().abs().flatten(1).amax(1)
        scale = (amax / ((qmax - qmin) / 2)).clamp_min(torch.finfo(torch.float32).eps)
        return torch.fake_quantize_per_channel_affine(weight, scale, torch.zeros_like(scale, dtype=torch.int32), 0, qmin, qmax)
    scale = float(max(weight.detach().abs().max() / ((qmax - qmin) / 2), torch.finfo(torch.float32).eps))
    return torch.fake_quantize_per_tensor_affine(weight, scale, 0, qmin, qmax)


class FakeQuantModel:
    """The float model with fake-quantized weights and inputs on a chosen set of layers."""

    exact = False

    def __init__(self, model: nn.Module, recipe: StaticInt8, calibration: TensorSet, batch_size: int = 32, progress: ProgressFn = no_progress) -> None:
        self.module = copy.deepcopy(model).eval()
        self.layers = quantizable_layers(self.module, recipe)
        self._enabled: set[str] = set()
        self._calibrating = True
        self._observers = {n: _activation_observer(recipe) for n in self.layers}
        self._qparams: dict[str, tuple[float, int, int, int]] = {}
        self._weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in self.layers:
            layer = self.module.get_submodule(name)
            w = layer.weight.data
            self._weights[name] = (w, fake_quant_weight(w, recipe.granularity, recipe.weight_bits))
            layer.register_forward_pre_hook(self._hook(name))
        batches = list(calibration.batches(batch_size))[: recipe.calibration_batches]
        with torch.no_grad():
            for inputs, _ in progress("proxy: calibrating", batches, len(batches)):
                self.module(*inputs)
        for name, obs in self._observers.items():
            scale, zp = obs.calculate_qparams()
            self._qparams[name] = (float(scale), int(zp), obs.quant_min, obs.quant_max)
        self._calibrating = False

    def _hook(self, name: str) -> Any:
        def pre(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                return None
            if self._calibrating:
                self._observers[name](x.detach())
                return None
            if name not in self._enabled:
                return None
            scale, zp, qmin, qmax = self._qparams[name]
            return (torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax), *args[1:])

        return pre

    def set_quantized(self, names: Iterable[str]) -> nn.Module:
        self._enabled = set(names)
        for name, (w, wq) in self._weights.items():
            self.module.get_submodule(name).weight.data = wq if name in self._enabled else w
        return self.module


def simulator(model: nn.Module, recipe: Recipe, calibration: TensorSet, batch_size: int = 32, progress: ProgressFn = no_progress) -> SwapModel | FakeQuantModel:
    """The stand-in for ``recipe``: exact swaps for dynamic, fake quantization for static."""
    if isinstance(recipe, DynamicInt8):
        from quantwise.methods import QuantData, method_for

        quantized = method_for(recipe).quantize(model, recipe, QuantData(calibration, batch_size=batch_size, progress=progress)).module
        return SwapModel(model, quantized, quantizable_layers(model, recipe))
    if isinstance(recipe, StaticInt8):
        return FakeQuantModel(model, recipe, calibration, batch_size, progress)
    raise QuantwiseError(
        f"sensitivity analysis covers static and dynamic recipes, not {recipe.kind}",
        "analyse the static recipe with the same settings (QAT would need one fine-tuning per layer)",
    )
