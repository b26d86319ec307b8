"""quantwise: quantize PyTorch models and prove the result.

The public API lives in :mod:`quantwise.api`; the most used verbs are re-exported here.
``evaluate`` is not: ``quantwise.evaluate`` is the metrics package; use ``quantwise.api.evaluate``.
"""
from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: importing quantwise must not import torch
    if name in ("load", "load_model", "quantize", "save"):
        from quantwise import api

        return getattr(api, name)
    raise AttributeError(name)
