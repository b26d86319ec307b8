"""What every method gives back, and the registry that finds a method by recipe type."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from quantwise.config import Recipe
from quantwise.data.base import Inputs, TensorSet

T = TypeVar("T")
# Wraps an iterable to show progress: ``progress("calibrating", batches, total)``.
ProgressFn = Callable[[str, Iterable[T], int], Iterable[T]]


def no_progress(description: str, items: Iterable[T], total: int) -> Iterable[T]:
    return items


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
    """A quantized model plus the plain tensors and JSON metadata that rebuild it exactly.

    ``compiled`` says whether the model needs ``torch.compile`` to run fast (torchao
    and PT2E models do; the legacy kernels run fast in eager mode).
    """

    module: nn.Module
    recipe: Recipe
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    compiled: bool = False
    notes: list[str] = field(default_factory=list)


class Method(Protocol):
    def quantize(self, model: nn.Module, recipe: Any, data: QuantData) -> Quantized: ...

    def restore(self, arch: nn.Module, recipe: Any, example: Inputs, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Quantized: ...


METHODS: dict[type, Method] = {}


def register(recipe_type: type) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        METHODS[recipe_type] = cls()
        return cls

    return wrap


def method_for(recipe: Recipe) -> Method:
    import quantwise.methods  # noqa: F401  (registers the methods)

    if type(recipe) not in METHODS:
        from quantwise.config import LLM_PRESETS, preset_names
        from quantwise.errors import QuantwiseError

        raise QuantwiseError(f"recipe kind {recipe.kind!r} is for language models; this model is not one",
                             f"use a recipe for it ({', '.join(preset_names('classic'))}), or a language model "
                             f"(smollm2-135m, a .gguf file, a Hugging Face directory) with {', '.join(LLM_PRESETS[:3])}, ...")
    return METHODS[type(recipe)]


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
