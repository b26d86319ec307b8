"""Choosing a block format's parameters (and nearest codes) for a weight.

Two rules, both vectorised over every block of a tensor:

- :func:`reference`: llama.cpp's own quantizer without an importance matrix. For Q8_0, Q4_0,
  Q5_0, Q4_1 and Q5_1 it is the reference code (``quantize_row_q*_ref`` in ggml-quants.c)
  reproduced bit for bit (tested against ``gguf.quants.quantize``, which mirrors it). For the
  K-quants it follows the reference algorithm (``make_qkx2_quants`` with weights
  ``rms(x) + |x|`` for Q4_K / Q5_K, ``make_qx_quants`` for Q6_K, then 6-bit / int8 sub-block
  scales), computed in a different summation order, so a tie may round the other way.
- :func:`searched`: a weighted least-squares search of each (sub-)block's scale (and min) over
  candidate grids, weights ``importance[col] * sqrt(sigma^2 + x^2)`` (llama.cpp's imatrix
  weighting; ``importance`` is the mean squared input of each column on calibration data,
  the diagonal of GPTQ's Hessian), then the nearest codes on the grid as it is stored (fp16
  scales, quantized sub-block scales).
"""
from __future__ import annotations

import torch

from .formats import BlockFormat, BlockParams, codes_for

__all__ = ["reference", "searched"]

_EPS = 1e-15  # llama.cpp's GROUP_MAX_EPS


def _blocks(w: torch.Tensor, n: int) -> torch.Tensor:
    return w.detach().to(torch.float32).reshape(-1, n)


def _inv(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.zeros_like(d), 1.0 / torch.where(d == 0, torch.ones_like(d), d))


