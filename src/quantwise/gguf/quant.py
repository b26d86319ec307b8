"""A weight quantized to a llama.cpp block type, and the algorithms that choose its codes.

- ``reference``: llama.cpp's own quantizer without an importance matrix (:func:`.choose.reference`);
- ``searched``: importance-weighted scale search (:func:`.choose.searched`), importance = the
  diagonal of the layer's input Hessian (mean squared input per column);
- ``gptq`` / ``awq-gptq``: the searched grid, then GPTQ's error-compensating codes on exactly
  that grid (:func:`quantwise.algorithms.gptq` with the grid's per-sub-block scale and zero).

Whatever the algorithm, the result is codes on the format's grid: :meth:`GGUFQuant.dequantize`
is bit for bit what llama.cpp's reference dequantizer reads from the file.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import choose
from .formats import BlockFormat, BlockParams, format_named, pack, scale_zero, unpack, weights

__all__ = ["GGUFQuant", "quantize_weight"]


@dataclass
class GGUFQuant:
    """Codes ``[rows, cols]`` and block parameters of one tensor in ``fmt``."""

    fmt: BlockFormat
    codes: torch.Tensor
    params: BlockParams
    reason: str = ""  # why this tensor has this type (a fallback, one type up), empty for the base type

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return weights(self.codes, self.params).to(dtype)

    def blocks(self) -> torch.Tensor:
        """The file's bytes, ``[rows, row_bytes]`` uint8."""
        return pack(self.codes, self.params)

    @classmethod
    def from_blocks(cls, data: torch.Tensor, type_name: str, cols: int, reason: str = "") -> "GGUFQuant":
        fmt = format_named(type_name)
        codes, params = unpack(data, fmt, cols)
        return cls(fmt, codes, params, reason)


def quantize_weight(w: torch.Tensor, fmt: BlockFormat, algorithm: str, hessian: torch.Tensor | None = None,
                    damp: float = 0.01, act_order: bool = True) -> GGUFQuant:
    """Quantize ``w`` ``[rows, cols]`` to ``fmt`` with ``algorithm`` (see the module docstring).
    ``hessian`` ``[cols, cols]`` (its diagonal for ``searched``) is needed except for ``reference``."""
    from quantwise.algorithms import GroupGrid, gptq

    if algorithm == "reference":
        return GGUFQuant(fmt, *choose.reference(w, fmt))
    importance = None if hessian is None else torch.diagonal(hessian).clone()
    codes, params = choose.searched(w, fmt, importance)
    if algorithm == "searched" or hessian is None:
        return GGUFQuant(fmt, codes, params)
    if algorithm not in ("gptq", "awq-gptq"):
        raise ValueError(f"unknown algorithm {algorithm!r}; use reference, searched, gptq or awq-gptq")
    grid = GroupGrid(fmt.bits, fmt.sub, symmetric=fmt.name == "Q8_0")
    scale, zero = scale_zero(params)
    result = gptq(w, hessian, grid, damp=damp, act_order=act_order, qparams=(scale, zero))
    codes = result.qdata.to(fmt.code_dtype)
    return GGUFQuant(fmt, codes, params)
