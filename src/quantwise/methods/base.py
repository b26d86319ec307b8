"""What every method gives back, and the registry that finds a method by recipe type."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from quantwise.built import Built
from quantwise.config import Recipe
from quantwise.data.base import Inputs, TensorSet
from quantwise.progress import ProgressFn, no_progress


@dataclass
class QuantData:
    """The data a method may use. Calibration and training never include evaluation data."""

    calibration: TensorSet
    train: TensorSet | None = None
    batch_size: int = 32
    dynamic_batch: bool = True
    progress: ProgressFn = no_progress

    def example(self, batch_size: int = 2) -> Inputs:
        return self.calibration.example(batch_size)


@dataclass
class Quantized:
    """A quantized model plus the plain tensors and JSON metadata that rebuild it exactly, and
    ``built``: what the method made (its family, whether it needs ``torch.compile`` to run fast)."""

    module: nn.Module
    recipe: Recipe
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    built: Built
    notes: list[str] = field(default_factory=list)

    @property
    def compiled(self) -> bool:
        return self.built.compiled


class Method(Protocol):
    """Quantizes models of one kind with recipes of one type. ``models`` names the kind
    ("classic": a ``ModelBundle``'s module; "language": a ``LanguageModel`` quantized in place)."""

    models: str

    def quantize_bundle(self, bundle: Any, recipe: Any, progress: ProgressFn, batch_size: int) -> Any: ...

    def save(self, quantized: Any, bundle: Any, path: Path, metrics: dict[str, Any] | None, overwrite: bool, verify: bool) -> Path:
        """Write the artifact of ``quantized`` (made from ``bundle``); with ``verify``, reload it and
        require bit-identical outputs, else nothing is written."""
        ...

    def load(self, path: Path, arch: nn.Module | str | None, art: Any) -> Any:
        """The model of the artifact at ``path`` (``art``: its contents, ``artifact.store.read``), ready to
        run (``arch``: the architecture, where the artifact does not describe its own)."""
        ...


class ClassicMethod:
    """A method for classic models (CNNs, encoders, LSTMs): it quantizes a copy of the bundle's
    module from its calibration (and training) data, and rebuilds the result from an artifact's
    tensors."""

    models = "classic"

    def quantize_bundle(self, bundle: Any, recipe: Any, progress: ProgressFn, batch_size: int) -> Quantized:
        data = QuantData(bundle.calibration, bundle.train, batch_size=batch_size, dynamic_batch=bundle.dynamic_batch, progress=progress)
        return self.quantize(bundle.model, recipe, data)

    def quantize(self, model: nn.Module, recipe: Any, data: QuantData) -> Quantized:
        raise NotImplementedError

    def restore(self, arch: nn.Module, recipe: Any, example: Inputs, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Quantized:
        raise NotImplementedError

    def save(self, quantized: Quantized, bundle: Any, path: Path, metrics: dict[str, Any] | None, overwrite: bool, verify: bool) -> Path:
        from quantwise.methods import artifact

        return artifact.save(quantized, bundle, path, metrics, overwrite, verify)

    def load(self, path: Path, arch: nn.Module | str | None, art: Any) -> Any:
        """A ``methods.artifact.Loaded``: ``restore`` on ``arch`` (None: the zoo model the manifest names)."""
        from quantwise.methods import artifact

        return artifact.load(path, arch, art)


METHODS: dict[type, Method] = {}


def register(*recipe_types: type) -> Callable[[type], type]:
    """Class decorator: the method for ``recipe_types``, each of which names this method's file
    (``method``, a module of ``quantwise.methods``, imported the first time a recipe of it is used).
    A new recipe type is that file plus the type's entry in ``config``: its dataclass and its rows
    of ``config.PRESET_TABLE``."""

    def wrap(cls: type) -> type:
        for recipe_type in recipe_types:
            METHODS[recipe_type] = cls()
        return cls

    return wrap


def method_for(recipe: Recipe, kind: str | None = None) -> Method:
    """The method for ``recipe``; with ``kind`` (a model's ``kind``, "classic" or "language"),
    refuse a recipe meant for another kind of model, listing the presets that fit."""
    from quantwise.config import check_language_recipe, preset_names, recipe_name
    from quantwise.errors import QuantwiseError

    if type(recipe) not in METHODS:
        importlib.import_module(f"quantwise.methods.{type(recipe).method}")  # its @register fills METHODS
    method = METHODS[type(recipe)]
    if kind is None or method.models == kind:
        return method
    if method.models == "language":
        raise QuantwiseError(f"recipe kind {recipe.kind!r} is for language models; this model is not one",
                             f"use a recipe for it ({', '.join(preset_names('classic'))}), or a language model "
                             f"(smollm2-135m, a .gguf file, a Hugging Face directory) with {', '.join(preset_names('language')[:3])}, ...")
    check_language_recipe(recipe, recipe_name(recipe))  # refuses it, naming the recipes that fit
    raise AssertionError(recipe)


def dynamic_batch_shapes(example: Inputs) -> tuple[dict[int, Any], ...]:
    """torch.export pins the example's batch size unless dim 0 is marked dynamic."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    return tuple({0: batch} for _ in example)


def calibrate(module: nn.Module, data: QuantData, limit: int | None = None) -> None:
    batches = list(data.calibration.batches(data.batch_size))[:limit]
    with torch.no_grad():
        for inputs, _ in data.progress("calibrating", batches, len(batches)):
            module(*inputs)


def load_state(module: nn.Module, state: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
    """``load_state_dict`` with the module's own per-module version metadata attached.

    Quantized modules pick their state layout (and LSTM its reduce_range) from that
    metadata; a state read back from safetensors has none, and would load as version 1.
    """
    fresh = module.state_dict()
    ordered = type(fresh)(state)
    ordered._metadata = getattr(fresh, "_metadata", {})  # type: ignore[attr-defined]
    return module.load_state_dict(ordered, strict=strict, assign=assign)
