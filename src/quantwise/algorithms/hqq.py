"""HQQ: calibration-free refinement of the zero-points of a group-wise grid.

Badri & Shaji (2023), "Half-Quadratic Quantization of Large Machine Learning Models";
this follows the reference ``optimize_weights_proximal_legacy`` of mobiusml/hqq.

With the scale ``s`` of each group held fixed, HQQ minimises a sparsity-promoting
lp-norm (``p < 1``) of the reconstruction error over the zero-point ``z``::

    min_z  || w - (Q_z(w) - z) * s ||_p^p,     Q_z(w) = clamp(round(w / s + z), qmin, qmax)

by half-quadratic splitting: an auxiliary error ``e`` and a penalty ``beta/2 ||e - (w - w_hat)||^2``
give two easy alternating steps (here with our ``w_hat = (q - z) * s``; the reference stores
the inverse scale)::

    q     = clamp(round(w / s + z))                                   (quantize)
    w_hat = (q - z) * s
    e     = shrink_p(w - w_hat, beta)                                 (proximal step on e)
    z     = mean_over_group(q - (w - e) / s)                          (closed-form z step)
    beta  = kappa * beta

with the generalised soft-thresholding operator
``shrink_p(x, beta) = sign(x) * relu(|x| - |x|^(p-1) / beta)``.

Stopping: like the reference, iterate at most ``iters`` times and stop as soon as the
mean absolute error ``mean|w - w_hat|`` over the whole weight stops decreasing. Unlike the
legacy reference, which returns the zero-point updated after the last (non-improving)
iteration, each group keeps the zero-point at which its own mean absolute error was the
lowest; the first iterate is the RTN zero-point, so the result's mean absolute error is
never above RTN's, group by group.
"""
from __future__ import annotations

import torch

from .grid import GroupGrid, GroupQuant, _check_weight, _codes, _work_dtype, qparams_minmax

__all__ = ["hqq"]


def _shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """Generalised soft-thresholding (proximal operator of the lp-"norm", p <= 1)."""
    if p == 1:
        return torch.sign(x) * torch.relu(x.abs() - 1.0 / beta)
    # |x|^(p-1) is inf at x == 0, where relu(-inf) = 0 gives the right answer.
    return torch.sign(x) * torch.relu(x.abs() - x.abs().pow(p - 1) / beta)


def hqq(
    w: torch.Tensor,
    grid: GroupGrid,
    *,
    iters: int = 20,
    lp_norm: float = 0.7,
    beta: float = 10.0,
    kappa: float = 1.01,
) -> GroupQuant:
    """Quantize ``w`` ``[out, in]`` on an asymmetric ``grid`` with HQQ-optimised float zero-points.

    Starts from RTN min/max parameters (:func:`~.grid.qparams_minmax`), keeps the scales,
    and runs at most ``iters`` half-quadratic iterations on the zero-points (see the module
    docstring). Returns a :class:`~.grid.GroupQuant` whose ``scale`` equals RTN's and whose
    ``zero`` is a (generally non-integer) float.
    """
    if grid.symmetric:
        raise ValueError("hqq optimises the zero-point, so it needs an asymmetric grid (symmetric=False)")
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    if not 0 < lp_norm <= 1:
        raise ValueError(f"lp_norm must be in (0, 1], got {lp_norm}")
    if beta <= 0 or kappa <= 0:
        raise ValueError(f"beta and kappa must be positive, got beta={beta}, kappa={kappa}")
    out, n_groups, glen = _check_weight(w, grid)
    scale, zero0 = qparams_minmax(w, grid)

    work = _work_dtype(w)
    wf = w.detach().to(work).reshape(out, n_groups, glen)
    s = scale.to(work).unsqueeze(-1)
    z = zero0.to(work).unsqueeze(-1)
    best_zero = z.clone()
    best_group_err = torch.full((out, n_groups, 1), float("inf"), dtype=work)
    best_err = float("inf")
    for it in range(iters + 1):  # iterate 0 is the RTN zero-point; the last one is only scored
        q = torch.round(wf / s + z).clamp_(grid.qmin, grid.qmax)
        w_r = (q - z) * s
        group_err = (wf - w_r).abs().mean(-1, keepdim=True)
        better = group_err < best_group_err
        best_group_err = torch.where(better, group_err, best_group_err)
        best_zero = torch.where(better, z, best_zero)
        err = float(group_err.mean())
        if not err < best_err:
            break
        best_err = err
        if it == iters:
            break
        e = _shrink_lp(wf - w_r, beta, lp_norm)
        z = (q - (wf - e) / s).mean(-1, keepdim=True)
        beta *= kappa

    zero = best_zero.squeeze(-1).to(torch.float32)
    qdata = _codes(wf, scale.unsqueeze(-1), zero.unsqueeze(-1), grid).reshape(out, n_groups * glen)
    return GroupQuant(qdata, scale, zero, grid)
