"""AWQ: activation-aware per-input-channel weight scaling (and clipping) before quantization.

Lin, Tang, Tang, Yang, Dang, Gan & Han (2023), "AWQ: Activation-aware Weight
Quantization for LLM Compression and Acceleration"; this follows ``auto_scale.py``
(``_search_module_scale``) and ``auto_clip.py`` (``auto_clip_layer``) of mit-han-lab/llm-awq.

Scaling. For a Linear ``y = x W^T``, multiplying input channel ``j`` of ``W`` by ``s_j`` and
dividing ``x_j`` by ``s_j`` leaves ``y`` unchanged in float, but scales the rounding error of
the salient channels (those with large activations) down. AWQ searches one exponent::

    s(r) = mean_t|x_tj| ^ r,  clamped to >= 1e-4,  then  s <- s / sqrt(max(s) * min(s))
    W_q(r) = Q(W * s(r)) / s(r)                          for r in {0, 1/n, ..., (n-1)/n}
    r*     = argmin_r  mean (x W^T - x W_q(r)^T)^2

``r = 0`` gives ``s = 1``, i.e. plain RTN, so the chosen loss is never above RTN's.

Folding (the caller's job, exact in float): the weights that read ``x`` are replaced by
``W * s`` (:func:`apply_awq_scales`, every Linear sharing the input, e.g. q/k/v or
gate/up), and ``1/s`` is folded into whatever produces ``x``: an RMSNorm/LayerNorm weight
(and bias) is divided by ``s``; a preceding Linear (e.g. v_proj before o_proj, up_proj
before down_proj) has its output rows, and bias, divided by ``s``:
``W_prev[j, :] /= s_j``. Then ``W * s`` is quantized.

Clipping (:func:`awq_clip_search`). Per output row and group, shrink the max-abs range
to ``m * (1 - k/n)`` for ``k < max_shrink * n``, clamp the weights to ``[-m', m']``,
quantize, and keep the shrink that minimises the mean squared error of that group's
partial outputs ``sum_{j in g} x_tj w_rj`` over the calibration tokens.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .grid import GroupGrid, _check_weight, fake_quantize

__all__ = ["AwqResult", "awq_search", "apply_awq_scales", "awq_clip_search"]

Forward = Callable[[torch.Tensor, Sequence[torch.Tensor]], torch.Tensor]


@dataclass
class AwqResult:
    """Outcome of :func:`awq_search`.

    ``scales`` ``[in]`` float32 multiply the weights' input channels (and divide the
    activations); ``ratio`` is the chosen exponent; ``loss`` its output MSE; ``loss_rtn``
    the output MSE at ratio 0 (``s = 1``, plain RTN).
    """

    scales: torch.Tensor
    ratio: float
    loss: float
    loss_rtn: float


def _flatten_inputs(x: torch.Tensor, weights: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    if len(weights) == 0:
        raise ValueError("weights must contain at least one Linear weight")
    n_in = weights[0].shape[-1]
    for w in weights:
        if w.dim() != 2 or w.shape[1] != n_in:
            raise ValueError(f"all weights must be [out_i, {n_in}], got shape {tuple(w.shape)}")
    if x.dim() == 0 or x.shape[-1] != n_in:
        raise ValueError(f"x must be [..., {n_in}] to feed these weights, got shape {tuple(x.shape)}")
    return x.detach().reshape(-1, n_in).to(torch.float32), [w.detach().to(torch.float32) for w in weights]


def awq_search(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    grid: GroupGrid,
    *,
    n_grid: int = 20,
    forward: Forward | None = None,
) -> AwqResult:
    """Search the AWQ input-channel scales for the Linear ``weights`` that all read ``x``.

    ``x`` is calibration input ``[n_tokens, in]`` (leading dims are flattened); ``weights``
    is a list of ``[out_i, in]``. ``forward(x, weights) -> Tensor`` computes the block output
    whose MSE is minimised; by default the concatenated ``x @ w_i.T``. It is called with
    ``x`` and the original weights once, then with ``x`` and the candidate weights
    ``Q(w_i * s) / s`` for each ratio. Computation is in float32. Without ``forward`` the
    error is computed as ``x (W - W_q)^T``, one Linear at a time (no reference output kept).
    """
    if n_grid < 1:
        raise ValueError(f"n_grid must be >= 1, got {n_grid}")
    xf, ws = _flatten_inputs(x, weights)
    for w in ws:
        _check_weight(w, grid)
    x_mean = xf.abs().mean(0)
    with torch.no_grad():
        if forward is None:  # linear: x W^T - x W_q^T = x (W - W_q)^T, one output matrix at a time
            n_out = xf.shape[0] * sum(w.shape[0] for w in ws)

            def output_mse(candidate: list[torch.Tensor]) -> float:
                return sum(float((xf @ (w - c).T).pow_(2).sum()) for w, c in zip(ws, candidate, strict=True)) / n_out
        else:
            reference = forward(xf, ws).to(torch.float32)

            def output_mse(candidate: list[torch.Tensor]) -> float:
                return float((forward(xf, candidate).to(torch.float32) - reference).pow(2).mean())

        best: tuple[float, float, torch.Tensor] | None = None
        loss_rtn = float("nan")
        for k in range(n_grid):
            ratio = k / n_grid
            s = x_mean.pow(ratio).clamp(min=1e-4)
            s = s / (s.max() * s.min()).sqrt()
            loss = output_mse([fake_quantize(w * s, grid) / s for w in ws])
            if k == 0:
                loss_rtn = loss
            if best is None or loss < best[0]:
                best = (loss, ratio, s)
    if best is None or not torch.isfinite(best[2]).all():
        raise ValueError("AWQ search produced non-finite scales; check the calibration inputs")
    loss, ratio, s = best
    return AwqResult(scales=s, ratio=ratio, loss=loss, loss_rtn=loss_rtn)


def apply_awq_scales(weights: Sequence[torch.Tensor], s: torch.Tensor) -> list[torch.Tensor]:
    """``[w * s for w in weights]`` (new tensors, each in its own dtype): scale the input channels.

    The caller must divide the producer of the input by ``s`` (see the module docstring).
    """
    return [w * s.to(w.dtype) for w in weights]


def awq_clip_search(
    x: torch.Tensor,
    w: torch.Tensor,
    grid: GroupGrid,
    *,
    n_grid: int = 20,
    max_shrink: float = 0.5,
    max_tokens: int = 512,
    row_batch: int = 64,
) -> torch.Tensor:
    """Return ``w`` clamped per (row, group) to the max-abs range that AWQ's clip search picks.

    Tries ranges ``absmax * (1 - k / n_grid)`` for ``k = 0 .. int(max_shrink * n_grid) - 1``
    (``k = 0`` is no clipping) and keeps, per row and group, the one minimising the mean
    squared error of the group's partial outputs on ``x``. As in the reference, ``x`` is
    subsampled with stride ``n_tokens // max_tokens``. Rows are processed ``row_batch``
    at a time to bound memory. Returns a new tensor in ``w``'s dtype.
    """
    if n_grid < 1 or not 0 < max_shrink <= 1:
        raise ValueError(f"need n_grid >= 1 and 0 < max_shrink <= 1, got {n_grid}, {max_shrink}")
    xf, (wf,) = _flatten_inputs(x, [w])
    out, n_groups, glen = _check_weight(wf, grid)
    stride = max(1, xf.shape[0] // max_tokens)
    xg = xf[::stride].reshape(-1, n_groups, glen)
    wg = wf.reshape(out, n_groups, glen)
    best_max = wg.abs().amax(-1, keepdim=True)
    n_steps = max(1, int(max_shrink * n_grid))
    with torch.no_grad():
        for r0 in range(0, out, row_batch):
            wb = wg[r0 : r0 + row_batch]
            org_max = wb.abs().amax(-1, keepdim=True)
            org_out = torch.einsum("tgk,rgk->rtg", xg, wb)
            min_err = torch.full_like(org_max, float("inf"))
            chosen = org_max.clone()
            for k in range(n_steps):
                max_val = org_max * (1 - k / n_grid)
                clipped = torch.clamp(wb, -max_val, max_val)
                q = fake_quantize(clipped.reshape(-1, n_groups * glen), grid).reshape(clipped.shape)
                err = (torch.einsum("tgk,rgk->rtg", xg, q) - org_out).pow(2).mean(1).unsqueeze(-1)
                better = err < min_err
                min_err = torch.where(better, err, min_err)
                chosen = torch.where(better, max_val, chosen)
            best_max[r0 : r0 + row_batch] = chosen
    bound = best_max.to(w.dtype)
    return torch.clamp(w.detach().reshape(out, n_groups, glen), -bound, bound).reshape(out, n_groups * glen)
