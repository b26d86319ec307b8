"""The outcome of a learned-rounding run, shared by AdaRound and SignRound."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .spec import dequantize

__all__ = ["RoundingResult", "Progress"]

Progress = Callable[[int, int, float], None]
"""``progress(step, total, loss)``: ``step`` counts finished iterations (1-based), ``loss`` is
the training loss of the last mini-batch (AdaRound: its normalised loss with the
regulariser; SignRound: the mini-batch MSE)."""


@dataclass
class RoundingResult:
    """Learned codes for each weight, on the grid in ``scales``/``zeros``.

    ``codes[name]`` is an integer-valued float32 tensor of the weight's shape in
    ``[qmin, qmax]``; ``w_hat = (codes - zeros[name]) * scales[name]``. ``scales`` and
    ``zeros`` are the caller's tensors unchanged, except after SignRound's opt-in learned
    clipping, which returns a new grid. ``mse`` is the calibration reconstruction MSE with
    the learned codes, ``rtn_mse`` with round-to-nearest codes on the caller's grid (both
    over all calibration samples, or over the same evenly spread subset where SignRound's
    ``check_samples`` asks for one). ``seconds`` is the wall time of the whole call.
    """

    codes: dict[str, torch.Tensor]
    scales: dict[str, torch.Tensor]
    zeros: dict[str, torch.Tensor]
    mse: float
    rtn_mse: float
    iterations: int
    seconds: float

    @property
    def mse_ratio(self) -> float:
        """``mse / rtn_mse`` (below 1 means learned rounding beats RTN on the calibration data)."""
        return self.mse / self.rtn_mse if self.rtn_mse > 0 else (1.0 if self.mse == 0 else float("inf"))

    def dequantized(self) -> dict[str, torch.Tensor]:
        """``{name: (codes - zero) * scale}`` in float32."""
        return {k: dequantize(q, self.scales[k], self.zeros[k]) for k, q in self.codes.items()}
