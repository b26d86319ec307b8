"""On-disk cache for expensive preprocessing (``$QUANTWISE_CACHE``, default ``~/.cache/quantwise``).

Entries are safetensors files written under a temporary name and renamed into place, so a
crashed or concurrent writer never leaves a half-written entry. A cache that cannot be read
or written only costs time: the value is rebuilt and a warning logged.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from quantwise.files import staged_file
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

Tensors = dict[str, torch.Tensor]


def cache_dir() -> Path:
    """``$QUANTWISE_CACHE`` if set, else ``~/.cache/quantwise``."""
    return Path(os.environ.get("QUANTWISE_CACHE") or Path.home() / ".cache" / "quantwise")


def cached_tensors(key: str, build: Callable[[], Tensors]) -> Tensors:
    """Tensors stored under ``key`` (which should name every input and a version), built once."""
    path = cache_dir() / f"{key}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))
        except Exception as err:  # corrupt or foreign file: rebuild it
            log.warning("ignoring unreadable cache entry %s: %s", path, err)
    tensors = build()
    try:
        with staged_file(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        log.debug("cached %s", path)
    except OSError as err:
        log.warning("could not write cache entry %s: %s", path, err)
    return tensors
