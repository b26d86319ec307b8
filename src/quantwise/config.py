"""Recipes: one small frozen dataclass per workflow, versioned to and from plain dicts.

A recipe is what ``quantwise quantize --recipe`` reads and what an artifact's
manifest stores, so every field is a plain value and every value is checked
when the recipe is built (a typo fails here, not deep inside torch).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from quantwise.errors import QuantwiseError, choice_error

RECIPE_VERSION = 1

OBSERVERS = ("minmax", "moving-average", "histogram", "percentile", "mse")
GRANULARITIES = ("per-channel", "per-tensor")
BACKENDS = ("x86", "qnnpack")
STATIC_PATHS = ("fx", "pt2e")


def _check_choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise choice_error(what, value, valid)


@dataclass(frozen=True)
class DynamicInt8:
    """Post-training dynamic quantization: int8 weights, activations quantized per batch.

    Linear layers go through torchao; LSTM/GRU through the legacy kernels (the only
    ones that cover them); Embedding tables become int8 weight-only.
    """

    kind: ClassVar[str] = "dynamic"
    linear: bool = True
    recurrent: bool = True
    embedding: bool = True

    def __post_init__(self) -> None:
        if not (self.linear or self.recurrent or self.embedding):
            raise QuantwiseError("dynamic recipe quantizes nothing", "enable at least one of linear, recurrent, embedding")


@dataclass(frozen=True)
class StaticInt8:
    """Post-training static quantization: int8 weights and activations, calibrated.

    ``path="fx"`` gives the eager-module model (legacy kernels, fast in eager mode on
    most CNNs); ``path="pt2e"`` goes through torch.export and torchao's PT2E
    quantizer (fast only under torch.compile).
    """

    kind: ClassVar[str] = "static"
    observer: str = "histogram"
    granularity: str = "per-channel"
    backend: str = "x86"
    path: str = "fx"
    weight_bits: int = 8
    percentile: float = 99.99
    calibration_batches: int | None = None

    def __post_init__(self) -> None:
        _check_choice("observer", self.observer, OBSERVERS)
        _check_choice("granularity", self.granularity, GRANULARITIES)
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("static path", self.path, STATIC_PATHS)
        _check_weight_bits(self.weight_bits, self.path)
        if not 50.0 < self.percentile <= 100.0:
            raise QuantwiseError(f"percentile {self.percentile} is out of range", "use a value in (50, 100], e.g. 99.99")
        if self.path == "pt2e" and self.backend != "x86":
            raise QuantwiseError(
                f"the pt2e path has no {self.backend} quantizer in this torchao build",
                "use path=fx for backend qnnpack, or backend=x86 with pt2e",
            )


@dataclass(frozen=True)
class QAT:
    """Quantization-aware training: fake-quantize, fine-tune with straight-through
    gradients, then convert to the same int8 model as static quantization.

    Trains on labelled data with cross-entropy when the model has labels, else
    distils the float model's outputs (mean squared error).
    """

    kind: ClassVar[str] = "qat"
    weight_bits: int = 8
    granularity: str = "per-channel"
    backend: str = "x86"
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-4
    freeze_observers_after: float = 0.5

    def __post_init__(self) -> None:
        _check_choice("granularity", self.granularity, GRANULARITIES)
        _check_choice("backend", self.backend, BACKENDS)
        _check_weight_bits(self.weight_bits, "fx")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise QuantwiseError("qat needs steps >= 1, batch_size >= 1 and lr > 0", "e.g. steps=300 batch_size=64 lr=1e-4")
        if not 0.0 <= self.freeze_observers_after <= 1.0:
            raise QuantwiseError("freeze_observers_after is a fraction of the steps", "use a value in [0, 1]")


def _check_weight_bits(bits: int, path: str) -> None:
    if bits not in (4, 8):
        raise QuantwiseError(f"weight_bits={bits} is not supported", "use 8, or 4 (stored as int8 values in [-8, 7])")
    if bits == 4 and path == "pt2e":
        raise QuantwiseError("4-bit weights are not available on the pt2e path", "use path=fx with weight_bits=4")


Recipe = DynamicInt8 | StaticInt8 | QAT
RECIPE_TYPES: dict[str, type] = {cls.kind: cls for cls in (DynamicInt8, StaticInt8, QAT)}

# Named recipes a user can pick by name; ``compare`` runs them all where they apply.
PRESETS: dict[str, Recipe] = {
    "dynamic": DynamicInt8(),
    "static-fx": StaticInt8(path="fx"),
    "static-pt2e": StaticInt8(path="pt2e"),
    "static-qnnpack": StaticInt8(path="fx", backend="qnnpack", granularity="per-tensor"),
    "qat": QAT(),
    "static-w4": StaticInt8(path="fx", weight_bits=4, observer="minmax"),
    "qat-w4": QAT(weight_bits=4),
}


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return {"version": RECIPE_VERSION, "kind": recipe.kind, **dataclasses.asdict(recipe)}


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    data = dict(data)
    version = data.pop("version", RECIPE_VERSION)
    if version != RECIPE_VERSION:
        raise QuantwiseError(f"recipe version {version} is not supported by this quantwise", f"use version {RECIPE_VERSION}")
    kind = data.pop("kind", None)
    if kind not in RECIPE_TYPES:
        raise choice_error("recipe kind", kind, tuple(RECIPE_TYPES))
    cls = RECIPE_TYPES[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise QuantwiseError(f"unknown key(s) {', '.join(unknown)} for a {kind} recipe", f"valid keys: {', '.join(sorted(names))}")
    try:
        return cls(**data)
    except TypeError as err:
        raise QuantwiseError(f"bad {kind} recipe: {err}", "check the value types") from None


def parse_recipe(spec: str) -> Recipe:
    """A preset name, a JSON/YAML file, or ``kind:key=value,...`` (e.g. ``static:observer=mse,path=pt2e``)."""
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if path.suffix in (".json", ".yaml", ".yml"):
        if not path.is_file():
            raise QuantwiseError(f"recipe file {spec} does not exist", "give a path to a JSON or YAML recipe, or a preset name")
        return recipe_from_dict(_read_mapping(path))
    kind, _, rest = spec.partition(":")
    if kind not in RECIPE_TYPES:
        raise QuantwiseError(
            f"unknown recipe {spec!r}",
            f"use a preset ({', '.join(PRESETS)}), a .json/.yaml file, or kind:key=value with kind one of {', '.join(RECIPE_TYPES)}",
        )
    data: dict[str, Any] = {"kind": kind}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise QuantwiseError(f"recipe option {item!r} has no value", "write key=value, e.g. observer=mse")
        data[key.strip().replace("-", "_")] = _coerce(value.strip())
    return recipe_from_dict(data)


def recipe_name(recipe: Recipe) -> str:
    for name, preset in PRESETS.items():
        if preset == recipe:
            return name
    defaults = RECIPE_TYPES[recipe.kind]()  # type: ignore[call-arg]
    changed = [f"{k}={v}" for k, v in dataclasses.asdict(recipe).items() if getattr(defaults, k) != v]
    return f"{recipe.kind}:{','.join(changed)}" if changed else recipe.kind


def _coerce(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _read_mapping(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # parse errors of either format
        raise QuantwiseError(f"cannot parse recipe file {path}: {err}".splitlines()[0], "fix the file's syntax") from None
    if not isinstance(data, dict):
        raise QuantwiseError(f"recipe file {path} does not hold a mapping", "write key: value pairs with a 'kind' key")
    return data
