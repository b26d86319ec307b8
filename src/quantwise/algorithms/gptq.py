"""GPTQ: error-compensating quantization of a Linear weight, column by column.

Frantar, Ashkboos, Hoefler & Alistarh (2022), "GPTQ: Accurate Post-Training Quantization
for Generative Pre-trained Transformers"; this follows ``GPTQ.fasterquant`` in
IST-DASLab/gptq (``gptq.py``).

Each row ``w`` of the weight is quantized to minimise the layer-output error
``||X w - X w_hat||^2 = (w - w_hat)^T H (w - w_hat) / 2`` with ``H = 2 X^T X`` (the
Hessian, :class:`HessianAccumulator`). Columns are quantized left to right; after
column ``j`` is rounded, the Optimal Brain Surgeon update spreads its error over the
columns not yet quantized::

    err      = (w_j - q_j) / [H_F^-1]_jj
    w_F     -= err * [H_F^-1]_{j,F}            F = columns after j

where ``H_F^-1`` is the inverse Hessian with the already quantized columns eliminated.
Its rows are, up to normalisation, the rows of the upper Cholesky factor ``U`` of
``H^-1`` (``H^-1 = U^T U``), so one factorisation serves all steps: ``err = (w_j - q_j) / U_jj``
and ``w_F -= err * U_{j,F}``. The update is applied lazily: inside a block of
``block_size`` columns immediately, to the columns after the block once per block.

Dampening: ``H + damp * mean(diag(H)) * I``. Dead inputs (``diag(H) == 0``, never
active in the calibration data) get ``H_ii = 1`` and their weights set to 0, as in the
reference.

Group parameters: by default the min/max parameters of a group are computed when the
quantizer reaches the group's first column, from the current (already error-compensated)
weights of the whole group. This implementation includes the still-pending lazy
updates of the group's columns beyond the current block, so the result does not depend
on ``block_size`` (the reference reads those columns before their pending update). With
``static_groups=True`` all parameters come from the original weights up front.

``act_order`` quantizes columns in order of decreasing ``diag(H)`` and un-permutes at
the end. Groups are always the original contiguous column groups (so the result is a
valid :class:`~.grid.GroupQuant`), which needs all group parameters before the first
column is quantized: with a group size, ``act_order=True`` therefore forces
``static_groups=True``.

Precision: the Hessian is factorised in float64; the column loop runs in float32
(float64 if ``w`` is float64). Each column is quantized with the float32 parameters
that are stored, and the weights it produces are exactly ``GroupQuant.dequantize()``.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from .grid import GroupGrid, GroupQuant, _check_weight, _codes, _work_dtype, qparams_minmax

__all__ = ["HessianAccumulator", "gptq"]


class HessianAccumulator:
    """Running ``H = 2/n * sum_t x_t x_t^T`` over input rows ``x_t`` of a Linear layer (float32).

    ``add`` takes activations ``[..., in_features]`` and counts every row (token) as one
    sample. The running-average update is the reference's::

        H <- H * n / (n + m);  n <- n + m;  H <- H + (sqrt(2/n) X)^T (sqrt(2/n) X)

    (The reference counts sequences rather than tokens in ``n``; the scale of ``H``
    does not change GPTQ's result, since the dampening is relative to ``mean(diag(H))``.)
    """

    def __init__(self, in_features: int) -> None:
        if in_features <= 0:
            raise ValueError(f"in_features must be positive, got {in_features}")
        self.in_features = in_features
        self.n_samples = 0
        self._h = torch.zeros(in_features, in_features, dtype=torch.float32)

    def add(self, x: torch.Tensor) -> None:
        """Accumulate the rows of ``x`` ``[..., in_features]``."""
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"expected activations [..., {self.in_features}], got shape {tuple(x.shape)}")
        rows = x.detach().reshape(-1, self.in_features).to(torch.float32)
        m = rows.shape[0]
        if m == 0:
            return
        self._h.mul_(self.n_samples / (self.n_samples + m))
        self.n_samples += m
        rows = rows * math.sqrt(2.0 / self.n_samples)
        self._h.addmm_(rows.T, rows)

    def rescale(self, s: torch.Tensor) -> None:
        """The Hessian of inputs ``x * s`` (``s`` ``[in]``, per input channel): ``H * s s^T``."""
        if s.shape != (self.in_features,):
            raise ValueError(f"expected scales [{self.in_features}], got shape {tuple(s.shape)}")
        s = s.to(torch.float32)
        self._h.mul_(s.unsqueeze(1) * s.unsqueeze(0))

    def hessian(self) -> torch.Tensor:
        """A copy of the current ``H`` ``[in, in]`` float32."""
        if self.n_samples == 0:
            raise ValueError("no activations were added; call add() with calibration inputs first")
        return self._h.clone()


def _cholesky(a: torch.Tensor, what: str, damp: float, upper: bool = False) -> torch.Tensor:
    factor, info = torch.linalg.cholesky_ex(a, upper=upper)
    if int(info) != 0 or not torch.isfinite(factor).all():
        raise ValueError(
            f"GPTQ: Cholesky factorisation of the {what} failed (not positive definite) with damp={damp}; "
            "use a larger damp, e.g. 0.1, or more calibration data"
        )
    return factor


def gptq(
    w: torch.Tensor,
    H: torch.Tensor,
    grid: GroupGrid,
    *,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
    static_groups: bool = False,
    qparams: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> GroupQuant:
    """Quantize ``w`` ``[out, in]`` with GPTQ given the Hessian ``H`` ``[in, in]`` of its inputs.

    ``damp`` is relative to ``mean(diag(H))``. See the module docstring for the group
    parameter rule, ``act_order`` (forces ``static_groups`` when grouped) and precision.
    ``qparams`` = ``(scale, zero)`` ``[out, n_groups]`` fixes the group parameters up front
    (e.g. HQQ's optimised ones) instead of min/max; dead input columns keep them.
    Neither ``w`` nor ``H`` is modified.
    """
    out, n_groups, glen = _check_weight(w, grid)
    n = w.shape[1]
    if H.shape != (n, n):
        raise ValueError(f"H must be [in_features, in_features] = [{n}, {n}], got {tuple(H.shape)}")
    if not damp >= 0:
        raise ValueError(f"damp must be >= 0, got {damp}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not torch.isfinite(H).all() or not torch.isfinite(w).all():
        raise ValueError("w and H must be finite")

    work = _work_dtype(w)
    W = w.detach().to(work).clone()
    H = H.detach().to(torch.float64).clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    if act_order and grid.group_size is not None:
        static_groups = True
    column_grid = dataclasses.replace(grid, group_size=None)
    scale = torch.empty(out, n_groups, dtype=torch.float32)
    zero = torch.empty(out, n_groups, dtype=torch.float32)
    if qparams is not None:  # given group parameters (e.g. HQQ's) are static by definition
        static_groups = True
        if qparams[0].shape != (out, n_groups) or qparams[1].shape != (out, n_groups):
            raise ValueError(f"qparams must be two [out, n_groups] = [{out}, {n_groups}] tensors")
        scale[:], zero[:] = qparams[0], qparams[1]
    elif static_groups:
        scale[:], zero[:] = qparams_minmax(W, grid)

    if act_order:
        perm = torch.argsort(torch.diagonal(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
        group_of = perm // glen  # original group of the column at each quantization position
    else:
        perm = None
        group_of = torch.arange(n) // glen

    H.diagonal().add_(damp * float(torch.diagonal(H).mean()))
    L = _cholesky(H, "damped Hessian", damp)
    del H
    Hinv = _cholesky(torch.cholesky_inverse(L), "inverse Hessian", damp, upper=True).to(work)
    del L

    codes = torch.empty(out, n, dtype=grid.code_dtype)
    group_list = group_of.tolist()
    for i1 in range(0, n, block_size):
        i2 = min(i1 + block_size, n)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            g = group_list[j]
            if not static_groups and j % glen == 0:
                end = j + glen
                current = W1[:, i : min(end, i2) - i1]
                if end > i2:  # the group runs past the block: add the block's pending update
                    beyond = W[:, i2:end] - Err1 @ Hinv[i1:i2, i2:end]
                    current = torch.cat([current, beyond], dim=1)
                s, z = qparams_minmax(current, column_grid)
                scale[:, g], zero[:, g] = s[:, 0], z[:, 0]
            col = W1[:, i]
            q = _codes(col, scale[:, g], zero[:, g], grid)
            codes[:, j] = q
            deq = ((q.to(torch.float32) - zero[:, g]) * scale[:, g]).to(work)
            err = (col - deq) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    if perm is not None:
        codes = codes[:, torch.argsort(perm)]
    return GroupQuant(codes, scale, zero, grid)
