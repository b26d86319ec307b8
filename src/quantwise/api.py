"""The public verbs: resolve a model, quantize it, save and load artifacts, evaluate."""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantwise import artifact as store
from quantwise.config import Recipe, parse_recipe, recipe_from_dict, recipe_to_dict
from quantwise.data.base import Inputs
from quantwise.errors import QuantwiseError, first_line
from quantwise.evaluate.metrics import evaluate
from quantwise.methods import QuantData, Quantized, method_for
from quantwise.methods.base import ProgressFn, no_progress
from quantwise.models.base import ModelBundle
from quantwise.models.spec import resolve_model
from quantwise.versions import versions

log = logging.getLogger(__name__)


@dataclass
class QuantizeResult:
    quantized: Quantized
    bundle: ModelBundle
    seconds: float


@dataclass
class Loaded:
    """A model read back from an artifact, ready to run; no float checkpoint or data needed."""

    module: nn.Module
    recipe: Recipe
    artifact: store.Artifact
    quantized: Quantized


def load_model(spec: str, data: str | None = None, n_calibration: int | None = None, n_evaluation: int | None = None) -> ModelBundle:
    return resolve_model(spec, data, n_calibration, n_evaluation)


def quantize(bundle: ModelBundle, recipe: Recipe | str, progress: ProgressFn = no_progress, batch_size: int = 32) -> QuantizeResult:
    recipe = parse_recipe(recipe) if isinstance(recipe, str) else recipe
    data = QuantData(bundle.calibration, bundle.train, batch_size=batch_size, dynamic_batch=bundle.dynamic_batch, progress=progress)
    start = time.perf_counter()
    quantized = method_for(recipe).quantize(bundle.model, recipe, data)
    return QuantizeResult(quantized, bundle, time.perf_counter() - start)


def save(result: QuantizeResult, path: str | Path, metrics: dict[str, Any] | None = None, overwrite: bool = False, verify: bool = True) -> Path:
    """Write the artifact; with ``verify``, reload it and require bit-identical outputs."""
    bundle, q = result.bundle, result.quantized
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
    )
    path = store.write(art, Path(path), overwrite=overwrite)
    if verify:
        try:
            loaded = load(path, arch=bundle.build_arch() if bundle.build_arch else None)
            probe = bundle.evaluation.example(4)
            with torch.no_grad():
                same = torch.equal(q.module(*probe), loaded.module(*probe))
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        if not same:
            shutil.rmtree(path, ignore_errors=True)
            raise QuantwiseError("the saved artifact does not reproduce the quantized model's outputs exactly; nothing was written", "report this recipe as a bug")
    return path


def load(path: str | Path, arch: nn.Module | None = None) -> Loaded:
    """Rebuild a quantized model from an artifact. The architecture comes from the
    artifact's model spec (or ``arch``); its float weights are all overwritten."""
    art = store.read(Path(path))
    recipe = recipe_from_dict(art.recipe)
    if arch is None:
        arch = build_arch(art.model)
    example = example_from_spec(art.inputs)
    try:
        q = method_for(recipe).restore(arch, recipe, example, art.tensors, art.meta)
    except QuantwiseError:
        raise
    except Exception as err:
        raise QuantwiseError(f"artifact {path} does not fit model {art.model} ({type(err).__name__}: {first_line(err, 140)})", "re-create it with 'quantwise quantize'") from err
    q.notes = art.notes
    return Loaded(q.module, recipe, art, q)  # restored models are in eval mode; exported ones refuse .eval()


def build_arch(spec: str) -> nn.Module:
    import importlib

    from quantwise.models.zoo import _MODULES

    if spec in _MODULES:  # every zoo module has build(): the architecture without data
        return importlib.import_module(f"quantwise.models.{_MODULES[spec]}").build()
    from quantwise.models.spec import _module_of, load_callable

    return _module_of(load_callable(spec, "model")()).eval()


def example_from_spec(inputs: list[dict[str, Any]]) -> Inputs:
    try:
        return tuple(torch.ones(i["shape"], dtype=getattr(torch, i["dtype"])) for i in inputs)
    except (KeyError, TypeError, AttributeError) as err:
        raise QuantwiseError(f"artifact input description is invalid ({err})", "re-create the artifact") from None


__all__ = ["QuantizeResult", "Loaded", "load_model", "quantize", "save", "load", "evaluate", "build_arch"]
