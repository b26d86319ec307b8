"""SmoothQuant: migrate activation outliers into the weights before W8A8 quantization.

Xiao, Lin, Seznec, Wu, Demouth & Han (2022), "SmoothQuant: Accurate and Efficient
Post-Training Quantization for Large Language Models"; this follows ``smooth_ln_fcs``
and ``fake_quant.py`` of mit-han-lab/smoothquant.

For a Linear ``y = x W^T`` with a few activation channels of very large magnitude,
per-token activation quantization wastes its range on those channels. A per-input-channel
factor ``s`` moves part of the difficulty into the weights, exactly in float::

    y = (x / s) (W * s)^T,     s_j = max_t|x_tj|^alpha / max_i|W_ij|^(1 - alpha)

``alpha`` in [0, 1] sets the migration strength (0.5 in the paper for most models); the
weight maximum runs over the rows of every Linear that reads ``x`` (e.g. q, k and v).

Folding (the caller's job): ``x' = x / s`` is folded into the producer of ``x``: divide
the preceding LayerNorm/RMSNorm weight and bias by ``s`` (or the output rows and bias of
a preceding Linear), and multiply each consuming weight by ``s`` (``W' = W * s``).

The fake quantizers mirror the paper's W8A8 setting: dynamic per-token symmetric int8
activations and per-output-channel symmetric int8 weights, both with
``scale = absmax / 127`` (the symmetric :class:`~.grid.GroupGrid` convention).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .grid import GroupGrid, fake_quantize

__all__ = ["smooth_scales", "per_token_absmax_int8_fake", "per_channel_int8_fake", "smoothed_output_mse"]

_MIN_SCALE = 1e-5


def smooth_scales(act_absmax: torch.Tensor, weights: Sequence[torch.Tensor], alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant factors ``s`` ``[in]`` float32 for the Linear ``weights`` that read one input.

    ``act_absmax`` ``[in]`` is ``max_t |x_tj|`` over calibration tokens. Returns
    ``s_j = act_absmax_j^alpha / max_i |W_ij|^(1 - alpha)`` (max over the rows of all
    ``weights``), clamped to >= 1e-5. Degenerate channels, whose activation or weight
    maximum is 0 (or where ``s`` is not finite), get ``s_j = 1``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if act_absmax.dim() != 1:
        raise ValueError(f"act_absmax must be 1-D [in_features], got shape {tuple(act_absmax.shape)}")
    if len(weights) == 0:
        raise ValueError("weights must contain at least one Linear weight")
    n_in = act_absmax.shape[0]
    for w in weights:
        if w.dim() != 2 or w.shape[1] != n_in:
            raise ValueError(f"all weights must be [out_i, {n_in}], got shape {tuple(w.shape)}")
    a = act_absmax.detach().to(torch.float32).abs()
    w_max = torch.stack([w.detach().abs().amax(0).to(torch.float32) for w in weights]).amax(0)
    s = a.pow(alpha) / w_max.pow(1.0 - alpha)
    degenerate = (a == 0) | (w_max == 0) | ~torch.isfinite(s)
    s = s.clamp(min=_MIN_SCALE)
    return torch.where(degenerate, torch.ones_like(s), s)


def per_token_absmax_int8_fake(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Dynamic per-token symmetric fake quantization of activations ``[..., in]`` (same shape and dtype).

    Each token (row over the last dimension) gets ``scale = absmax / (2^(bits-1) - 1)``.
    """
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension")
    rows = x.reshape(-1, x.shape[-1])
    return fake_quantize(rows, GroupGrid(bits, None, symmetric=True)).reshape(x.shape)


def per_channel_int8_fake(w: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Per-output-channel symmetric fake quantization of a weight ``[out, in]`` (same shape and dtype)."""
    return fake_quantize(w, GroupGrid(bits, None, symmetric=True))


def smoothed_output_mse(x: torch.Tensor, weights: Sequence[torch.Tensor], act_absmax: torch.Tensor, alphas: Sequence[float], chunk: int = 1024) -> list[float]:
    """W8A8 output error for each migration strength in ``alphas``.

    For each alpha: mean over tokens and outputs of ``(Q(x / s) Q(W * s)^T - x W^T)^2``,
    concatenated over ``weights`` (all reading ``x`` ``[n_tokens, in]``), with ``s`` from
    :func:`smooth_scales`. Computed ``chunk`` tokens at a time, so memory stays at a few
    chunk-sized outputs however many tokens ``x`` has.
    """
    scales = [smooth_scales(act_absmax, weights, alpha) for alpha in alphas]
    errors = [0.0] * len(scales)
    rows = x.reshape(-1, x.shape[-1]).float()
    for part in rows.split(chunk):
        reference = [part @ w.T for w in weights]
        for i, s in enumerate(scales):  # re-quantizing the weights per chunk is cheap next to keeping every alpha's copy
            xq = per_token_absmax_int8_fake(part / s)
            errors[i] += sum(float((xq @ per_channel_int8_fake(w * s).T - r).pow_(2).sum()) for w, r in zip(weights, reference, strict=True))
    total = rows.shape[0] * sum(w.shape[0] for w in weights)
    return [e / total for e in errors]
