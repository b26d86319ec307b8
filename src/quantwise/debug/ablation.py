"""Where a layer's own error comes from: the float layer re-run with one quantization
step at a time, each measured at the layer's output against the float output.

- input: the float input fake-quantized on the layer's input grid (clipping: only clamped
  to the grid's range, no rounding);
- weight: the dequantized weights in place of the float ones (BatchNorm folded in, as the
  quantized layer does);
- output: the float output fake-quantized on the grid the layer writes (clipping: clamped).

Measured at the output, the input source includes how the layer amplifies its input
noise (a constant offset from clipping an image's background, summed by a conv kernel,
weighs more than its share of the input error suggests).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from quantwise.debug.stats import ErrorAccumulator, QuantRange, db, fake_quantize


@dataclass
class NoiseSources:
    """SQNR (dB) at the layer's output with only one quantization step applied (None where
    that step does not exist, e.g. dynamic inputs or a float output)."""

    input_db: float | None
    input_clipping_db: float | None
    weight_db: float | None
    output_db: float | None
    output_clipping_db: float | None


class _Sqnr:
    def __init__(self) -> None:
        self.acc: ErrorAccumulator | None = None

    def add(self, reference: torch.Tensor, test: torch.Tensor) -> None:
        self.acc = self.acc or ErrorAccumulator()
        self.acc.add(reference, test)

    def result(self) -> float | None:
        return None if self.acc is None else db(self.acc.signal, self.acc.noise)


@dataclass
class FloatChain:
    """The float modules one quantized layer stands for, callable without their hooks."""

    layer: nn.Module
    batch_norm: nn.Module | None
    tail: list[Callable[[torch.Tensor], torch.Tensor]]  # activation module forward or function

    def __call__(self, args: tuple[Any, ...], skip_batch_norm: bool = False) -> torch.Tensor:
        out = self.layer.forward(*args)
        while isinstance(out, (tuple, list)):
            out = out[0]
        if self.batch_norm is not None and not skip_batch_norm:
            out = self.batch_norm.forward(out)
        for f in self.tail:
            out = f(out)
        return out


@contextmanager
def swapped_weights(chain: FloatChain, dequantized: dict[str, torch.Tensor]) -> Iterator[bool]:
    """Put dequantized weights into the float layer; with a folded BatchNorm the bias is
    folded too and the BatchNorm must be skipped (yields True then)."""
    module, saved = chain.layer, {}
    fold = chain.batch_norm is not None and "weight" in dequantized
    updates = dict(dequantized)
    if fold:
        bn = chain.batch_norm
        gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
        beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(bn.running_mean)
        factor = gamma / torch.sqrt(bn.running_var + bn.eps)
        bias = module.bias.detach() if module.bias is not None else torch.zeros_like(bn.running_mean)
        updates["bias"] = (bias - bn.running_mean) * factor + beta
    try:
        for name, value in updates.items():
            param = getattr(module, name)
            if param is None:  # conv without bias: give it one for the duration
                setattr(module, name, nn.Parameter(value.clone(), requires_grad=False))
                saved[name] = None
            else:
                saved[name] = param.data
                param.data = value.to(param.dtype).reshape(param.shape)
        yield fold
    finally:
        for name, old in saved.items():
            if old is None:
                setattr(module, name, None)
            else:
                getattr(module, name).data = old


class SourceMeter:
    """Accumulates the NoiseSources of one layer over batches."""

    def __init__(self) -> None:
        self.input, self.input_clip, self.weight, self.output, self.output_clip = (_Sqnr() for _ in range(5))

    def add(
        self, chain: FloatChain, args: tuple[Any, ...], reference: torch.Tensor,
        in_grid: QuantRange | None, out_grid: QuantRange | None, dequantized: dict[str, torch.Tensor] | None,
    ) -> None:
        x = args[0]
        with torch.no_grad():
            if in_grid is not None and isinstance(x, torch.Tensor) and x.is_floating_point():
                rest = tuple(args[1:])
                self.input.add(reference, chain((fake_quantize(x, in_grid.scale, in_grid.zero_point, in_grid.qmin, in_grid.qmax),) + rest))
                self.input_clip.add(reference, chain((x.clamp(in_grid.lo, in_grid.hi),) + rest))
            if dequantized:
                with swapped_weights(chain, dequantized) as folded:
                    self.weight.add(reference, chain(args, skip_batch_norm=folded))
            if out_grid is not None:
                self.output.add(reference, fake_quantize(reference, out_grid.scale, out_grid.zero_point, out_grid.qmin, out_grid.qmax))
                self.output_clip.add(reference, reference.clamp(out_grid.lo, out_grid.hi))

    def result(self) -> NoiseSources:
        return NoiseSources(self.input.result(), self.input_clip.result(), self.weight.result(), self.output.result(), self.output_clip.result())
