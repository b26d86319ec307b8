"""Quantized layers that are still modules at the float model's names: the FX/QAT path's
quantized modules (conv-bn-relu fused into one module named after the conv), torchao
Linear/Embedding (same module, quantized weight tensor) and legacy dynamic LSTM/GRU
(swapped module). Forward hooks capture their inputs and outputs."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import nn

from quantwise.data.base import Inputs
from quantwise.debug.capture import LayerWeights, QuantizedRun, QuantLayer, grid_ranges, symmetric_ranges
from quantwise.debug.float_side import Chain, first_tensor
from quantwise.debug.stats import QuantRange

_DTYPE_LIMITS = {torch.quint8: (0, 255), torch.qint8: (-128, 127), torch.qint32: (-(2**31), 2**31 - 1)}


def _plain(t: torch.Tensor) -> bool:
    return type(t) in (torch.Tensor, nn.Parameter)


def _is_quantized(float_module: nn.Module, module: nn.Module) -> bool:
    """Swapped for another class (FX, legacy dynamic) or given a quantized weight tensor (torchao)."""
    if type(module) is not type(float_module):
        return True
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and not _plain(weight)


def _dequantize(value: Any) -> torch.Tensor:
    t = first_tensor(value)
    return t.dequantize() if t.is_quantized else t


def grid_of(t: torch.Tensor) -> QuantRange | None:
    if not isinstance(t, torch.Tensor) or not t.is_quantized or t.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return None
    qmin, qmax = _DTYPE_LIMITS[t.dtype]
    return QuantRange(float(t.q_scale()), int(t.q_zero_point()), qmin, qmax, t.dtype)


class ModuleBackend:
    def __init__(self, model: nn.Module, float_model: nn.Module, chains: list[Chain], weight_bits: int) -> None:
        self.model = model
        self.qmin, self.qmax = (-8, 7) if weight_bits == 4 else (-128, 127)
        modules = dict(model.named_modules())
        floats = dict(float_model.named_modules())
        self.layers: list[QuantLayer] = []
        for chain in chains:
            name = chain.layer[0]
            module = modules.get(name)
            if module is None or not _is_quantized(floats[name], module):
                continue
            swapped = type(module) is not type(floats[name])
            fused_relu = "ReLU" in type(module).__name__
            self.layers.append(QuantLayer(
                chain.layer, chain.kind, f"{type(module).__module__}.{type(module).__name__}",
                folds_batch_norm=swapped and chain.kind in ("conv", "linear"),
                activation=torch.relu if fused_relu else None,
                activation_name="relu" if fused_relu else "",
                handle=module,
            ))
        self._wanted = {layer.call for layer in self.layers}
        self._current = QuantizedRun(torch.empty(0))
        self._counts: dict[str, int] = defaultdict(int)
        self._handles = []
        for name in {c[0] for c in self._wanted}:
            module = modules[name]
            self._handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _pre_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            call = (name, self._counts[name])
            if call in self._wanted and args:
                self._current.input_grids[call] = grid_of(args[0])

        return hook

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            call = (name, self._counts[name])
            self._counts[name] += 1
            if call in self._wanted:
                self._current.layer_outputs[call] = _dequantize(output).detach()
                self._current.output_grids[call] = grid_of(first_tensor(output))

        return hook

    def run(self, inputs: Inputs) -> QuantizedRun:
        self._current = QuantizedRun(torch.empty(0))
        self._counts.clear()
        with torch.no_grad():
            self._current.output = _dequantize(self.model(*inputs)).float()
        return self._current

    def isolated(self, layer: QuantLayer, float_args: tuple[Any, ...], inputs: Inputs, grid: QuantRange | None) -> torch.Tensor:
        args = list(float_args)
        dtype = getattr(getattr(layer.handle, "weight", None), "dtype", None)
        if isinstance(dtype, torch.dtype) and dtype.is_floating_point and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            args[0] = args[0].to(dtype)  # e.g. int4 language-model layers run in bfloat16
        if grid is not None:  # the quantized module takes a quantized tensor: quantize exactly as its real input was
            args[0] = torch.quantize_per_tensor(args[0], grid.scale, grid.zero_point, grid.dtype)
        with torch.no_grad():
            return _dequantize(layer.handle.forward(*args))  # forward(), not __call__: no hooks

    def weights(self, layer: QuantLayer) -> LayerWeights | None:
        module = layer.handle
        if layer.kind in ("lstm", "gru") and hasattr(module, "_weight_bias"):
            weights = {k: v for k, v in module._weight_bias()["weight"].items()}
            deq = {k: (v.dequantize() if v.is_quantized else v.float()) for k, v in weights.items()}
            ranges = torch.cat([self._ranges(weights[k], deq[k]) for k in weights])
            return LayerWeights(deq, ranges)
        weight = module.weight() if callable(getattr(module, "weight", None)) else getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            return None
        if weight.is_quantized:
            return LayerWeights({"weight": weight.dequantize()}, self._ranges(weight, weight.dequantize()))
        if not _plain(weight) and hasattr(weight, "dequantize"):  # torchao tensor subclass
            deq = weight.dequantize().float()
            return LayerWeights({"weight": deq}, symmetric_ranges(deq))
        return None

    def _ranges(self, weight: torch.Tensor, deq: torch.Tensor) -> torch.Tensor:
        if not weight.is_quantized:
            return symmetric_ranges(deq)
        if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            return grid_ranges(weight.q_per_channel_scales(), weight.q_per_channel_zero_points(), self.qmin, self.qmax)
        rows = weight.shape[0]
        return grid_ranges(torch.full((rows,), weight.q_scale()), torch.full((rows,), weight.q_zero_point()), self.qmin, self.qmax)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
