"""The layer debugger on a causal language model (quantwise.llm recipes): per-Linear
isolated and propagated error on a few evaluation windows, perplexity at the output.

The LLM quantizer edits the model in place, so the float model is copied first (a second
copy of the weights in memory: about 0.55 GB for SmolLM2-135M). Recipes that migrate scales
between layers (AWQ, SmoothQuant) change what each Linear expects as input and as weight:
for them only the propagated error and the output are measured.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from quantwise.built import Built
from quantwise.config import DynamicActivation, WeightOnly, parse_recipe
from quantwise.data.base import Inputs, TensorSet
from quantwise.debug.capture import LayerWeights, QuantLayer
from quantwise.debug.capture_modules import ModuleBackend
from quantwise.debug.debugger import DebugOptions, measure
from quantwise.debug.float_side import Chain
from quantwise.debug.results import DebugReport
from quantwise.debug.stats import QuantRange
from quantwise.errors import QuantwiseError
from quantwise.evaluate.metrics import sqnr_db
from quantwise.algorithms import GroupQuant, rtn
from quantwise.methods.base import Quantized
from quantwise.progress import ProgressFn, no_progress
from quantwise.models.base import ModelBundle


def _chooses_codes(recipe: WeightOnly | DynamicActivation) -> str | None:
    """The algorithm that chose the codes instead of rounding to nearest (None for rtn)."""
    return recipe.algorithm if isinstance(recipe, WeightOnly) and recipe.algorithm in ("hqq", "gptq", "awq-gptq", "signround", "awq-signround") else None


def _migrates_scales(recipe: WeightOnly | DynamicActivation) -> bool:
    return (isinstance(recipe, WeightOnly) and recipe.algorithm in ("awq", "awq-gptq", "awq-signround")) or (isinstance(recipe, DynamicActivation) and recipe.smoothquant)


class LanguageModelBackend(ModuleBackend):
    """Quantized Linear modules found as in ModuleBackend; weights from the stored codes
    (the CPU int4 tensors cannot dequantize themselves)."""

    def __init__(self, model: nn.Module, float_model: nn.Module, chains: list[Chain], codes: dict, migrated: bool, nearest_of: str | None = None) -> None:
        super().__init__(model, float_model, chains, 8)
        self.codes, self.migrated = codes, migrated
        self.nearest_of = nearest_of  # the algorithm whose codes are compared with nearest rounding, or None
        self.float_modules = dict(float_model.named_modules())
        self._nearest: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def isolated(self, layer: QuantLayer, float_args: tuple, inputs: Inputs, grid: QuantRange | None) -> torch.Tensor:
        if self.migrated:
            raise RuntimeError("inputs were rescaled by scale migration")
        return super().isolated(layer, float_args, inputs, grid)

    def nearest(self, layer: QuantLayer, float_args: tuple) -> torch.Tensor | None:
        """The layer's output on its float input had its float weight been rounded to nearest
        (min/max grid of the same bits and groups), in the dtype the quantized layer runs in."""
        quant = self.codes.get(layer.call[0])
        if self.nearest_of is None or quant is None or self.migrated or not isinstance(quant, GroupQuant):
            return None
        name = layer.call[0]
        if not name.startswith("model.layers."):  # the output layer is int8 round-to-nearest whatever the algorithm
            return None
        if name not in self._nearest:
            module = self.float_modules[name]
            self._nearest[name] = (rtn(module.weight.detach().float(), quant.grid).dequantize(), module.bias)
        weight, bias = self._nearest[name]
        dtype = getattr(getattr(layer.handle, "weight", None), "dtype", torch.float32)
        dtype = dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32
        x = float_args[0].to(dtype)
        with torch.no_grad():
            return F.linear(x, weight.to(dtype), None if bias is None else bias.to(dtype)).float()

    def weights(self, layer: QuantLayer) -> LayerWeights | None:
        quant = self.codes.get(layer.call[0])
        if quant is None or self.migrated:
            return None
        grid = quant.grid
        lo = ((grid.qmin - quant.zero) * quant.scale).amin(1)
        hi = ((grid.qmax - quant.zero) * quant.scale).amax(1)
        return LayerWeights({"weight": quant.dequantize(torch.float32)}, torch.stack([lo, hi], 1))


def _perplexity_metrics(reference: torch.Tensor, test: torch.Tensor, data: TensorSet) -> dict[str, float]:
    """Perplexity of both models on the windows, their difference, per-token KL, top-1 flips
    and the logits' SQNR."""
    ids = data.inputs[0]
    vocab = reference.shape[-1]

    def ppl(logits: torch.Tensor) -> float:
        return math.exp(float(F.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1))))

    ref, out = reference.reshape(-1, vocab), test.reshape(-1, vocab)
    base, quant = ppl(reference), ppl(test)
    return {
        "sqnr_db": sqnr_db(reference, test),
        "perplexity_float": base,
        "perplexity": quant,
        "delta_perplexity": quant - base,
        "kl": float(F.kl_div(F.log_softmax(out, 1), F.log_softmax(ref, 1), log_target=True, reduction="batchmean")),
        "flip_rate": float((ref.argmax(1) != out.argmax(1)).float().mean()),
    }


def debug_language_model(spec: str, recipe: str, options: DebugOptions, context: int = 256, text: str | None = None, progress: ProgressFn = no_progress) -> DebugReport:
    from quantwise.config import LLM_PRESETS
    from quantwise.llm.model import load_language_model
    from quantwise.llm.quantize import check_recipe_fits, quantize_lm
    from quantwise.llm.runtime import materialize, run_dtype

    parsed = parse_recipe(recipe)
    if not isinstance(parsed, (WeightOnly, DynamicActivation)):
        raise QuantwiseError(f"recipe {recipe} is not for language models", f"use one of: {', '.join(LLM_PRESETS)}")
    lm = load_language_model(spec, text, progress=progress)
    lm.check_context(context)
    check_recipe_fits(lm.model, parsed)
    ids = lm.evaluation_windows(context, options.samples * context)
    float_model = copy.deepcopy(lm.model).eval()
    q = quantize_lm(lm, parsed, progress)
    model = materialize(q.model, q.layers, q.recipe)
    data = TensorSet((ids,), None, f"{len(ids)} windows x {context} tokens of {lm.text.description}")
    bundle = ModelBundle(lm.name, float_model, data, data, "language-model", "perplexity", 0.0)  # type: ignore[arg-type]
    migrated = _migrates_scales(parsed)
    notes = list(q.notes)
    if run_dtype(parsed) != torch.float32:
        notes.append(f"the quantized model runs in {str(run_dtype(parsed)).removeprefix('torch.')}: its errors include that activation rounding")
    if migrated:
        notes.append("scale migration (AWQ/SmoothQuant) rescales layer inputs and weights: only propagated errors and the output are comparable")
    quantized = Quantized(model, parsed, {}, {}, Built(parsed.kind), notes=notes)
    return measure(
        bundle, quantized, options, progress,
        make_backend=lambda qm, fm, chains: LanguageModelBackend(qm, fm, chains, q.layers, migrated, _chooses_codes(parsed)),
        output_metrics=_perplexity_metrics,
    )
