"""Language-model recipes (weight-only int4/int8, int8 dynamic activations, GGUF block formats):
the decoder blocks are quantized in place, one at a time, from the model's own calibration text
(``llm.quantize``), then made runnable (``llm.runtime``). The artifact is ``llm.artifact``'s."""
from __future__ import annotations

from typing import Any

from quantwise.config import DynamicActivation, GGUFWeights, WeightOnly
from quantwise.methods.base import register
from quantwise.progress import ProgressFn


@register(WeightOnly, DynamicActivation, GGUFWeights)
class LanguageModelMethod:
    models = "language"

    def quantize_bundle(self, bundle: Any, recipe: Any, progress: ProgressFn, batch_size: int) -> Any:
        """``bundle`` is a ``LanguageModel``; its float weights are released as each block is done.
        Returns an ``llm.quantize.QuantizedLM`` whose ``.model`` runs (torchao kernels)."""
        from quantwise.llm.quantize import quantize_lm
        from quantwise.llm.runtime import materialize

        q = quantize_lm(bundle, recipe, progress)
        materialize(q.model, q.layers, q.recipe)  # in place
        return q
