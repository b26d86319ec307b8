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

Classifiers have the same problem on near-ties: on efficientnet-lite0's evaluation crops the
PyTorch int8 model run eagerly and run compiled (both PyTorch, both correct int8) agree on top-1
for only 99.6 % of the crops, because a tenth of the crops have a top-1/top-2 logit margin under
0.2 and the two differ by ~0.16 per logit (rounding of requantized activations). So below
``MIN_AGREEMENT`` a classifier export still passes when its logits match the int8 model's
(cosine >= ``MIN_COSINE``), every flipped sample is a near-tie the measured difference explains
(the int8 model's own gap between the two classes is smaller than the typical difference
between the two, the median over samples of each sample's max |diff|),
and it agrees with float no worse than the int8 model does (within ``AGREEMENT_MARGIN``).
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
NOISY_FLOOR = 0.99  # embeddings: the within-noise rule applies only to int8 models at least this close to float
AGREEMENT_MARGIN = 0.01  # classifiers: how much lower the export's top-1 agreement with float may be


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
    unexplained_flips: int | None = None  # classifiers: top-1 flips that are not near-ties (see the module docstring)

    @property
    def within_noise(self) -> bool:
        """Embeddings: as faithful to float as the int8 model, and within its quantization noise.
        Classifiers: the same logits, flips only on near-ties, and as faithful to float."""
        qf, q = self.quantized_vs_float, self.vs_quantized
        if qf is None:
            return False
        if q.agreement is not None:
            return (q.cosine >= MIN_COSINE and self.unexplained_flips == 0 and qf.agreement is not None
                    and self.vs_float.agreement >= qf.agreement - AGREEMENT_MARGIN)
        # only for an int8 model close to float: a broken one (cosine 0.3) would make "twice its noise" vacuous
        return qf.cosine >= NOISY_FLOOR and self.vs_float.cosine >= qf.cosine - NOISE_MARGIN and 1 - q.cosine <= 2 * (1 - qf.cosine)

    @property
    def passed(self) -> bool:
        q = self.vs_quantized
        if q.agreement is not None:
            return q.agreement >= MIN_AGREEMENT or self.within_noise
        return q.cosine >= MIN_COSINE or self.within_noise

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "vs_quantized": asdict(self.vs_quantized), "vs_float": asdict(self.vs_float),
                "quantized_vs_float": None if self.quantized_vs_float is None else asdict(self.quantized_vs_float),
                "tolerance": self.tolerance, "passed": self.passed, "within_noise": self.within_noise, "unexplained_flips": self.unexplained_flips}


def tolerance(classification: bool) -> str:
    if classification:
        return (f"top-1 agreement with the quantized PyTorch model >= {MIN_AGREEMENT}, or near-ties only "
                f"(logit cosine to it >= {MIN_COSINE}, each flip a near-tie within the median max |diff|, agreement with float within {AGREEMENT_MARGIN} of the int8 model's)")
    return (f"mean cosine to the quantized PyTorch model >= {MIN_COSINE}, or within its quantization noise "
            f"(int8 model at cosine >= {NOISY_FLOOR} to float; cosine to float within {NOISE_MARGIN} of the int8 model's, 1 - cosine to it <= 2 x its own to float)")


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
                  Agreement.of(f, q, classification), unexplained_flips(q, e) if classification else None)


def unexplained_flips(quantized: torch.Tensor, export: torch.Tensor) -> int:
    """Samples whose top-1 differs although the int8 model's gap between the two classes exceeds
    the typical difference between the two models (median over samples of the max |logit
    difference|): flips that near-tie rounding does not explain."""
    q, e = quantized.float().flatten(1), export.float().flatten(1)
    a, b = q.argmax(1), e.argmax(1)
    rows = torch.arange(len(q))
    gap = q[rows, a] - q[rows, b]
    typical = (q - e).abs().amax(1).median()
    # int8 logits lie on a grid: a gap of as many codes as the typical difference must not
    # count as larger because the two differ in the last float bit
    beyond = (gap > typical) & ~torch.isclose(gap, typical.expand_as(gap), rtol=1e-5, atol=0.0)
    return int(((a != b) & beyond).sum())
