"""SignRound per decoder block: the rounding (and clipping) of every Linear in a block, learned together.

For one decoder block, each Linear's weight gets the project's min/max int4 grid (one scale
and integer zero per group, as RTN), then :func:`quantwise.rounding.signround` learns, for
all of the block's Linears at once, a rounding offset per weight and two range factors per
group (AutoRound's clipping) so that the block's output on the calibration windows matches
``targets``. The result is plain codes with per-group scales and integer zeros
(:class:`GroupQuant`), so artifacts, runtimes and exports need no change.

The caller (``llm.quantize``) passes as ``inputs`` the hidden states that the already
quantized earlier blocks produce, so each block learns to work on what it will really
receive, and as ``targets`` the float model's own hidden states after this block, so a block
can also make up for error that earlier blocks let through (AutoRound's default). A sample
is one calibration window; each SignRound step reads :data:`quantwise.config.SIGNROUND_BATCH` windows.

Where the learned codes do not beat round-to-nearest on the calibration windows (or the loss
stops being finite), the block keeps round-to-nearest and the result says why. That check, and
the errors the result reports, are measured on :data:`quantwise.config.SIGNROUND_CHECK_WINDOWS`
windows spread over the calibration set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from quantwise.config import SIGNROUND_BATCH, SIGNROUND_CHECK_WINDOWS
from quantwise.errors import QuantwiseError
from quantwise.algorithms import GroupGrid, GroupQuant, rtn
from quantwise.rounding import Progress, RoundedWeight, signround

__all__ = ["BlockRounding", "round_block"]


@dataclass
class BlockRounding:
    """One block's codes and how much the learning helped on the calibration windows."""

    layers: dict[str, GroupQuant]  # Linear path inside the block -> codes on its (clipped) grid
    rtn_mse: float  # block output MSE against the targets with round-to-nearest codes (on the checked windows)
    mse: float  # the same with the learned codes (equals rtn_mse when the block fell back)
    fallback: str | None = None  # why nearest rounding was kept, or None

    @property
    def ratio(self) -> float:
        return self.mse / self.rtn_mse if self.rtn_mse > 0 else 1.0


def _spec(name: str, weight: torch.Tensor, grid: GroupGrid) -> tuple[RoundedWeight, tuple[int, int]]:
    """The weight as ``[out, n_groups, group]`` with its RTN grid as ``[out, n_groups, 1]`` (one clipping pair per group)."""
    w = weight.detach().to(torch.float32)
    start = rtn(w, grid)
    out, n_in = w.shape
    n_groups = start.scale.shape[1]
    spec = RoundedWeight(name, w.reshape(out, n_groups, n_in // n_groups), start.scale.unsqueeze(-1), start.zero.unsqueeze(-1), grid.qmin, grid.qmax)
    return spec, (out, n_in)


def _shared_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The block's keyword inputs for any number of windows: a per-window tensor (an attention
    mask for windows without padding) is the same for every window, so keep its first row."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] > 1:
            if not bool((value == value[:1]).all()):
                raise QuantwiseError(f"the decoder block's input {key!r} differs between calibration windows", "use algorithm=gptq or awq-gptq for this model")
            value = value[:1]
        out[key] = value
    return out


def round_block(
    block: nn.Module,
    linears: dict[str, nn.Linear],
    kwargs: dict[str, Any],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    grid: GroupGrid,
    *,
    iterations: int,
    seed: int = 0,
    learn_clipping: bool = True,
    bf16: bool = False,
    progress: Progress | None = None,
) -> BlockRounding:
    """Learn the codes of ``linears`` (paths inside ``block``) so that ``block(inputs, **kwargs)``
    reproduces ``targets`` (both ``[windows, tokens, hidden]``). The block's own weights are not changed.

    ``bf16`` runs the block's forward and backward passes under bfloat16 autocast (about twice as
    fast where the CPU has native bfloat16, as AutoRound tunes on CPU); the offsets, the clipping
    factors, the weights they make and the loss stay float32."""
    specs, shapes = [], {}
    for path, module in linears.items():
        spec, shape = _spec(f"{path}.weight", module.weight, grid)
        specs.append(spec)
        shapes[spec.name] = shape
    shared = _shared_kwargs(kwargs)

    def forward(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = torch.func.functional_call(block, {k: v.reshape(shapes[k]) for k, v in weights.items()}, (x,), shared)
        out = out[0] if isinstance(out, tuple) else out
        return out.to(torch.float32)

    with torch.enable_grad():
        result = signround(specs, forward, inputs, targets, iterations=iterations, batch_size=SIGNROUND_BATCH,
                           learn_clipping=learn_clipping, seed=seed, progress=progress, check_samples=SIGNROUND_CHECK_WINDOWS)
    fallback = None
    if not math.isfinite(result.mse):
        fallback = "the reconstruction loss was not finite"
    elif result.mse >= result.rtn_mse:
        fallback = f"learned codes did not beat nearest rounding on the calibration windows ({result.mse:.3g} >= {result.rtn_mse:.3g})"
    if fallback is not None:
        layers = {path: rtn(module.weight.detach().to(torch.float32), grid) for path, module in linears.items()}
        return BlockRounding(layers, result.rtn_mse, result.rtn_mse, fallback)
    layers = {}
    for path in linears:
        name = f"{path}.weight"
        out, n_in = shapes[name]
        layers[path] = GroupQuant(result.codes[name].reshape(out, n_in).to(grid.code_dtype),
                                  result.scales[name].reshape(out, -1).contiguous(),
                                  result.zeros[name].reshape(out, -1).contiguous(), grid)
    return BlockRounding(layers, result.rtn_mse, result.mse)
