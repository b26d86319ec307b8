"""Language-model recipes (weight-only int4/int8, int8 dynamic activations, GGUF block formats):
the decoder blocks are quantized in place, one at a time, from the model's own calibration text
(``llm.quantize``), then made runnable (``llm.runtime``). The artifact is ``llm.artifact``'s."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from quantwise.config import DynamicActivation, GGUFWeights, WeightOnly
from quantwise.errors import QuantwiseError
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

    def save(self, quantized: Any, bundle: Any, path: Path, metrics: dict[str, Any] | None, overwrite: bool, verify: bool) -> Path:
        from quantwise.llm import artifact

        return artifact.save(quantized, bundle.tokenizer, bundle.spec or bundle.name, path, metrics=metrics, overwrite=overwrite, verify=verify)

    def load(self, path: Path, arch: nn.Module | str | None, art: Any) -> Any:
        """An ``llm.artifact.LoadedLM``: the architecture is the transformers config the artifact stores as data."""
        from quantwise.llm import artifact

        if arch is not None:
            raise QuantwiseError(f"{path} holds a language model, whose architecture the artifact describes itself", "call load(path) without arch")
        return artifact.load(path, art)
