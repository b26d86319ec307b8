"""Learned clipping for SignRound: a new grid from two range factors per grid parameter.

AutoRound (Cheng et al. 2023) learns, next to the rounding offsets, factors that shrink
the quantization range. Here the range is the one the caller's grid covers::

    lo = (qmin - zero) * scale,   hi = (qmax - zero) * scale

Asymmetric grid (some ``zero != 0``): two factors ``alpha, beta`` in ``[0.5, 1]`` give::

    scale' = (beta * hi - alpha * lo) / (qmax - qmin)
    zero'  = qmin - alpha * lo / scale'          rounded (straight-through) when the
                                                 caller's zero is integer-valued, then
                                                 clamped to [qmin, qmax]

Symmetric grid (every ``zero == 0``): one factor, ``scale' = alpha * scale``, ``zero' = 0``.
At ``alpha = beta = 1`` both give back the caller's grid (the scale up to float
rounding). The factors have the shape of the grid parameters as given
(``broadcast(scale, zero)``), so the parameters must not be expanded to the weight's
full shape: per output channel pass ``[out, 1]``; for groups,
reshape the weight to ``[out, n_groups, group_size]`` with parameters ``[out, n_groups, 1]``
and reshape back inside the forward function.

A grid that is fixed by the file format (e.g. llama.cpp's, whose scales are derived
from the block's values by the format) must not be re-fitted: leave clipping off there.
"""
from __future__ import annotations

import torch

from .spec import RoundedWeight

__all__ = ["ClippedGrid", "round_ste"]

# the smallest scale, as in the project's grid code: only a degenerate (all-zero) range reaches it
_SCALE_EPS = torch.finfo(torch.float32).tiny
FACTOR_MIN = 0.5


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` whose gradient is passed straight through (``d round(x) / dx := 1``)."""
    return x + (torch.round(x) - x).detach()


class ClippedGrid:
    """The learnable range factors of one weight's grid (see the module docstring)."""

    def __init__(self, spec: RoundedWeight) -> None:
        shape = torch.broadcast_shapes(spec.scale.shape, spec.zero.shape)
        aligned = (1,) * (spec.w.dim() - len(shape)) + tuple(shape)
        if spec.w.numel() > 1 and aligned == tuple(spec.w.shape):
            raise ValueError(
                f"weight {spec.name!r}: learned clipping needs the grid parameters un-expanded (one factor per "
                f"parameter), but scale/zero have the weight's full shape {tuple(spec.w.shape)}; pass them as "
                f"e.g. {(spec.w.shape[0],) + (1,) * (spec.w.dim() - 1)} per output channel, or reshape the weight "
                "to [out, n_groups, group_size] with [out, n_groups, 1] parameters for groups"
            )
        self.qmin, self.qmax = spec.qmin, spec.qmax
        scale = spec.scale.detach().to(torch.float32).expand(shape)
        zero = spec.zero.detach().to(torch.float32).expand(shape)
        self.symmetric = bool((zero == 0).all())
        self.integer_zero = bool((zero == torch.round(zero)).all())
        self.scale, self.zero = scale, zero
        self.lo = (self.qmin - zero) * scale
        self.hi = (self.qmax - zero) * scale
        self.alpha = torch.ones(shape, requires_grad=True)
        self.beta = None if self.symmetric else torch.ones(shape, requires_grad=True)

    @property
    def factors(self) -> list[torch.Tensor]:
        """The learnable tensors."""
        return [self.alpha] if self.beta is None else [self.alpha, self.beta]

    def grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale', zero')`` for the current factors (differentiable, shape of the parameters)."""
        if self.symmetric:
            return self.scale * self.alpha, self.zero
        lo, hi = self.alpha * self.lo, self.beta * self.hi
        scale = ((hi - lo) / (self.qmax - self.qmin)).clamp(min=_SCALE_EPS)
        zero = self.qmin - lo / scale
        if self.integer_zero:
            zero = round_ste(zero)
        return scale, zero.clamp(self.qmin, self.qmax)

    def project(self) -> None:
        """Clamp the factors to ``[0.5, 1]`` after an update."""
        with torch.no_grad():
            for f in self.factors:
                f.clamp_(FACTOR_MIN, 1.0)
