"""Group-wise integer grids for Linear weights: the vocabulary shared by RTN, HQQ, GPTQ and AWQ.

Layout. A weight ``w`` has the ``nn.Linear`` shape ``[out_features, in_features]``. Groups
run along the input dimension: with group size ``G``, group ``g`` of row ``r`` is
``w[r, g*G:(g+1)*G]`` and owns one ``scale[r, g]`` and one ``zero[r, g]``. ``group_size=None``
means one group per row (per-output-channel quantization).

Asymmetric grid (the default), codes ``q`` are unsigned integers in ``[0, 2^b - 1]``::

    q     = clamp(round(w / scale + zero), 0, 2^b - 1)
    w_hat = (q - zero) * scale

``zero`` is stored as a float so that algorithms such as HQQ can use a non-integer
zero-point; round-to-nearest (RTN) always produces an integer-valued one. RTN min/max
parameters include 0 in the range (as PyTorch observers and the GPTQ reference do), so
that an integer ``zero`` inside ``[0, 2^b - 1]`` always exists and 0.0 is exact::

    lo = min(min(w_g), 0),  hi = max(max(w_g), 0)
    scale = max((hi - lo) / (2^b - 1), tiny)
    zero  = clamp(round(-lo / scale), 0, 2^b - 1)

Symmetric grid, codes are signed integers in ``[-2^(b-1), 2^(b-1) - 1]`` and ``zero = 0``.
The scale is the "restricted range" one used by SmoothQuant, TensorRT and llama.cpp's
Q8_0: ``scale = absmax(w_g) / (2^(b-1) - 1)``, so ``+absmax`` and ``-absmax`` are both exact
and RTN never emits the most negative code (it is still a valid code, e.g. for GPTQ)::

    q     = clamp(round(w / scale), -2^(b-1), 2^(b-1) - 1)
    w_hat = q * scale

Arithmetic is float32 (float64 when the weight is float64); ``scale`` and ``zero`` are
stored as float32, and :meth:`GroupQuant.dequantize` computes in float32 whatever the
output dtype, so every algorithm here that claims "``dequantize()`` equals the weights I
produced" can be checked bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["GroupGrid", "GroupQuant", "qparams_minmax", "quantize_with", "rtn", "fake_quantize"]

# Smallest scale: only reached by all-zero groups (the range always contains 0), where any
# positive scale reproduces the zeros exactly; it just has to avoid a division by zero.
_SCALE_EPS = torch.finfo(torch.float32).tiny


def _pow2_divisors_below(n: int, limit: int) -> list[int]:
    out, d = [], 1
    while d < limit:
        if n % d == 0:
            out.append(d)
        d *= 2
    return sorted((d for d in out if d >= 8), reverse=True)


@dataclass(frozen=True)
class GroupGrid:
    """A ``bits``-bit integer grid with one (scale, zero) per group of ``group_size`` inputs.

    ``group_size=None`` is one group per row (per-channel). ``symmetric`` selects signed
    codes with ``zero = 0`` (see the module docstring for both conventions).
    """

    bits: int
    group_size: int | None
    symmetric: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be an integer from 2 to 8, got {self.bits!r}")
        if self.group_size is not None and (
            isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size <= 0
        ):
            raise ValueError(
                f"group_size must be a positive integer or None (one group per row), got {self.group_size!r}"
            )

    @property
    def qmin(self) -> int:
        """Smallest code."""
        return -(2 ** (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        """Largest code."""
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1

    @property
    def code_dtype(self) -> torch.dtype:
        """Storage dtype of the codes: int8 for symmetric grids, uint8 otherwise."""
        return torch.int8 if self.symmetric else torch.uint8

    def groups(self, in_features: int) -> int:
        """Number of groups per row; raises ``ValueError`` if the group size does not divide ``in_features``."""
        if in_features <= 0:
            raise ValueError(f"in_features must be positive, got {in_features}")
        if self.group_size is None:
            return 1
        if in_features % self.group_size:
            hints = _pow2_divisors_below(in_features, self.group_size)[:2]
            hint = f", e.g. {' or '.join(str(h) for h in hints)}" if hints else ", or None (one group per row)"
            raise ValueError(
                f"group size {self.group_size} does not divide in_features {in_features}; "
                f"use a group size that divides it{hint}"
            )
        return in_features // self.group_size

    def group_len(self, in_features: int) -> int:
        """Columns per group for a weight with ``in_features`` inputs."""
        return in_features // self.groups(in_features)


def _work_dtype(w: torch.Tensor) -> torch.dtype:
    return torch.float64 if w.dtype == torch.float64 else torch.float32


def _check_weight(w: torch.Tensor, grid: GroupGrid) -> tuple[int, int, int]:
    """Return (out_features, n_groups, group_len) after validating ``w``."""
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        shape = tuple(getattr(w, "shape", ()))
        raise ValueError(f"expected a 2-D weight [out_features, in_features], got shape {shape}")
    if not w.is_floating_point():
        raise ValueError(f"expected a floating-point weight, got {w.dtype}")
    n_groups = grid.groups(w.shape[1])
    return w.shape[0], n_groups, w.shape[1] // n_groups


def _codes(wg: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, grid: GroupGrid) -> torch.Tensor:
    """Round and clamp ``wg / scale + zero`` (all broadcastable) to codes of ``grid.code_dtype``."""
    work = wg.dtype
    q = torch.round(wg / scale.to(work) + zero.to(work)).clamp_(grid.qmin, grid.qmax)
    return q.to(grid.code_dtype)


@dataclass
class GroupQuant:
    """A quantized weight: integer codes plus float32 per-group ``scale`` and ``zero``.

    ``qdata`` is ``[out, in]`` (uint8 asymmetric, int8 symmetric); ``scale`` and ``zero`` are
    ``[out, n_groups]`` float32. ``w_hat = (qdata - zero) * scale`` group-wise.
    """

    qdata: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    grid: GroupGrid

    def __post_init__(self) -> None:
        if self.qdata.dim() != 2:
            raise ValueError(f"qdata must be 2-D [out, in], got shape {tuple(self.qdata.shape)}")
        if self.qdata.dtype != self.grid.code_dtype:
            raise ValueError(f"qdata must be {self.grid.code_dtype} for this grid, got {self.qdata.dtype}")
        out, n_in = self.qdata.shape
        expected = (out, self.grid.groups(n_in))
        for name in ("scale", "zero"):
            t = getattr(self, name)
            if tuple(t.shape) != expected or t.dtype != torch.float32:
                raise ValueError(f"{name} must be float32 of shape {expected}, got {t.dtype} {tuple(t.shape)}")

    @property
    def shape(self) -> torch.Size:
        """Shape of the weight, ``[out_features, in_features]``."""
        return self.qdata.shape

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(q - zero) * scale`` computed in float32, returned as ``dtype``, shape ``[out, in]``."""
        out, n_in = self.qdata.shape
        n_groups = self.scale.shape[1]
        q = self.qdata.to(torch.float32).reshape(out, n_groups, n_in // n_groups)
        w = (q - self.zero.unsqueeze(-1)) * self.scale.unsqueeze(-1)
        return w.reshape(out, n_in).to(dtype)


def qparams_minmax(w: torch.Tensor, grid: GroupGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest (min/max) ``scale`` and ``zero`` per group, both float32 ``[out, n_groups]``.

    Asymmetric: ``scale = (hi - lo) / (2^b - 1)`` with ``[lo, hi]`` the group's range widened to
    contain 0, ``zero = clamp(round(-lo / scale), 0, 2^b - 1)``. Symmetric:
    ``scale = absmax / (2^(b-1) - 1)``, ``zero = 0``. Scales are clamped to the smallest
    normal float32 (only all-zero groups hit it).
    """
    out, n_groups, glen = _check_weight(w, grid)
    wg = w.detach().to(_work_dtype(w)).reshape(out, n_groups, glen)
    if grid.symmetric:
        scale = (wg.abs().amax(-1) / grid.qmax).to(torch.float32).clamp_(min=_SCALE_EPS)
        return scale, torch.zeros_like(scale)
    lo = wg.amin(-1).clamp(max=0)
    hi = wg.amax(-1).clamp(min=0)
    scale = ((hi - lo) / grid.qmax).to(torch.float32).clamp_(min=_SCALE_EPS)
    zero = torch.round(-lo / scale.to(lo.dtype)).clamp_(0, grid.qmax).to(torch.float32)
    return scale, zero


def quantize_with(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, grid: GroupGrid) -> torch.Tensor:
    """Codes ``clamp(round(w / scale + zero), qmin, qmax)`` for given per-group parameters.

    ``scale`` and ``zero`` are ``[out, n_groups]``; returns ``[out, in]`` codes in ``grid.code_dtype``.
    """
    out, n_groups, glen = _check_weight(w, grid)
    for name, t in (("scale", scale), ("zero", zero)):
        if tuple(t.shape) != (out, n_groups):
            raise ValueError(f"{name} must have shape {(out, n_groups)}, got {tuple(t.shape)}")
    wg = w.detach().to(_work_dtype(w)).reshape(out, n_groups, glen)
    q = _codes(wg, scale.detach().unsqueeze(-1), zero.detach().unsqueeze(-1), grid)
    return q.reshape(out, n_groups * glen)


def rtn(w: torch.Tensor, grid: GroupGrid) -> GroupQuant:
    """Round-to-nearest quantization with min/max parameters (:func:`qparams_minmax`)."""
    scale, zero = qparams_minmax(w, grid)
    return GroupQuant(quantize_with(w, scale, zero, grid), scale, zero, grid)


def fake_quantize(w: torch.Tensor, grid: GroupGrid) -> torch.Tensor:
    """``rtn(w, grid).dequantize()``, returned in ``w``'s dtype."""
    return rtn(w, grid).dequantize(w.dtype)
