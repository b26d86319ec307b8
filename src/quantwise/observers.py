"""Calibration range search: pure functions over a histogram, plus observer classes.

Every activation observer but min/max and moving-average sees the data as a
histogram (2048 bins over the observed [min, max]) and picks a clipping range:

- ``histogram``: PyTorch's own L2 search over bin boundaries (HistogramObserver).
- ``percentile``: clip at the p-th and (100-p)-th percentiles.
- ``mse``: the range [t*min, t*max] that minimises the expected squared error,
  rounding noise (step**2 / 12 inside the range) plus clipping error outside it.

The same two searches back both the legacy (eager/FX) and the PT2E observers, so
they are written once here as functions of (histogram, min, max) and tested alone.
"""
from __future__ import annotations

import torch


def _bin_centers(lo: float, hi: float, bins: int) -> torch.Tensor:
    width = (hi - lo) / bins
    return lo + width * (torch.arange(bins, dtype=torch.float64) + 0.5)


def percentile_range(hist: torch.Tensor, lo: float, hi: float, percentile: float) -> tuple[float, float]:
    """Clip the histogram's two tails so that ``percentile`` % of the mass stays in range.

    ``percentile`` in (50, 100]; the range always contains 0 so that zero stays exact.
    """
    if hi <= lo or hist.sum() <= 0:
        return lo, hi
    cdf = torch.cumsum(hist.double(), 0) / hist.double().sum()
    width = (hi - lo) / hist.numel()
    tail = (100.0 - percentile) / 100.0
    lo_bin = int(torch.searchsorted(cdf, torch.tensor(tail, dtype=torch.float64)))
    hi_bin = int(torch.searchsorted(cdf, torch.tensor(1.0 - tail, dtype=torch.float64)))
    new_lo = lo + width * lo_bin
    new_hi = lo + width * (hi_bin + 1)
    return min(new_lo, 0.0), max(new_hi, 0.0)


def quantization_mse(hist: torch.Tensor, lo: float, hi: float, clip_lo: float, clip_hi: float, levels: int) -> float:
    """Expected squared error per sample of quantizing the histogram to ``levels`` steps in [clip_lo, clip_hi]."""
    centers = _bin_centers(lo, hi, hist.numel())
    weights = hist.double()
    step = (clip_hi - clip_lo) / (levels - 1)
    clipped = centers.clamp(clip_lo, clip_hi)
    inside = (centers >= clip_lo) & (centers <= clip_hi)
    err = torch.where(inside, torch.full_like(centers, step * step / 12.0), (centers - clipped) ** 2)
    return float((weights * err).sum() / weights.sum().clamp_min(1e-12))


def mse_range(hist: torch.Tensor, lo: float, hi: float, levels: int, steps: int = 100) -> tuple[float, float]:
    """Search the shrink factor t in (0, 1] of [t*lo, t*hi] that minimises ``quantization_mse``."""
    if hi <= lo or hist.sum() <= 0:
        return lo, hi
    lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
    best, best_err = (lo0, hi0), float("inf")
    for k in range(steps, 0, -1):
        t = k / steps
        err = quantization_mse(hist, lo, hi, lo0 * t, hi0 * t, levels)
        if err < best_err:
            best, best_err = (lo0 * t, hi0 * t), err
    return best


def histogram_variant(base: type, name: str) -> type:
    """A subclass of a HistogramObserver class (legacy or torchao) with our range search.

    Both frameworks call ``_non_linear_param_search`` from ``calculate_qparams``
    when the histogram holds data; we replace only that step.
    """

    def _non_linear_param_search(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = float(self.min_val), float(self.max_val)
        if name == "percentile":
            new_lo, new_hi = percentile_range(self.histogram, lo, hi, self.percentile)
        else:
            new_lo, new_hi = mse_range(self.histogram, lo, hi, self.quant_max - self.quant_min + 1)
        return torch.tensor(new_lo), torch.tensor(new_hi)

    def __init__(self, *args, percentile: float = 99.99, **kwargs) -> None:  # noqa: N807
        base.__init__(self, *args, **kwargs)
        self.percentile = percentile

    cls_name = f"{name.capitalize()}{base.__name__}"
    return type(cls_name, (base,), {"__init__": __init__, "_non_linear_param_search": _non_linear_param_search})
