"""The public verbs: resolve a model, quantize it, save and load artifacts, evaluate."""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantwise.artifact import store
from quantwise.config import Recipe, parse_recipe, recipe_from_dict, recipe_to_dict
from quantwise.data.base import Inputs
from quantwise.errors import QuantwiseError, first_line
from quantwise.evaluate import metrics as _metrics
from quantwise.methods import Quantized, method_for
from quantwise.progress import ProgressFn, no_progress
from quantwise.models.base import ModelBundle
from quantwise.models.spec import resolve_model
from quantwise.versions import versions

log = logging.getLogger(__name__)


@dataclass
class QuantizeResult:
    quantized: Any  # methods.Quantized; for a language model llm.quantize.QuantizedLM
    bundle: Any  # the ModelBundle, or the LanguageModel, it was quantized from
    seconds: float


@dataclass
class Loaded:
    """A model read back from an artifact, ready to run; no float checkpoint or data needed."""

    module: nn.Module
    recipe: Recipe
    artifact: store.Artifact
    quantized: Quantized


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
    windows of ``context`` (stride = window)."""
    from quantwise.llm.model import LanguageModel

    if isinstance(bundle, LanguageModel):
        from quantwise.llm.perplexity import perplexity

        return {"perplexity": perplexity(model, bundle.evaluation_windows(context, eval_tokens)).perplexity}
    return _metrics.evaluate(model, bundle, reference, batch_size)


def save(result: QuantizeResult, path: str | Path, metrics: dict[str, Any] | None = None, overwrite: bool = False, verify: bool = True) -> Path:
    """Write the artifact; with ``verify``, reload it and require bit-identical outputs."""
    bundle, q = result.bundle, result.quantized
    from quantwise.llm.model import LanguageModel

    if isinstance(bundle, LanguageModel):
        from quantwise.llm import artifact as lm_artifact

        return lm_artifact.save(q, bundle.tokenizer, bundle.spec or bundle.name, path, metrics=metrics, overwrite=overwrite, verify=verify)
    example = bundle.example_inputs(1)
    art = store.Artifact(
        model=bundle.name,
        recipe=recipe_to_dict(q.recipe),
        tensors=q.tensors,
        meta=q.meta,
        inputs=[{"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for t in example],
        metrics=metrics or {},
        versions=versions(),
        notes=q.notes,
        architecture=store.fingerprint(bundle.model),
        built=q.built.to_dict(),
    )
    return store.write(art, Path(path), overwrite=overwrite, verify=(lambda written: _verify(result, written)) if verify else None)


def _verify(result: QuantizeResult, path: Path) -> None:
    """The artifact at ``path`` must rebuild the quantized model bit for bit."""
    loaded = load(path, arch=architecture(result.bundle))
    probe = result.bundle.evaluation.example(4)
    with torch.no_grad():
        same = torch.equal(result.quantized.module(*probe), loaded.module(*probe))
    if not same:
        raise QuantwiseError("the saved artifact does not reproduce the quantized model's outputs exactly; nothing was written", "report this recipe as a bug")


def load(path: str | Path, arch: nn.Module | str | None = None) -> Any:
    """Rebuild a quantized model from an artifact: a ``Loaded`` (``.module`` runs it), or for a
    language model an ``llm.artifact.LoadedLM`` (``.module`` / ``.model`` and ``.tokenizer``), which
    needs no ``arch``: its architecture is the transformers config the artifact stores as data.

    An artifact is data: the architecture of a zoo model comes from quantwise's own table, and
    that of a user model from ``arch``, given by the caller (a module, or a ``file.py:factory`` /
    ``package.module:factory`` spec that the caller chooses to run). The model named in the
    manifest is never imported or run."""
    from quantwise.llm import artifact as lm_artifact

    if lm_artifact.is_language_model_artifact(path):
        if arch is not None:
            raise QuantwiseError(f"{path} holds a language model, whose architecture the artifact describes itself", "call load(path) without arch")
        return lm_artifact.load(path)
    art = store.read(Path(path))
    recipe = recipe_from_dict(art.recipe)
    if isinstance(arch, str):
        arch = _architecture_of_spec(arch)
    if arch is None:
        arch = zoo_architecture(art.model, Path(path))
    store.check_architecture(art, arch, Path(path))
    example = example_from_spec(art.inputs)
    try:
        q = method_for(recipe).restore(arch, recipe, example, art.tensors, art.meta)
    except QuantwiseError:
        raise
    except Exception as err:
        raise QuantwiseError(f"artifact {path} does not fit model {art.model} ({type(err).__name__}: {first_line(err, 140)})", "re-create it with 'quantwise quantize'") from err
    q.notes = art.notes
    return Loaded(q.module, recipe, art, q)  # restored models are in eval mode; exported ones refuse .eval()


def architecture(bundle: ModelBundle) -> nn.Module:
    """A model of ``bundle``'s architecture for an artifact to fill (its float weights are overwritten)."""
    return (bundle.build_arch() if bundle.build_arch else copy.deepcopy(bundle.model)).eval()


