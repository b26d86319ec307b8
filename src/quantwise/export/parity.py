"""Does an exported file compute what the quantized PyTorch model computes?

Measured on held-out (evaluation) inputs against the quantized PyTorch model and against
float: max absolute difference, mean cosine, and top-1 agreement for classifiers. The
tolerance is stated with the result; an export outside it fails.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from quantwise.data.base import TensorSet

MIN_AGREEMENT = 0.99  # classifiers: top-1 agreement with the quantized PyTorch model
MIN_COSINE = 0.999  # embeddings: mean cosine to the quantized PyTorch model's output


@dataclass(frozen=True)
class Agreement:
    max_abs: float
    cosine: float
    agreement: float | None  # top-1, classifiers only

    @staticmethod
    def of(reference: torch.Tensor, test: torch.Tensor, classification: bool) -> Agreement:
        ref, out = reference.float().flatten(1), test.float().flatten(1)
        return Agreement(
            max_abs=(ref - out).abs().max().item(),
            cosine=F.cosine_similarity(ref, out, dim=1).mean().item(),
            agreement=(reference.argmax(1) == test.argmax(1)).float().mean().item() if classification else None,
        )


@dataclass(frozen=True)
class Parity:
    samples: int
    vs_quantized: Agreement
    vs_float: Agreement
    tolerance: str

    @property
    def passed(self) -> bool:
        q = self.vs_quantized
        if q.agreement is not None:
            return q.agreement >= MIN_AGREEMENT
        return q.cosine >= MIN_COSINE

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "vs_quantized": asdict(self.vs_quantized), "vs_float": asdict(self.vs_float),
                "tolerance": self.tolerance, "passed": self.passed}


def tolerance(classification: bool) -> str:
    return f"top-1 agreement with the quantized PyTorch model >= {MIN_AGREEMENT}" if classification else f"mean cosine to the quantized PyTorch model >= {MIN_COSINE}"


def check(run: Callable[..., torch.Tensor], quantized: Callable[..., torch.Tensor], float_model: Callable[..., torch.Tensor],
          data: TensorSet, classification: bool, batch_size: int = 32) -> Parity:
    outs: dict[str, list[torch.Tensor]] = {"export": [], "quantized": [], "float": []}
    with torch.no_grad():
        for inputs, _ in data.batches(batch_size):
            outs["export"].append(run(*inputs).float())
            outs["quantized"].append(quantized(*inputs).float())
            outs["float"].append(float_model(*inputs).float())
    e, q, f = (torch.cat(outs[k]) for k in ("export", "quantized", "float"))
    return Parity(len(data), Agreement.of(q, e, classification), Agreement.of(f, e, classification), tolerance(classification))
