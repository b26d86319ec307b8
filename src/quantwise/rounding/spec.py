"""A weight to be rounded onto a fixed integer grid, and round-to-nearest on that grid.

The grid is the project's (see :mod:`quantwise.algorithms.grid`), written for a weight
``w`` of any shape with ``scale`` and ``zero`` tensors that broadcast to ``w.shape`` (the
caller expands per-channel or per-group parameters) and integer code bounds ``qmin, qmax``::

    x     = w / scale + zero                     (the "real-valued code")
    q     = clamp(round(x), qmin, qmax)          (round to nearest, RTN)
    w_hat = (q - zero) * scale

Learned rounding (:mod:`.adaround`, :mod:`.signround`) only chooses ``q``; the grid is
fixed before it runs. Codes are returned as integer-valued float32 tensors of ``w``'s
shape, so the caller casts them to its storage dtype. All arithmetic is float32, in the
same order as the project's grid code, so RTN codes here equal ``grid.quantize_with``'s.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RoundedWeight", "rtn_codes", "dequantize"]


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


@dataclass(frozen=True, eq=False)
class RoundedWeight:
    """One weight whose integer codes are to be learned, with its fixed grid.

    ``name`` is the key under which the forward function receives the dequantized weight.
    ``scale`` (positive) and ``zero`` must broadcast to ``w.shape``: e.g. ``[out, 1]`` per
    output channel of a Linear, ``[out, 1, 1, 1]`` per output channel of a Conv2d. Symmetric
    grids have ``zero = 0`` and signed codes (``qmin=-128, qmax=127``); asymmetric ones have
    unsigned codes (``0..15``) and a zero-point in that range.
    """

    name: str
    w: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    qmin: int
    qmax: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"weight name must be a non-empty string, got {self.name!r}")
        where = f"weight {self.name!r}"
        if not isinstance(self.w, torch.Tensor) or not self.w.is_floating_point():
            raise ValueError(f"{where}: w must be a floating-point tensor, got {type(self.w).__name__}")
        if self.w.numel() == 0:
            raise ValueError(f"{where}: w is empty (shape {_shape(self.w)})")
        if not torch.isfinite(self.w).all():
            raise ValueError(f"{where}: w contains NaN or infinite values")
        for label in ("scale", "zero"):
            t = getattr(self, label)
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise ValueError(f"{where}: {label} must be a floating-point tensor, got {type(t).__name__}")
            try:
                shape = torch.broadcast_shapes(self.w.shape, t.shape)
            except RuntimeError:
                shape = None
            if shape != self.w.shape:
                raise ValueError(
                    f"{where}: {label} has shape {_shape(t)}, which does not broadcast to the weight's shape "
                    f"{_shape(self.w)}; expand per-channel or per-group parameters to a broadcastable shape, "
                    f"e.g. {(self.w.shape[0],) + (1,) * (self.w.dim() - 1)} per output channel"
                )
            if not torch.isfinite(t).all():
                raise ValueError(f"{where}: {label} contains NaN or infinite values")
        if not bool((self.scale > 0).all()):
            raise ValueError(f"{where}: scale must be positive everywhere")
        for label in ("qmin", "qmax"):
            v = getattr(self, label)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{where}: {label} must be an integer, got {v!r}")
        if self.qmin >= self.qmax:
            raise ValueError(f"{where}: qmin must be below qmax, got qmin={self.qmin}, qmax={self.qmax}")
        if max(abs(self.qmin), abs(self.qmax)) > 2**24:
            # float32 codes are exact integers only up to 2^24
            raise ValueError(f"{where}: codes must lie within +-2^24, got [{self.qmin}, {self.qmax}]")

    def real_codes(self) -> torch.Tensor:
        """``w / scale + zero`` in float32, shape of ``w`` (no rounding, no clamping)."""
        w = self.w.detach().to(torch.float32)
        return w / self.scale.detach().to(torch.float32) + self.zero.detach().to(torch.float32)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """``(codes - zero) * scale`` in float32 on this weight's grid."""
        return dequantize(codes, self.scale, self.zero)


def rtn_codes(spec: RoundedWeight) -> torch.Tensor:
    """Round-to-nearest codes ``clamp(round(w / scale + zero), qmin, qmax)``, float32, shape of ``w``.

    ``torch.round`` rounds halves to even, as the project's grid code does.
    """
    return torch.round(spec.real_codes()).clamp_(spec.qmin, spec.qmax)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """``(codes - zero) * scale`` in float32 (``scale`` and ``zero`` broadcast to ``codes``)."""
    return (codes.to(torch.float32) - zero.to(torch.float32)) * scale.to(torch.float32)
