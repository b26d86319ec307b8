"""Test helpers shared across files."""
from __future__ import annotations

import torch

from quantwise.evaluate.metrics import sqnr_db

__all__ = ["sqnr_db", "run"]


def run(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return module(*inputs)
