"""How close a quantized model stays to float, and how well it does its task.

Classification: top-1 accuracy (when labels exist), top-1 agreement with the float
model and the KL divergence of the output distribution from float's. Embedding:
cosine similarity to the float embedding (mean and worst). Every number is measured
on the evaluation split, never on calibration data.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from quantwise.data.base import TensorSet

if TYPE_CHECKING:
    from quantwise.models.base import ModelBundle

HIGHER_IS_BETTER = {"top1": True, "agreement": True, "cosine": True, "cosine_min": True, "kl": False}


def outputs(model: nn.Module, data: TensorSet, batch_size: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(*inputs).float() for inputs, _ in data.batches(batch_size)])


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(|ref|^2 / |ref - test|^2)."""
    noise = (reference - test).pow(2).sum().item()
    signal = reference.pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def fidelity(task: str, reference: torch.Tensor, test: torch.Tensor, targets: torch.Tensor | None) -> dict[str, float]:
    result = {"sqnr_db": sqnr_db(reference, test)}
    if task == "classification":
        result["agreement"] = (reference.argmax(1) == test.argmax(1)).float().mean().item()
        result["kl"] = F.kl_div(F.log_softmax(test, 1), F.log_softmax(reference, 1), log_target=True, reduction="batchmean").item()
        if targets is not None:
            result["top1"] = (test.argmax(1) == targets).float().mean().item()
    else:
        cos = F.cosine_similarity(reference.flatten(1), test.flatten(1), dim=1)
        result["cosine"] = cos.mean().item()
        result["cosine_min"] = cos.min().item()
    return result


def evaluate(model: nn.Module, bundle: ModelBundle, reference: torch.Tensor | None = None, batch_size: int = 64) -> dict[str, float]:
    """All metrics of ``model`` on the bundle's evaluation split, plus its downstream scores."""
    out = outputs(model, bundle.evaluation, batch_size)
    ref = out if reference is None else reference
    result = fidelity(bundle.task, ref, out, bundle.evaluation.targets)
    if bundle.downstream is not None:
        with torch.no_grad():
            result.update(bundle.downstream(model))
    return result
