"""Quantized transfer learning: a frozen quantized backbone with a trainable float head.

The backbone is an int8 model (fresh from ``quantize`` or reloaded from an artifact);
only the head's parameters get gradients, so training costs little more than
running the backbone once per batch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from quantwise.data.base import TensorSet
from quantwise.progress import ProgressFn, no_progress

log = logging.getLogger(__name__)


class QuantizedBackbone(nn.Module):
    """``head(backbone(x))`` with the quantized backbone frozen (no gradients through int8 ops)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.backbone(*inputs)
        return self.head(features.flatten(1))


@dataclass(frozen=True)
class FitResult:
    steps: int
    first_loss: float
    last_loss: float


def fit_head(model: QuantizedBackbone, train: TensorSet, steps: int = 200, batch_size: int = 64, lr: float = 1e-3, progress: ProgressFn = no_progress) -> FitResult:
    """Train only ``model.head`` with cross-entropy on a labelled set."""
    if train.targets is None:
        raise ValueError("fit_head needs labelled data")
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    losses = []
    model.head.train()
    for _ in progress("training the head", range(steps), steps):
        batch = train.select(torch.randint(0, len(train), (batch_size,), generator=generator))
        loss = F.cross_entropy(model(*batch.inputs), batch.targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    model.head.eval()
    log.info("head loss %.4f -> %.4f", losses[0], losses[-1])
    return FitResult(steps, losses[0], losses[-1])
