"""SmoothQuant before static int8 (pt2e path): per-channel outliers of a Linear's input moved into
its weight, so that the one per-tensor range a static recipe gives that input fits its values.

Each smoothed Linear holds ``W * s`` and multiplies its input by ``1 / s`` first
(``s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)``, ``max|x_j|`` over the calibration data; see
:func:`quantwise.algorithms.smoothquant.smooth_scales`). This is exact in float. The multiply stays in
the graph as one float op before the quantized input; the weight is quantized per channel as before.
An artifact stores ``inv_scale`` with the rest of the prepared state; restoring rebuilds the same
structure (``smoothed_structure``) before the state is loaded.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from quantwise.algorithms.smoothquant import smooth_scales
from quantwise.methods.base import QuantData


class SmoothedLinear(nn.Linear):
    """A Linear whose input is divided per channel (``inv_scale``) and whose weight is scaled to match."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x * self.inv_scale, self.weight, self.bias)


def _replace(model: nn.Module, name: str, old: nn.Linear) -> SmoothedLinear:
    new = SmoothedLinear(old.in_features, old.out_features, old.bias is not None)
    with torch.no_grad():
        new.weight.copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.register_buffer("inv_scale", torch.ones(old.in_features))
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)
    return new


def input_absmax(model: nn.Module, names: Iterable[str], data: QuantData, limit: int | None = None) -> dict[str, torch.Tensor]:
    """``max |x_j|`` per input channel of each named Linear, over the calibration batches."""
    absmax: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable:
        def record(_module: nn.Module, inputs: tuple, _out: torch.Tensor) -> None:
            a = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0).float()
            absmax[name] = torch.maximum(absmax[name], a) if name in absmax else a
        return record

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        batches = list(data.calibration.batches(data.batch_size))[:limit]
        with torch.no_grad():
            for inputs, _ in data.progress("smoothing: input ranges", batches, len(batches)):
                model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return absmax


def smooth(model: nn.Module, alpha: float, data: QuantData, skip: Iterable[str] = (), limit: int | None = None) -> list[str]:
    """Smooth every Linear of ``model`` (in place) but those in ``skip``; the names smoothed, in model order."""
    skipped = set(skip)
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear and n not in skipped]
    absmax = input_absmax(model, names, data, limit)
    done = []
    for name in names:
        if name not in absmax:
            continue  # never called on the calibration data: nothing to measure
        old = model.get_submodule(name)
        s = smooth_scales(absmax[name], [old.weight], alpha)
        new = _replace(model, name, old)
        with torch.no_grad():
            new.weight.mul_(s.to(new.weight.dtype))
            new.inv_scale.copy_(1.0 / s)
        done.append(name)
    return done


def smoothed_structure(model: nn.Module, names: object) -> nn.Module:
    """``model`` (in place) with the named Linears made ``SmoothedLinear`` (``inv_scale`` ones, weights as
    they are): the shape an artifact's stored state loads into."""
    from quantwise.errors import QuantwiseError

    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise QuantwiseError("the artifact's list of smoothed layers is not a list of layer names (corrupt manifest)", "re-create the artifact")
    for name in names:
        try:
            old = model.get_submodule(name)
        except AttributeError:
            old = None
        if type(old) is not nn.Linear:
            raise QuantwiseError(f"the artifact smooths layer {name!r}, which is not a Linear in this model", "re-create the artifact from this model")
        _replace(model, name, old)
    return model