def _architecture_of_spec(spec: str) -> nn.Module:
    """The architecture a model spec the caller gave builds: no data needed (unlike ``load_model``)."""
    from quantwise.factory import call_factory
    from quantwise.models.spec import _module_of
    from quantwise.models.zoo import _MODULES

    if spec in _MODULES:
        return zoo_architecture(spec)
    made = call_factory(spec, "model")
    return architecture(made) if isinstance(made, ModelBundle) else _module_of(made).eval()


def zoo_architecture(name: str, path: Path | None = None) -> nn.Module:
    """The architecture of zoo model ``name``, from quantwise's fixed table; any other name is a user
    model, whose code an artifact cannot name (see ``load``)."""
    import importlib

    from quantwise.models.zoo import _MODULES

    if name in _MODULES:  # every zoo module has build(): the architecture without data
        return importlib.import_module(f"quantwise.models.{_MODULES[name]}").build()
    where = f"artifact {path}" if path is not None else "this artifact"
    raise QuantwiseError(
        f"{where} holds a quantized user model ({name!r}); quantwise never runs code that an artifact names",
        "give the architecture yourself: --model file.py:factory (in Python: quantwise.load(path, arch=...))",
    )


def bundle_for_artifact(manifest: dict[str, Any], model: str | None, data: str | None = None, n_evaluation: int | None = None) -> ModelBundle:
    """The float model and data to judge an artifact by: the user's ``model`` spec if given (the user
    chose to run it), else the zoo model the manifest names; never a spec read from the manifest."""
    if model is None:
        zoo_architecture(manifest["model"])  # refuses a user model's name with the fix
        model = manifest["model"]
    return load_model(model, data, None, n_evaluation)


MAX_EXAMPLE_ELEMENTS = 1 << 26  # one example batch described by a manifest: bounded before anything is allocated
EXAMPLE_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


def example_from_spec(inputs: list[dict[str, Any]]) -> Inputs:
    """The example batch a manifest describes (shapes and dtypes), checked before it is built."""
    bad = QuantwiseError("the artifact's input description is invalid", "re-create the artifact with 'quantwise quantize'")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= 64:
        raise bad
    made = []
    for item in inputs:
        if not isinstance(item, dict) or item.get("dtype") not in EXAMPLE_DTYPES or not isinstance(item.get("shape"), list):
            raise bad
        shape = item["shape"]
        if len(shape) > 8 or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d for d in shape) or math.prod(shape) > MAX_EXAMPLE_ELEMENTS:
            raise bad
        made.append(torch.ones(shape, dtype=getattr(torch, item["dtype"])))
    return tuple(made)


__all__ = ["QuantizeResult", "Loaded", "load_model", "quantize", "save", "load", "evaluate", "architecture", "bundle_for_artifact"]