def _roundf(x: torch.Tensor) -> torch.Tensor:
    """C's roundf (halves away from zero)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _legacy_reference(w: torch.Tensor, fmt: BlockFormat) -> tuple[torch.Tensor, BlockParams]:
    rows = w.shape[0]
    x = _blocks(w, 32)
    if fmt.name == "Q8_0":
        d = x.abs().amax(-1, keepdim=True) / 127
        q = _roundf(x * _inv(d))
        return q.to(torch.int8).reshape(rows, -1), BlockParams(fmt, d.to(torch.float16).reshape(rows, -1))
    if not fmt.affine:  # Q4_0 / Q5_0: d = (signed value of largest magnitude) / -2^(b-1)
        half = fmt.offset
        at = x.abs().argmax(-1, keepdim=True)
        d = torch.gather(x, -1, at) / -half
        q = torch.trunc(x * _inv(d) + (half + 0.5)).clamp_(0, fmt.qmax)
        return q.to(torch.uint8).reshape(rows, -1), BlockParams(fmt, d.to(torch.float16).reshape(rows, -1))
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)  # Q4_1 / Q5_1
    d = (hi - lo) / fmt.qmax
    q = torch.trunc((x - lo) * _inv(d) + 0.5).clamp_(0, fmt.qmax)
    return q.to(torch.uint8).reshape(rows, -1), BlockParams(fmt, d.to(torch.float16).reshape(rows, -1), lo.to(torch.float16).reshape(rows, -1))


def _symmetric_search(x: torch.Tensor, weight: torch.Tensor, nmax: int, steps: range = range(-9, 10)) -> torch.Tensor:
    """``make_qx_quants``: the scale of each row of ``x`` ``[n, k]`` minimising the weighted
    error over codes ``-nmax..nmax-1`` from candidate inverse scales ``-(nmax + 0.1 is) / max``."""
    amax, at = x.abs().max(-1, keepdim=True)
    signed_max = torch.gather(x, -1, at)
    safe_max = torch.where(amax < _EPS, torch.ones_like(signed_max), signed_max)
    best_scale = torch.zeros(x.shape[0], 1)
    best = torch.full((x.shape[0], 1), -1.0)
    for is_ in [0, *[s for s in steps if s != 0]]:
        iscale = -(nmax + 0.1 * is_) / safe_max
        ql = torch.round(iscale * x).clamp_(-nmax, nmax - 1)
        sumlx = (weight * x * ql).sum(-1, keepdim=True)
        suml2 = (weight * ql * ql).sum(-1, keepdim=True)
        ok = suml2 > 0
        score = torch.where(ok, sumlx * sumlx / torch.where(ok, suml2, torch.ones_like(suml2)), torch.full_like(suml2, -1.0))
        better = score > best
        scale = torch.where(ok, sumlx / torch.where(ok, suml2, torch.ones_like(suml2)), torch.zeros_like(suml2))
        best_scale = torch.where(better, scale, best_scale)
        best = torch.where(better, score, best)
    return torch.where(amax < _EPS, torch.zeros_like(best_scale), best_scale).squeeze(-1)


def _affine_search(x: torch.Tensor, weight: torch.Tensor, nmax: int, rmin: float, rdelta: float, nstep: int,
                   clamp_min: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``make_qkx2_quants``: (scale, low) per row of ``x`` with ``x ~ scale * q + low``, ``q`` in
    0..nmax, from weighted least-squares fits of the codes of candidate scales. ``clamp_min``
    keeps ``low <= 0`` (the K-quants store ``-low`` unsigned)."""
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    if clamp_min:
        lo = lo.clamp(max=0)
    span = hi - lo
    flat = span == 0
    span = torch.where(flat, torch.ones_like(span), span)
    sum_w, sum_x = weight.sum(-1, keepdim=True), (weight * x).sum(-1, keepdim=True)
    scale, low = span / nmax, lo.clone()
    ql = torch.round((nmax / span) * (x - lo)).clamp_(0, nmax)
    best = (weight * (scale * ql + low - x) ** 2).sum(-1, keepdim=True)
    for is_ in range(nstep + 1):
        ql = torch.round(((rmin + rdelta * is_ + nmax) / span) * (x - lo)).clamp_(0, nmax)
        sum_l, sum_l2, sum_xl = (weight * ql).sum(-1, keepdim=True), (weight * ql * ql).sum(-1, keepdim=True), (weight * ql * x).sum(-1, keepdim=True)
        det = sum_w * sum_l2 - sum_l * sum_l
        ok = det > 0
        safe_det = torch.where(ok, det, torch.ones_like(det))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe_det
        this_low = (sum_l2 * sum_x - sum_l * sum_xl) / safe_det
        if clamp_min:
            pos = this_low > 0
            this_low = torch.where(pos, torch.zeros_like(this_low), this_low)
            this_scale = torch.where(pos, sum_xl / torch.where(sum_l2 > 0, sum_l2, torch.ones_like(sum_l2)), this_scale)
        err = (weight * (this_scale * ql + this_low - x) ** 2).sum(-1, keepdim=True)
        better = ok & (err < best)
        scale, low, best = torch.where(better, this_scale, scale), torch.where(better, this_low, low), torch.where(better, err, best)
    scale = torch.where(flat, torch.zeros_like(scale), scale)
    return scale.squeeze(-1), low.squeeze(-1)


def _k_params(fmt: BlockFormat, rows: int, scale: torch.Tensor, low: torch.Tensor | None) -> BlockParams:
    """Quantize sub-block scales (and mins) against fp16 super-block ones, as llama.cpp's
    reference does. ``scale``/``low`` are ``[rows * n_super, n_sub]``."""
    n_super = scale.shape[0] // rows
    if fmt.name == "Q6_K":
        amax, at = scale.abs().max(-1, keepdim=True)
        signed = torch.gather(scale, -1, at)
        zero = amax < _EPS
        iscale = torch.where(zero, torch.zeros_like(signed), -128.0 / torch.where(zero, torch.ones_like(signed), signed))
        d = torch.where(zero, torch.zeros_like(signed), _inv(iscale)).to(torch.float16)
        sc = torch.round(iscale * scale).clamp_(-128, 127).to(torch.int8)
        return BlockParams(fmt, d.reshape(rows, n_super), sc=sc.reshape(rows, n_super, -1))
    mins = -low  # >= 0
    max_scale, max_min = scale.amax(-1, keepdim=True), mins.amax(-1, keepdim=True)
    inv_scale = torch.where(max_scale > 0, 63.0 / torch.where(max_scale > 0, max_scale, torch.ones_like(max_scale)), torch.zeros_like(max_scale))
    inv_min = torch.where(max_min > 0, 63.0 / torch.where(max_min > 0, max_min, torch.ones_like(max_min)), torch.zeros_like(max_min))
    sc = torch.round(inv_scale * scale).clamp_(0, 63).to(torch.uint8)
    mn = torch.round(inv_min * mins).clamp_(0, 63).to(torch.uint8)
    d, dmin = (max_scale / 63).to(torch.float16), (max_min / 63).to(torch.float16)
    return BlockParams(fmt, d.reshape(rows, n_super), dmin.reshape(rows, n_super), sc.reshape(rows, n_super, -1), mn.reshape(rows, n_super, -1))


