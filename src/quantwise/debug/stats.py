"""Pure numeric helpers of the layer debugger: error and range statistics, streamed over batches.

Definitions (the same in the table, the JSON and the docs):

- SQNR (dB) = 10 log10(sum ref^2 / sum (ref - test)^2) over every value of the subset.
- MSE = mean (ref - test)^2; max abs error = max |ref - test|.
- cosine = <ref, test> / (|ref| |test|) over the flattened subset (one number per layer,
  so a layer whose output has no batch dimension first, e.g. an LSTM, needs no special case).
- outlier ratio = fraction of values with |x - mean| > 6 std. Weights: over the whole
  tensor. Activations: mean and std of each evaluated batch (a one-pass definition).
- clipping fraction = fraction of float input values outside the quantized input range
  [scale (qmin - zp), scale (qmax - zp)], qmin/qmax being what the quantize op clamps to.
- grid SQNR / clipping share: float values (a layer's input, or its float output) are
  fake-quantized with the scale and zero point the quantized layer uses for them; the
  error energy splits exactly into a clipping part (values outside the range) and a
  rounding part (values inside). The clipping share is the clipped values' fraction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

OUTLIER_SIGMAS = 6.0


def db(signal: float, noise: float) -> float:
    """10 log10(signal / noise), inf for zero noise."""
    if noise <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """<a, b> of two flat float32 tensors (BLAS dot, fast; ample precision for dB figures)."""
    return float(torch.dot(a, b))


def outlier_count(x: torch.Tensor, sigmas: float = OUTLIER_SIGMAS) -> int:
    """Values farther than ``sigmas`` standard deviations from the mean."""
    x = x.detach().float().flatten()
    if x.numel() < 2:
        return 0
    std, mean = (float(v) for v in torch.std_mean(x))
    if std == 0:
        return 0
    return int(torch.count_nonzero(x > mean + sigmas * std)) + int(torch.count_nonzero(x < mean - sigmas * std))


def fake_quantize(x: torch.Tensor, scale: float, zero_point: int, qmin: int, qmax: int) -> torch.Tensor:
    """(clamp(round(x / scale) + zp, qmin, qmax) - zp) * scale: what a per-tensor quantize/dequantize pair returns."""
    return (torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale


def subsample(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """At most ``k`` values of ``x`` drawn uniformly without replacement (float32, flat)."""
    flat = x.detach().float().flatten()
    if flat.numel() <= k:
        return flat.clone()
    return flat[torch.randperm(flat.numel(), generator=generator)[:k]]


@dataclass
class ErrorStats:
    """How far a quantized layer's output is from the float one (see module docstring)."""

    sqnr_db: float
    mse: float
    cosine: float
    max_abs_error: float


class ErrorAccumulator:
    """Streams (reference, test) batches into ErrorStats."""

    def __init__(self) -> None:
        self.signal = self.noise = self.dot = self.test_sq = 0.0
        self.count = 0
        self.max_abs = 0.0

    def add(self, reference: torch.Tensor, test: torch.Tensor) -> None:
        ref, out = reference.detach().float().flatten(), test.detach().float().flatten()
        if ref.shape != out.shape:
            raise ValueError(f"reference and quantized outputs differ in size: {tuple(reference.shape)} vs {tuple(test.shape)}")
        diff = ref - out
        self.signal += _dot(ref, ref)
        self.noise += _dot(diff, diff)
        self.dot += _dot(ref, out)
        self.test_sq += _dot(out, out)
        self.count += ref.numel()
        if ref.numel():
            self.max_abs = max(self.max_abs, float(diff.abs().max()))

    def result(self) -> ErrorStats:
        norm = math.sqrt(self.signal * self.test_sq)
        cosine = self.dot / norm if norm > 0 else (1.0 if self.noise == 0 else 0.0)
        return ErrorStats(db(self.signal, self.noise), self.noise / max(self.count, 1), cosine, self.max_abs)


@dataclass
class QuantRange:
    """A per-tensor quantization grid: the range is [scale (qmin - zp), scale (qmax - zp)]."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int
    dtype: torch.dtype | None = None

    @property
    def lo(self) -> float:
        return self.scale * (self.qmin - self.zero_point)

    @property
    def hi(self) -> float:
        return self.scale * (self.qmax - self.zero_point)


@dataclass
class ActivationStats:
    """Float activation values (a layer's input or output) against the quantized range
    the layer uses for them.

    ``range_lo``/``range_hi`` are None for dynamically quantized inputs (their range is
    each batch's own min/max, so nothing is clipped); then the clipping and grid-SQNR
    fields are None too.
    """

    min: float
    max: float
    outlier_ratio: float
    range_lo: float | None
    range_hi: float | None
    clip_fraction: float | None
    grid_sqnr_db: float | None
    clip_error_share: float | None


class ActivationAccumulator:
    def __init__(self) -> None:
        self.lo, self.hi = math.inf, -math.inf
        self.count = self.outliers = self.clipped = 0
        self.signal = self.clip_energy = self.round_energy = 0.0
        self.grid: QuantRange | None = None

    def add(self, x: torch.Tensor, grid: QuantRange | None) -> None:
        x = x.detach().float()
        if x.numel() == 0:
            return
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        self.count += x.numel()
        self.outliers += outlier_count(x)
        if grid is None:
            return
        self.grid = grid
        x = x.flatten()
        outside = (x < grid.lo) | (x > grid.hi)
        err = x - fake_quantize(x, grid.scale, grid.zero_point, grid.qmin, grid.qmax)
        clipped_err = err[outside]
        total = _dot(err, err)
        clip = _dot(clipped_err, clipped_err)
        self.clipped += clipped_err.numel()
        self.clip_energy += clip
        self.round_energy += total - clip
        self.signal += _dot(x, x)

    def result(self) -> ActivationStats:
        n = max(self.count, 1)
        if self.grid is None:
            return ActivationStats(self.lo, self.hi, self.outliers / n, None, None, None, None, None)
        noise = self.clip_energy + self.round_energy
        share = self.clip_energy / noise if noise > 0 else 0.0
        return ActivationStats(
            self.lo, self.hi, self.outliers / n, self.grid.lo, self.grid.hi, self.clipped / n, db(self.signal, noise), share
        )


@dataclass
class WeightStats:
    """Float weights (BatchNorm folded in where the quantized layer folds it) against
    their dequantized int values. ``range_lo``/``range_hi``: the widest representable
    range over the channels (symmetric per-channel min/max observers clip nothing)."""

    min: float
    max: float
    outlier_ratio: float
    sqnr_db: float
    range_lo: float
    range_hi: float


def weight_stats(weight: torch.Tensor, dequantized: torch.Tensor, channel_ranges: torch.Tensor) -> WeightStats:
    w, dq = weight.detach().float().flatten(), dequantized.detach().float().flatten()
    diff = w - dq
    return WeightStats(
        float(w.min()), float(w.max()), outlier_count(w) / max(w.numel(), 1), db(_dot(w, w), _dot(diff, diff)),
        float(channel_ranges[:, 0].min()), float(channel_ranges[:, 1].max()),
    )
