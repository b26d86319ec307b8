"""Which layers a recipe quantizes, which of them its ``keep_float`` patterns keep float, and
which its ``keep_int8`` patterns keep at 8-bit weights in a 4-bit recipe.

Names are the float model's ``named_modules()`` names. A pattern (fnmatch: ``*``, ``?``,
``[...]``) keeps a layer float when it matches the layer's name or the name of a module
that contains it, so ``classifier`` keeps every layer inside a ``classifier`` block.
"""
from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from quantwise.config import QAT, DynamicInt8, Recipe, StaticInt8
from quantwise.errors import QuantwiseError

STATIC_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
RECURRENT_LAYERS = (nn.LSTM, nn.GRU)


def _is_layer(module: nn.Module, recipe: Recipe) -> bool:
    if isinstance(recipe, DynamicInt8) and recipe.backend == "xnnpack":  # linear layers, by XNNPACK's quantizer
        return isinstance(module, nn.Linear)
    if isinstance(recipe, DynamicInt8):  # torchao's dynamic Linear filter takes exact nn.Linear only
        return ((recipe.linear and type(module) is nn.Linear) or (recipe.recurrent and isinstance(module, RECURRENT_LAYERS))
                or (recipe.embedding and isinstance(module, nn.Embedding)))
    return isinstance(recipe, (StaticInt8, QAT)) and isinstance(module, STATIC_LAYERS)


def quantizable_layers(model: nn.Module, recipe: Recipe) -> list[str]:
    """Names of the layers ``recipe`` would quantize, in model order (keep_float ignored)."""
    return [n for n, m in model.named_modules() if n and _is_layer(m, recipe)]


def _matches(pattern: str, name: str) -> bool:
    parts = name.split(".")
    return any(fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def kept_float(model: nn.Module, recipe: Recipe) -> list[str]:
    """The quantizable layers the recipe keeps float; every pattern must keep at least one."""
    return matched_layers(model, recipe, "keep_float")


def kept_int8(model: nn.Module, recipe: Recipe) -> list[str]:
    """The layers a 4-bit recipe keeps at 8-bit weights (``keep_int8``); every pattern must match one."""
    return matched_layers(model, recipe, "keep_int8")


def matched_layers(model: nn.Module, recipe: Recipe, field: str) -> list[str]:
    """The quantizable layers the recipe's ``field`` patterns name, in model order; a pattern that
    names none is an error listing names that would work."""
    patterns = getattr(recipe, field, ())
    if not patterns:
        return []
    layers = quantizable_layers(model, recipe)
    kept: list[str] = []
    for pattern in patterns:
        hits = [n for n in layers if _matches(pattern, n)]
        if not hits:
            shown = ", ".join(layers[:4]) + (f", ... ({len(layers)} in all)" if len(layers) > 4 else "")
            raise QuantwiseError(
                f"{field} pattern {pattern!r} matches no layer this {recipe.kind} recipe quantizes",
                f"use module names such as {shown or '(none: the model has no quantizable layer)'}",
            )
        kept += [n for n in hits if n not in kept]
    return [n for n in layers if n in kept]


def kept_scopes(model: nn.Module, recipe: Recipe) -> list[str]:
    """Every module a keep_float pattern names (containers too), for quantizers that annotate by
    module scope: keeping ``_blocks.0`` float then also keeps its adds and activations float."""
    patterns = getattr(recipe, "keep_float", ())
    return [n for n, _ in model.named_modules() if n and any(fnmatchcase(n, p) for p in patterns)]
