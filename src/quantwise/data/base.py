"""Datasets as model inputs: a tuple of tensors batched on dim 0, optional targets."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

Inputs = tuple[torch.Tensor, ...]


@dataclass
class TensorSet:
    """Model inputs batched along dim 0, with optional targets (class labels).

    ``description`` says where the samples came from; reports print it so a
    reader can check that calibration and evaluation data are disjoint.
    """

    inputs: Inputs
    targets: torch.Tensor | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("a TensorSet needs at least one input tensor")
        n = self.inputs[0].shape[0]
        for t in self.inputs[1:]:
            if t.shape[0] != n:
                raise ValueError(f"input tensors disagree on the number of samples: {n} vs {t.shape[0]}")
        if self.targets is not None and self.targets.shape[0] != n:
            raise ValueError(f"targets have {self.targets.shape[0]} samples, inputs have {n}")

    def __len__(self) -> int:
        return int(self.inputs[0].shape[0])

    def select(self, index: torch.Tensor | slice) -> TensorSet:
        return TensorSet(
            tuple(t[index] for t in self.inputs),
            None if self.targets is None else self.targets[index],
            self.description,
        )

    def take(self, n: int) -> TensorSet:
        return self.select(slice(0, min(n, len(self))))

    def batches(self, batch_size: int) -> Iterator[tuple[Inputs, torch.Tensor | None]]:
        for start in range(0, len(self), batch_size):
            part = self.select(slice(start, start + batch_size))
            yield part.inputs, part.targets

    def example(self, batch_size: int = 1) -> Inputs:
        """The first ``batch_size`` samples, as inputs for tracing or timing."""
        return self.take(batch_size).inputs