def _k_search(w: torch.Tensor, fmt: BlockFormat, weight: torch.Tensor) -> BlockParams:
    rows = w.shape[0]
    x = _blocks(w, fmt.sub)
    wt = weight.reshape(-1, fmt.sub)
    if fmt.name == "Q6_K":
        scale = _symmetric_search(x, wt, 32)
        return _k_params(fmt, rows, scale.reshape(-1, fmt.block // fmt.sub), None)
    nmax = fmt.qmax
    rmin, nstep = (-1.0, 20) if fmt.bits == 4 else (-0.5, 15)
    scale, low = _affine_search(x, wt, nmax, rmin, 0.1, nstep, clamp_min=True)
    n_sub = fmt.block // fmt.sub
    return _k_params(fmt, rows, scale.reshape(-1, n_sub), low.reshape(-1, n_sub))


def reference(w: torch.Tensor, fmt: BlockFormat) -> tuple[torch.Tensor, BlockParams]:
    """llama.cpp's quantizer without an importance matrix: (codes, parameters)."""
    _check(w, fmt)
    if not fmt.super_block:
        return _legacy_reference(w, fmt)
    x = _blocks(w, fmt.sub)
    if fmt.name == "Q6_K":
        weight = x * x  # make_qx_quants(rmse_type=1)
    else:
        weight = torch.sqrt((x * x).mean(-1, keepdim=True)) + x.abs()
    params = _k_search(w, fmt, weight.reshape(w.shape))
    return codes_for(w, params), params


def searched(w: torch.Tensor, fmt: BlockFormat, importance: torch.Tensor | None = None) -> tuple[torch.Tensor, BlockParams]:
    """Importance-weighted scale (and min) search, then the nearest codes on the stored grid.

    ``importance`` ``[cols]``: mean squared input per column (``None``: all columns alike)."""
    _check(w, fmt)
    rows, cols = w.shape
    x = w.detach().to(torch.float32)
    imp = torch.ones(cols) if importance is None else importance.detach().to(torch.float32).clamp(min=0)
    if imp.shape != (cols,):
        raise ValueError(f"importance must be [{cols}], got {tuple(imp.shape)}")
    imp = imp / imp.mean().clamp(min=1e-30)
    sigma2 = (x * x).mean(-1, keepdim=True)
    weight = imp.unsqueeze(0) * torch.sqrt(sigma2 + x * x)
    if fmt.super_block:
        params = _k_search(x, fmt, weight)
    else:
        xb, wb = _blocks(x, 32), weight.reshape(-1, 32)
        if fmt.affine:
            scale, low = _affine_search(xb, wb, fmt.qmax, -0.9, 0.05, 36, clamp_min=False)
            params = BlockParams(fmt, scale.to(torch.float16).reshape(rows, -1), low.to(torch.float16).reshape(rows, -1))
        else:
            nmax = 128 if fmt.name == "Q8_0" else fmt.offset
            scale = _symmetric_search(xb, wb, nmax)
            params = BlockParams(fmt, scale.to(torch.float16).reshape(rows, -1))
    return codes_for(x, params), params


def _check(w: torch.Tensor, fmt: BlockFormat) -> None:
    if w.dim() != 2 or not w.is_floating_point():
        raise ValueError(f"expected a 2-D float weight, got {w.dtype} {tuple(w.shape)}")
    if not fmt.fits(w.shape[1]):
        raise ValueError(f"{fmt.name} needs rows whose length is a multiple of {fmt.block}; this weight's rows have {w.shape[1]}")
    if not torch.isfinite(w).all():
        raise ValueError("the weight holds non-finite values")
