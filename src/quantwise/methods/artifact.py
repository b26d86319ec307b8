"""A classic model's artifact: the tensors and metadata its method returned, with the float
model's input description and architecture fingerprint, written by ``artifact.store``; read back
by the same method's ``restore`` into an architecture the caller (or the zoo's table) provides."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from quantwise.artifact import store
from quantwise.config import Recipe, recipe_from_dict, recipe_to_dict
from quantwise.data.base import Inputs
from quantwise.errors import QuantwiseError, first_line
from quantwise.models.base import ModelBundle
from quantwise.versions import versions

if TYPE_CHECKING:  # the registry (methods.base) calls this module: no import back at run time
    from quantwise.methods.base import Quantized

MAX_EXAMPLE_ELEMENTS = 1 << 26  # one example batch described by a manifest: bounded before anything is allocated
EXAMPLE_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


@dataclass
class Loaded:
    """A model read back from an artifact, ready to run; no float checkpoint or data needed."""

    module: nn.Module
    recipe: Recipe
    artifact: store.Artifact
    quantized: Quantized


def architecture(bundle: ModelBundle) -> nn.Module:
    """A model of ``bundle``'s architecture for an artifact to fill (its float weights are overwritten)."""
    return (bundle.build_arch() if bundle.build_arch else copy.deepcopy(bundle.model)).eval()


def architecture_of_spec(spec: str) -> nn.Module:
    """The architecture a model spec the caller gave builds: no data needed (unlike loading the model)."""
    from quantwise.factory import call_factory
    from quantwise.models.spec import _module_of
    from quantwise.models.zoo import _MODULES
    from quantwise.models.zoo import architecture as zoo_architecture

    if spec in _MODULES:
        return zoo_architecture(spec)
    made = call_factory(spec, "model")
    return architecture(made) if isinstance(made, ModelBundle) else _module_of(made).eval()


def save(q: Quantized, bundle: ModelBundle, path: Path, metrics: dict[str, Any] | None, overwrite: bool, verify: bool) -> Path:
    """Write ``q`` (quantized from ``bundle``); with ``verify``, reload it and require bit-identical outputs."""
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
    return store.write(art, path, overwrite=overwrite, verify=(lambda written: _verify(q, bundle, written)) if verify else None)


def _verify(q: Quantized, bundle: ModelBundle, path: Path) -> None:
    """The artifact at ``path`` must rebuild the quantized model bit for bit."""
    loaded = load(path, architecture(bundle))
    probe = bundle.evaluation.example(4)
    with torch.no_grad():
        same = torch.equal(q.module(*probe), loaded.module(*probe))
    if not same:
        raise QuantwiseError("the saved artifact does not reproduce the quantized model's outputs exactly; nothing was written", "report this recipe as a bug")


def load(path: Path, arch: nn.Module | str | None, art: store.Artifact | None = None) -> Loaded:
    """The artifact at ``path`` restored into ``arch``: a module, a model spec the caller chose to run
    (``file.py:factory``, a zoo name), or None for the zoo model the manifest names. A user model's
    code is never named by an artifact, so its architecture must be given."""
    from quantwise.methods import method_for
    from quantwise.models.zoo import architecture as zoo_architecture

    art = art if art is not None else store.read(path)
    recipe = recipe_from_dict(art.recipe)
    if isinstance(arch, str):
        arch = architecture_of_spec(arch)
    if arch is None:
        arch = zoo_architecture(art.model, path)
    store.check_architecture(art, arch, path)
    example = example_from_spec(art.inputs)
    try:
        q = method_for(recipe).restore(arch, recipe, example, art.tensors, art.meta)
    except QuantwiseError:
        raise
    except Exception as err:
        raise QuantwiseError(f"artifact {path} does not fit model {art.model} ({type(err).__name__}: {first_line(err, 140)})", "re-create it with 'quantwise quantize'") from err
    q.notes = art.notes
    return Loaded(q.module, recipe, art, q)  # restored models are in eval mode; exported ones refuse .eval()


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
