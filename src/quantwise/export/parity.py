"""Does an exported file compute what the quantized PyTorch model computes?

Measured on held-out (evaluation) inputs against the quantized PyTorch model and against
float: max absolute difference, mean cosine, and top-1 agreement for classifiers. The
tolerance is stated with the result; an export outside it fails.

Deep models with dynamic (per-token) activation quantization are chaotic at float-rounding
level: on minilm-l6, scaling the embedding output by (1 + 1e-6) moves the PyTorch int8
model's own output to cosine 0.9978 of where it was, because every flipped rounding moves
later quantization scales and flips more. No runtime that differs from PyTorch in the last
bit of a LayerNorm or softmax can then reach cosine 0.999 to the PyTorch int8 model. Such an
export still passes if it is as close to float as the PyTorch int8 model is (within
``NOISE_MARGIN``) and no farther from that model than two independent draws of its own
quantization noise would be (1 - cosine <= 2 x the int8 model's own 1 - cosine to float).
A wrong translation (missing bias, wrong scales, coarser activation quantization) is
farther from float and fails.
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
NOISE_MARGIN = 5e-4  # embeddings: how much farther from float than the int8 model the export may be


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
    quantized_vs_float: Agreement | None = None  # the PyTorch int8 model's own error

    @property
    def within_noise(self) -> bool:
        """Embeddings: as faithful to float as the int8 model, and within its quantization noise."""
        qf, q = self.quantized_vs_float, self.vs_quantized
        if qf is None or q.agreement is not None:
            return False
        return self.vs_float.cosine >= qf.cosine - NOISE_MARGIN and 1 - q.cosine <= 2 * (1 - qf.cosine)

    @property
    def passed(self) -> bool:
        q = self.vs_quantized
        if q.agreement is not None:
            return q.agreement >= MIN_AGREEMENT
        return q.cosine >= MIN_COSINE or self.within_noise

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "vs_quantized": asdict(self.vs_quantized), "vs_float": asdict(self.vs_float),
                "quantized_vs_float": None if self.quantized_vs_float is None else asdict(self.quantized_vs_float),
                "tolerance": self.tolerance, "passed": self.passed, "within_noise": self.within_noise}


def tolerance(classification: bool) -> str:
    if classification:
        return f"top-1 agreement with the quantized PyTorch model >= {MIN_AGREEMENT}"
    return (f"mean cosine to the quantized PyTorch model >= {MIN_COSINE}, or within its quantization noise "
            f"(cosine to float within {NOISE_MARGIN} of the int8 model's, 1 - cosine to it <= 2 x its own to float)")


def check(run: Callable[..., torch.Tensor], quantized: Callable[..., torch.Tensor], float_model: Callable[..., torch.Tensor],
          data: TensorSet, classification: bool, batch_size: int = 32) -> Parity:
    outs: dict[str, list[torch.Tensor]] = {"export": [], "quantized": [], "float": []}
    with torch.no_grad():
        for inputs, _ in data.batches(batch_size):
            outs["export"].append(run(*inputs).float())
            outs["quantized"].append(quantized(*inputs).float())
            outs["float"].append(float_model(*inputs).float())
    e, q, f = (torch.cat(outs[k]) for k in ("export", "quantized", "float"))
    return Parity(len(data), Agreement.of(q, e, classification), Agreement.of(f, e, classification), tolerance(classification),
                  Agreement.of(f, q, classification))
