"""Block types per tensor from measured sensitivity, under a file-size budget (``gguf:type=auto``).

llama.cpp's mixtures (``Q4_K_M``) give some tensors one type up by a fixed rule of roles and
layer positions. Here the choice is measured instead:

- sensitivity: the diagonal of the empirical Fisher information of the model's next-token loss
  on calibration text, ``F = E[g^2]`` per weight (:mod:`quantwise.llm.fisher`, averaged over
  runs of 32 columns to bound memory); the loss a type ``t`` adds to a tensor is estimated by
  the second-order term ``0.5 * sum(F * (w - w_t)^2)``, ``w_t`` the tensor quantized to ``t``
  (by llama.cpp's reference rule: the estimate only ranks types and tensors);
- allocation: minimise the summed estimate subject to the summed bytes of the quantized tensors
  at most the budget's (:func:`allocate`, a multiple-choice knapsack solved by dynamic programming).

The budget is a llama.cpp file type (the size its own rule gives this model's tensors) or bits per
weight. Every tensor gets a type its rows fit; the reason of each choice is recorded.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from quantwise.config import GGUF_BLOCK_TYPES

from . import choose
from .formats import FORMATS, weights

__all__ = ["CANDIDATES", "TypeCost", "allocate", "estimated_losses", "tensor_bytes"]

CANDIDATES = GGUF_BLOCK_TYPES  # every block type quantwise writes, cheapest first
FISHER_BLOCK = 32  # columns per Fisher average: every candidate's block is a multiple of it
ROW_CHUNK = 4096


@dataclass(frozen=True)
class TypeCost:
    """What one block type costs one tensor: file bytes and estimated loss increase."""

    type: str
    bytes: int
    loss: float


def tensor_bytes(type_name: str, rows: int, cols: int) -> int:
    return rows * FORMATS[type_name].row_bytes(cols)


def fitting_types(cols: int, candidates: Iterable[str] = CANDIDATES) -> list[str]:
    return [t for t in candidates if FORMATS[t].fits(cols)]


def estimated_losses(w: torch.Tensor, fisher: torch.Tensor, candidates: Iterable[str] = CANDIDATES) -> list[TypeCost]:
    """``0.5 * sum(F * (w - w_t)^2)`` for every candidate type ``t`` the rows of ``w`` fit.

    ``fisher`` is ``[rows, cols / 32]``: the mean of ``E[g^2]`` over each run of 32 columns."""
    rows, cols = w.shape
    if fisher.shape != (rows, cols // FISHER_BLOCK) or cols % FISHER_BLOCK:
        raise ValueError(f"fisher must be [{rows}, {cols // FISHER_BLOCK}] for a [{rows}, {cols}] weight, got {tuple(fisher.shape)}")
    out = []
    for t in fitting_types(cols, candidates):
        total = 0.0
        for r in range(0, rows, ROW_CHUNK):  # a slice of rows at a time: a large token table's temporaries stay small
            x = w[r : r + ROW_CHUNK].detach().to(torch.float32)
            codes, params = choose.reference(x, FORMATS[t])
            err = (x - weights(codes, params)).pow(2).reshape(x.shape[0], -1, FISHER_BLOCK).sum(-1)
            total += float((fisher[r : r + ROW_CHUNK].to(torch.float32) * err).sum())
        out.append(TypeCost(t, tensor_bytes(t, rows, cols), 0.5 * total))
    return out


def _hull(costs: list[TypeCost]) -> list[TypeCost]:
    """The types worth considering: sorted by bytes, each strictly lower in loss than every cheaper one."""
    kept: list[TypeCost] = []
    for c in sorted(costs, key=lambda c: (c.bytes, c.loss)):
        if not kept or c.loss < kept[-1].loss:
            kept.append(c)
    return kept


def allocate(costs: Mapping[str, list[TypeCost]], budget_bytes: int, states: int = 1 << 16) -> dict[str, TypeCost]:
    """The type of each tensor minimising the summed loss with summed bytes <= ``budget_bytes``.

    A multiple-choice knapsack solved by dynamic programming over the bytes above the cheapest
    file (every tensor at its cheapest type), cut into at most ``states`` units; each upgrade's
    extra bytes are rounded up to whole units, so the answer always fits (exact when those bytes
    are at most ``states``); bytes the rounding left are then spent on the upgrades that save the
    most loss per byte. Raises ``ValueError`` if even the cheapest types exceed the budget."""
    names = list(costs)
    options = [_hull(costs[n]) for n in names]
    if any(not o for o in options):
        raise ValueError(f"no block type fits tensor {names[next(i for i, o in enumerate(options) if not o)]}")
    floor = sum(o[0].bytes for o in options)
    if floor > budget_bytes:
        raise ValueError(f"the budget of {budget_bytes} bytes is below the smallest file these types give ({floor} bytes)")
    spare = budget_bytes - floor
    unit = max(1.0, spare / states)
    size = int(spare // unit)
    best = np.zeros(size + 1)  # best[b]: least loss of the tensors so far with at most b units of upgrades
    picks = np.zeros((len(names), size + 1), dtype=np.int8)

    def units(c: TypeCost, cheapest: TypeCost) -> int:
        return math.ceil((c.bytes - cheapest.bytes) / unit - 1e-9)

    for i, opts in enumerate(options):
        new = np.full(size + 1, np.inf)
        for j, c in enumerate(opts):
            w = units(c, opts[0])
            if w > size:
                continue
            cand = np.full(size + 1, np.inf)
            cand[w:] = best[: size + 1 - w] + c.loss
            better = cand < new
            new[better] = cand[better]
            picks[i][better] = j
        best = new  # finite everywhere: the cheapest option costs 0 units
    choice, b = {}, size
    for i in reversed(range(len(names))):
        c = options[i][picks[i][b]]
        choice[names[i]] = c
        b -= units(c, options[i][0])
    if b < 0 or sum(c.bytes for c in choice.values()) > budget_bytes:
        raise RuntimeError("the type allocation broke its budget; report this as a bug")
    return _fill(choice, {n: o for n, o in zip(names, options)}, budget_bytes)


def _fill(choice: dict[str, TypeCost], options: Mapping[str, list[TypeCost]], budget_bytes: int) -> dict[str, TypeCost]:
    """Spend what is left of the budget: the upgrade that saves the most loss per byte and still fits, repeatedly."""
    left = budget_bytes - sum(c.bytes for c in choice.values())
    while True:
        best, gain = None, 0.0
        for name, opts in options.items():
            now = choice[name]
            for c in opts:
                extra = c.bytes - now.bytes
                if 0 < extra <= left and (now.loss - c.loss) / extra > gain:
                    best, gain = (name, c), (now.loss - c.loss) / extra
        if best is None:
            return dict(choice)
        left -= best[1].bytes - choice[best[0]].bytes
        choice[best[0]] = best[1]
