"""What an export target is: which recipes it takes, how it writes a file, how it runs one."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantwise.config import Recipe
from quantwise.data.base import Inputs, TensorSet
from quantwise.errors import QuantwiseError

Runner = Callable[..., torch.Tensor]


def recipe_family(recipe: Recipe | dict[str, Any]) -> str:
    """The family (``built.FAMILIES``) of an artifact written before manifests recorded it: read
    from its recipe. Newer artifacts carry ``built``, written by the method that made the model."""
    data = recipe if isinstance(recipe, dict) else {"kind": recipe.kind, **{k: getattr(recipe, k) for k in ("path", "backend") if hasattr(recipe, k)}}
    kind = data.get("kind")
    if kind == "dynamic" and data.get("backend") == "xnnpack":
        return "pt2e-xnnpack-dynamic"
    if kind == "static" and data.get("path") == "pt2e":
        return "pt2e-xnnpack" if data.get("backend") == "xnnpack" else "pt2e"
    if kind == "static":
        return "fx"
    if kind == "qat":
        return "fx"
    return str(kind)


@dataclass(frozen=True)
class ExportTarget:
    """One deployment format.

    ``supports`` maps a recipe family to the reason it is refused (``None`` = supported),
    ``write(module, example, path, dynamic_batch, calibration) -> notes`` writes the file
    (``calibration``: the bundle's calibration split, for formats that calibrate), and
    ``load(path, threads) -> runner`` runs it on torch tensors, as a fresh user would.
    """

    name: str
    suffix: str
    description: str
    families: tuple[str, ...]
    write: Callable[[nn.Module, Inputs, Path, bool, TensorSet | None], list[str]]
    load: Callable[[Path, int], Runner]
    # rewrites a written file so that every CPU computes the same (ONNX: see export/portable.py); None: already so
    make_portable: Callable[[Path], list[str]] | None = None
    requires: str | None = None  # a module that must import, else the install hint below
    install: str = ""
    refusals: tuple[tuple[str, str], ...] = ()  # (family, reason + which recipe works)

    def check(self, family: str) -> None:
        if self.requires is not None:
            import importlib.util

            if importlib.util.find_spec(self.requires) is None:
                raise QuantwiseError(f"the {self.name} export needs {self.requires}, which is not installed", f"install it: {self.install}")
        if family in self.families:
            return
        reason = dict(self.refusals).get(family, f"the {self.name} export does not take {family} models")
        works = ", ".join(self.families)
        raise QuantwiseError(f"cannot export a {family} model to {self.name}: {reason}", f"recipe families this target takes: {works}")


TARGETS: dict[str, ExportTarget] = {}


def register(target: ExportTarget) -> ExportTarget:
    TARGETS[target.name] = target
    return target


def input_names(example: Inputs) -> list[str]:
    return ["input"] if len(example) == 1 else [f"input_{i}" for i in range(len(example))]
