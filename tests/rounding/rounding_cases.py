"""Synthetic layers on which learned rounding has something to gain over round-to-nearest.

Inputs have correlated, anisotropic columns (``z @ A``) and a few outlier columns scaled
up, so the output error depends strongly on *which* weights round up or down, which is
what AdaRound and SignRound exploit. Every case is seeded; calibration and held-out
inputs are separate draws from the same distribution.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from quantwise.algorithms.grid import GroupGrid, qparams_minmax
from quantwise.rounding import RoundedWeight, float_targets, reconstruction_mse, rtn_codes

__all__ = [
    "Case", "linear_case", "conv_case", "block_case", "per_row_spec", "heldout_mse", "heldout_ratio", "rtn_weights",
]


@dataclass
class Case:
    specs: list[RoundedWeight]
    forward: object
    inputs: torch.Tensor
    targets: torch.Tensor
    test_inputs: torch.Tensor
    test_targets: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # other tensors of the case (biases)


def per_row_spec(name: str, w: torch.Tensor, bits: int = 4, symmetric: bool = False) -> RoundedWeight:
    """A per-output-channel min/max grid (the project's RTN parameters) for ``w`` of any shape."""
    grid = GroupGrid(bits, None, symmetric)
    scale, zero = qparams_minmax(w.reshape(w.shape[0], -1), grid)
    tail = (1,) * (w.dim() - 1)
    return RoundedWeight(name, w, scale.reshape(-1, *tail), zero.reshape(-1, *tail), grid.qmin, grid.qmax)


def _features(gen: torch.Generator, n: int, mix: torch.Tensor, outliers: torch.Tensor) -> torch.Tensor:
    x = torch.randn(n, mix.shape[0], generator=gen) @ mix
    x[:, outliers] *= 8.0
    return x


def _mixing(gen: torch.Generator, dim: int, n_outliers: int) -> tuple[torch.Tensor, torch.Tensor]:
    # a random mixing with decaying singular values: strongly anisotropic, correlated columns
    mix = torch.randn(dim, dim, generator=gen) / dim**0.5
    mix = mix * torch.logspace(0, -1.5, dim).unsqueeze(1)
    outliers = torch.randperm(dim, generator=gen)[:n_outliers]
    return mix, outliers


def _finish(specs, forward, x, x_test) -> Case:
    return Case(specs, forward, x, float_targets(forward, specs, x), x_test, float_targets(forward, specs, x_test))


def linear_case(
    out_features: int = 64, in_features: int = 128, n: int = 512, bits: int = 4, symmetric: bool = False, seed: int = 0
) -> Case:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=gen) * 0.05
    mix, outliers = _mixing(gen, in_features, 4)
    x, x_test = _features(gen, n, mix, outliers), _features(gen, 2048, mix, outliers)
    spec = per_row_spec("fc", w, bits, symmetric)
    return _finish([spec], lambda p, x: x @ p["fc"].T, x, x_test)


def conv_case(n: int = 128, seed: int = 0) -> Case:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(16, 8, 3, 3, generator=gen) * 0.1
    mix, outliers = _mixing(gen, 8, 1)
    gain = torch.ones(1, 8, 1, 1)
    gain[0, outliers] = 8.0

    def images(m: int) -> torch.Tensor:
        z = torch.randn(m, 8, 10, 10, generator=gen)
        z = F.avg_pool2d(z, 3, stride=1, padding=1) * 3  # spatially correlated
        return torch.einsum("nchw,cd->ndhw", z, mix) * gain  # and across channels

    spec = per_row_spec("conv", w)
    return _finish([spec], lambda p, x: F.conv2d(x, p["conv"], padding=1), images(n), images(512))


def block_case(n: int = 512, seed: int = 0) -> Case:
    """Linear(64 -> 128), ReLU, Linear(128 -> 64), both weights 4-bit per row."""
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(128, 64, generator=gen) * 64**-0.5
    b1 = torch.randn(128, generator=gen) * 0.1
    w2 = torch.randn(64, 128, generator=gen) * 128**-0.5
    mix, outliers = _mixing(gen, 64, 3)
    x, x_test = _features(gen, n, mix, outliers), _features(gen, 2048, mix, outliers)

    def forward(p, x):
        return torch.relu(x @ p["fc1"].T + b1) @ p["fc2"].T

    case = _finish([per_row_spec("fc1", w1), per_row_spec("fc2", w2)], forward, x, x_test)
    case.parts["b1"] = b1
    return case


def heldout_mse(case: Case, weights: dict[str, torch.Tensor]) -> float:
    """Output MSE on the held-out inputs (never seen by the rounding)."""
    return reconstruction_mse(case.forward, weights, case.test_inputs, case.test_targets)


def rtn_weights(case: Case) -> dict[str, torch.Tensor]:
    return {s.name: s.dequantize(rtn_codes(s)) for s in case.specs}


def heldout_ratio(case: Case, weights: dict[str, torch.Tensor]) -> float:
    """Held-out output MSE of ``weights`` divided by that of round-to-nearest."""
    return heldout_mse(case, weights) / heldout_mse(case, rtn_weights(case))
