"""Static int8 on the eager-module path: FX tracing fuses conv-bn-relu / linear-relu and
places quant/dequant automatically, then the legacy int8 kernels run it in eager mode."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from quantwise import legacy
from quantwise.built import Built
from quantwise.config import QAT, StaticInt8
from quantwise.data.base import Inputs
from quantwise.errors import QuantwiseError, first_line
from quantwise.methods.base import ClassicMethod, QuantData, Quantized, calibrate, load_state, register
from quantwise.methods.layers import kept_float


def qconfig_for(recipe: StaticInt8 | QAT) -> Any:
    observer = getattr(recipe, "observer", "minmax")
    percentile = getattr(recipe, "percentile", 99.99)
    return legacy.qconfig(observer, recipe.granularity, recipe.backend, recipe.weight_bits, percentile, qat=isinstance(recipe, QAT))


def prepare(model: nn.Module, recipe: StaticInt8 | QAT, example: Inputs) -> nn.Module:
    """FX prepare, turning the tracer's failures into one readable line."""
    legacy.set_engine(recipe.backend)
    if not any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) for m in model.modules()):
        raise QuantwiseError("the model has no Conv or Linear layer for static quantization", "use the dynamic recipe")
    _refuse_integer_inputs(example)
    keep = kept_float(model, recipe)
    try:
        return legacy.fx_prepare(model, qconfig_for(recipe), example, qat=isinstance(recipe, QAT), keep_float=keep)
    except Exception as err:  # tracing errors come in many types
        first = first_line(err)
        raise QuantwiseError(
            f"the model cannot be traced by torch.fx for the eager-module path ({type(err).__name__}: {first})",
            "try path=pt2e (torch.export) or the dynamic recipe",
        ) from err


def _refuse_integer_inputs(example: Inputs) -> None:
    """FX's static qconfig puts an activation observer on every model input and on the float
    ops fed by it; integer inputs (token ids, attention masks) break those observers
    ("histogram_cpu" not implemented for 'Long'), and dropping them left minilm-l6 at cosine
    0.06 to float. Such models (transformers) go through pt2e or dynamic instead."""
    for i, t in enumerate(example):
        if not t.is_floating_point():
            raise QuantwiseError(
                f"the fx path cannot quantize a model with integer inputs (input {i} is {str(t.dtype).removeprefix('torch.')}, "
                "e.g. token ids or an attention mask): its observers take float tensors only",
                "use path=pt2e (static-pt2e) or the dynamic recipe",
            )


def kept_note(keep: list[str]) -> list[str]:
    return [f"kept float ({len(keep)}): {', '.join(keep)}"] if keep else []


def finish(prepared: nn.Module, recipe: StaticInt8 | QAT, notes: list[str], kept: list[str]) -> Quantized:
    converted = legacy.fx_convert(prepared)
    tensors, meta = legacy.flatten_state(converted.state_dict())
    if recipe.weight_bits == 4:
        notes.append("4-bit weight values are stored in int8 containers (the legacy kernels have no int4)")
    return Quantized(converted, recipe, tensors, meta, Built("fx", kept_float=tuple(kept)), notes=notes + kept_note(kept))


def restore_converted(arch: nn.Module, recipe: StaticInt8 | QAT, example: Inputs, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Quantized:
    kept = kept_float(arch, recipe)
    prepared = prepare(arch, recipe, example)
    with torch.no_grad():
        prepared(*example)  # gives every observer a range so that convert runs; the file overwrites it
    converted = legacy.fx_convert(prepared)
    load_state(converted, legacy.unflatten_state(tensors, meta))
    return Quantized(converted, recipe, tensors, meta, Built("fx", kept_float=tuple(kept)))


@register(StaticInt8)
class Static(ClassicMethod):
    """Dispatches on ``recipe.path``: the eager-module (FX) path here, PT2E in static_pt2e."""

    def quantize(self, model: nn.Module, recipe: StaticInt8, data: QuantData) -> Quantized:
        if recipe.path == "pt2e":
            from quantwise.methods import static_pt2e

            return static_pt2e.quantize(model, recipe, data)
        prepared = prepare(copy.deepcopy(model).eval(), recipe, data.example(1))
        calibrate(prepared, data, recipe.calibration_batches)
        notes = [f"fx path, {recipe.backend} kernels, {recipe.observer} observer, {recipe.granularity} weights"]
        if legacy.has_recurrent(model):
            notes.append("LSTM/GRU layers stay float: static int8 does not cover them (use dynamic)")
        return finish(prepared, recipe, notes, kept_float(model, recipe))

    def restore(self, arch: nn.Module, recipe: StaticInt8, example: Inputs, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Quantized:
        if recipe.path == "pt2e":
            from quantwise.methods import static_pt2e

            return static_pt2e.restore(arch, recipe, example, tensors, meta)
        return restore_converted(arch, recipe, example, tensors, meta)
