"""The built-in zoo: real trained models that ship inside pip packages, with their data.

Importing this module is cheap: a model module, and whatever it needs (safetensors, PIL,
sklearn, ...), is imported only when its loader is called. Nothing here imports transformers.

    bundle = ZOO["mnist-cnn"](n_calibration=256)
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from torch import nn

from quantwise.errors import QuantwiseError
from quantwise.models.base import ModelBundle

# zoo name -> module in quantwise.models that defines load() and DESCRIPTION
_MODULES: dict[str, str] = {
    "mnist-cnn": "mnist_cnn",
    "efficientnet-lite0": "efficientnet_lite0",
    "minilm-l6": "minilm",
    "resemblyzer-lstm": "resemblyzer_lstm",
}

# the one place the descriptions live; each model module re-exports its own as DESCRIPTION
DESCRIPTIONS: dict[str, str] = {
    "mnist-cnn": (
        "MNIST CNN (2 conv + 2 linear, 421 k params, ccexam weights) on (B, 1, 28, 28) normalised digits; "
        "evaluation = official 10k test set with labels, calibration = train-split digits"
    ),
    "efficientnet-lite0": (
        "EfficientNet-Lite0 (ImageNet-1k, 4.65 M params, ReLU6) on (B, 3, 224, 224) crops of bundled photos, "
        "x = (pixel - 127) / 128; no labels: fidelity = top-1 agreement with float"
    ),
    "minilm-l6": (
        "all-MiniLM-L6-v2 sentence encoder (6-layer BERT, 22.7 M params): (input_ids, attention_mask) int64 "
        "(B, 128) -> L2-normalised mean-pooled 384-d embedding; fidelity = cosine to the float embedding"
    ),
    "resemblyzer-lstm": (
        "Resemblyzer speaker encoder (LSTM 40->256 x3 + Linear, 1.42 M params) on 1.6 s mel partials "
        "(B, 160, 40) of espeak-ng speech: 8 voices x 20 news sentences; calibration and evaluation "
        "use different sentences; fidelity = cosine to the float embedding"
    ),
}


def _lazy(module: str) -> Callable[..., ModelBundle]:
    def load(*, n_calibration: int | None = None, n_evaluation: int | None = None) -> ModelBundle:
        mod = importlib.import_module(f"quantwise.models.{module}")
        return mod.load(n_calibration=n_calibration, n_evaluation=n_evaluation)

    load.__name__ = f"load_{module}"
    load.__doc__ = f"Load the zoo model from quantwise.models.{module} (imported on first call)."
    return load


ZOO: dict[str, Callable[..., ModelBundle]] = {name: _lazy(module) for name, module in _MODULES.items()}


def architecture(name: str, path: Path | None = None) -> nn.Module:
    """The architecture of zoo model ``name``, from this fixed table; any other name is a user
    model, whose code an artifact cannot name (quantwise never runs code an artifact names)."""
    if name in _MODULES:  # every zoo module has build(): the architecture without data
        return importlib.import_module(f"quantwise.models.{_MODULES[name]}").build()
    where = f"artifact {path}" if path is not None else "this artifact"
    raise QuantwiseError(
        f"{where} holds a quantized user model ({name!r}); quantwise never runs code that an artifact names",
        "give the architecture yourself: --model file.py:factory (in Python: quantwise.load(path, arch=...))",
    )
