"""The public verbs: resolve a model, quantize it, save and load artifacts, evaluate."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantwise.artifact import store
from quantwise.config import Recipe, parse_recipe, recipe_from_dict
from quantwise.errors import QuantwiseError
from quantwise.methods import method_for
from quantwise.methods.artifact import Loaded, architecture
from quantwise.models.base import ModelBundle
from quantwise.models.spec import resolve_model
from quantwise.models.zoo import architecture as zoo_architecture
from quantwise.progress import ProgressFn, no_progress

log = logging.getLogger(__name__)


@dataclass
class QuantizeResult:
    quantized: Any  # methods.Quantized; for a language model llm.quantize.QuantizedLM
    bundle: Any  # the ModelBundle, or the LanguageModel, it was quantized from
    seconds: float


def load_model(spec: str, data: str | None = None, n_calibration: int | None = None, n_evaluation: int | None = None,
               text: str | None = None) -> Any:
    """A model and its data: a ``ModelBundle`` for a zoo model or ``file.py:factory`` (with ``data``),
    a ``LanguageModel`` for a zoo language model, a .gguf file or a Hugging Face directory (with ``text``:
    a plain-text file or folder; default the bundled Wikipedia sample)."""
    from quantwise.llm.model import is_language_model_spec, load_language_model

    if is_language_model_spec(spec):
        if data is not None or n_calibration is not None or n_evaluation is not None:
            raise QuantwiseError(f"{spec} is a language model: it calibrates and evaluates on text, not on data samples",
                                 "give text=... (a plain-text file or folder) instead of data / n_calibration / n_evaluation")
        return load_language_model(spec, text)
    if text is not None:
        raise QuantwiseError(f"text=... is for language models; {spec} is not one", "give data=... for this model")
    return resolve_model(spec, data, n_calibration, n_evaluation)


def model_kind_of(spec: str | Path) -> str:
    """'language' when ``spec`` names a language model (a zoo LLM, a .gguf file, a Hugging Face
    directory) or a language-model artifact, else 'classic'. Reads no weights."""
    from quantwise.llm.artifact import is_language_model_artifact
    from quantwise.llm.model import is_language_model_spec

    return "language" if is_language_model_spec(str(spec)) or is_language_model_artifact(spec) else "classic"


def quantize(bundle: Any, recipe: Recipe | str, progress: ProgressFn = no_progress, batch_size: int = 32) -> QuantizeResult:
    """Quantize ``bundle`` (from ``load_model``) with ``recipe`` (a preset name, ``kind:key=value,...``
    or a recipe object). A classic model is copied; a language model is quantized in place, block by
    block, its float weights released as each block is done (memory stays near one model): load it
    again for a float reference."""
    recipe = parse_recipe(recipe) if isinstance(recipe, str) else recipe
    method = method_for(recipe, bundle.kind)
    start = time.perf_counter()
    quantized = method.quantize_bundle(bundle, recipe, progress, batch_size)
    return QuantizeResult(quantized, bundle, time.perf_counter() - start)


def evaluate(model: nn.Module, bundle: Any, reference: torch.Tensor | None = None, batch_size: int = 64,
             context: int = 512, eval_tokens: int = 24576) -> dict[str, float]:
    """``model``'s metrics on ``bundle``'s evaluation split (against float ``reference`` outputs where
    given); for a language model, perplexity on ``eval_tokens`` tokens of its evaluation text in
    windows of ``context`` (stride = window). The bundle knows its own metrics."""
    return bundle.evaluate(model, reference, batch_size, context, eval_tokens)


def save(result: QuantizeResult, path: str | Path, metrics: dict[str, Any] | None = None, overwrite: bool = False, verify: bool = True) -> Path:
    """Write the artifact, as the method that made it stores it; with ``verify``, reload it and
    require bit-identical outputs (else nothing is written)."""
    q = result.quantized
    return method_for(q.recipe, result.bundle.kind).save(q, result.bundle, Path(path), metrics, overwrite, verify)


def load(path: str | Path, arch: nn.Module | str | None = None) -> Any:
    """Rebuild a quantized model from an artifact, by the method its recipe names: a ``Loaded``
    (``.module`` runs it), or for a language model an ``llm.artifact.LoadedLM`` (``.module`` /
    ``.model`` and ``.tokenizer``), which needs no ``arch``: its architecture is the transformers
    config the artifact stores as data.

    An artifact is data: the architecture of a zoo model comes from quantwise's own table, and
    that of a user model from ``arch``, given by the caller (a module, or a ``file.py:factory`` /
    ``package.module:factory`` spec that the caller chooses to run). The model named in the
    manifest is never imported or run."""
    path = Path(path)
    art = store.read(path)  # manifest, versions and weights checked first, then the recipe picks the method
    return method_for(recipe_from_dict(art.recipe)).load(path, arch, art)


def artifact_kind(manifest: dict[str, Any]) -> str:
    """The kind of model an artifact holds ("classic" or "language"), as the method its recipe names
    records it. A recipe that does not parse counts as classic: loading the artifact (``load``) then
    checks it whole and names what is wrong (corrupt weights first, then the recipe)."""
    try:
        recipe = recipe_from_dict(manifest["recipe"])
    except (QuantwiseError, KeyError, TypeError, ValueError, AttributeError):
        return "classic"
    return method_for(recipe).models


def bundle_for_artifact(manifest: dict[str, Any], model: str | None, data: str | None = None, n_evaluation: int | None = None) -> ModelBundle | None:
    """The float model and data to judge an artifact by: the user's ``model`` spec if given (the user
    chose to run it), else the zoo model the manifest names; never a spec read from the manifest.
    None for a language model, which is rebuilt from the artifact and judged on the evaluation articles
    (giving it ``model`` or ``data`` is refused)."""
    if artifact_kind(manifest) == "language":
        for flag, value in (("data", data), ("model", model)):
            if value:
                raise QuantwiseError(f"--{flag} does not apply to a language-model artifact",
                                     f"drop --{flag}: the model is rebuilt from the artifact and scored on the evaluation articles")
        return None
    if model is None:
        zoo_architecture(manifest["model"])  # refuses a user model's name with the fix
        model = manifest["model"]
    return load_model(model, data, None, n_evaluation)


__all__ = ["QuantizeResult", "Loaded", "load_model", "quantize", "save", "load", "evaluate", "architecture", "artifact_kind", "bundle_for_artifact"]
