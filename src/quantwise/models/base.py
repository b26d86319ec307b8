"""What a model spec resolves to: the float model, its data and how to score it."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from quantwise.data.base import TensorSet

Task = Literal["classification", "embedding"]


@dataclass
class ModelBundle:
    """A float model with the data quantwise needs to quantize and judge it.

    - ``calibration`` and ``evaluation`` never share a sample.
    - ``train`` (optional) is labelled or unlabelled data for quantization-aware
      training; it may overlap calibration, never evaluation.
    - ``task`` picks the fidelity metrics: classification (top-1 agreement with
      float, KL divergence, accuracy when ``evaluation.targets`` exist) or
      embedding (cosine to the float output).
    - ``downstream`` (optional) scores a model on a real task and returns named
      numbers, e.g. ``{"lee_pearson": 0.61}``.
    - ``primary`` names the metric ``compare`` ranks and warns on; ``tolerance``
      is the largest acceptable drop of it versus float (absolute units).
    """

    kind: ClassVar[str] = "classic"  # which methods take it (``methods.base.method_for``)
    name: str
    model: nn.Module
    calibration: TensorSet
    evaluation: TensorSet
    task: Task
    primary: str
    tolerance: float
    train: TensorSet | None = None
    downstream: Callable[[nn.Module], dict[str, float]] | None = None
    description: str = ""
    # builds the same architecture; with float weights is fine (artifacts overwrite them)
    build_arch: Callable[[], nn.Module] | None = None
    dynamic_batch: bool = True

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        return self.calibration.example(batch_size)

    def evaluate(self, model: nn.Module, reference: torch.Tensor | None = None, batch_size: int = 64,
                 context: int = 512, eval_tokens: int = 24576) -> dict[str, float]:
        """``model``'s metrics on the evaluation split, against float ``reference`` outputs where given
        (``context`` and ``eval_tokens`` are a language model's; a classic model has no use for them)."""
        from quantwise.evaluate.metrics import evaluate

        return evaluate(model, self, reference, batch_size)


def zoo_bundle(name: str, build: Callable[[], nn.Module], calibration: TensorSet, evaluation: TensorSet, unit: str, **fields) -> ModelBundle:
    """A zoo model's bundle: the float model ``build`` makes (``build`` also rebuilds the
    architecture for artifacts), its data, and a log line with the split sizes in ``unit``."""
    logging.getLogger("quantwise.models").info("%s: %d calibration / %d evaluation %s", name, len(calibration), len(evaluation), unit)
    return ModelBundle(name=name, model=build(), calibration=calibration, evaluation=evaluation, build_arch=build, **fields)
