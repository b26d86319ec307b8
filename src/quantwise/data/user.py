"""A user's data: a folder of images, a tensor file (.pt, .npz, .safetensors) or ``file.py:factory``.

Files are read without pickle: ``torch.load(weights_only=True)``, ``np.load(allow_pickle=False)``.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quantwise.data.base import Inputs, TensorSet
from quantwise.errors import QuantwiseError, first_line

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
INPUT_KEYS = ("inputs", "x", "data", "input", "arr_0")
TARGET_KEYS = ("targets", "y", "labels", "target", "arr_1")


def load_data(spec: str, example: Inputs | None) -> TensorSet:
    path = Path(spec)
    if path.is_dir():
        return _images(path, example)
    if path.suffix in (".pt", ".pth", ".npz", ".safetensors"):
        if not path.is_file():
            raise QuantwiseError(f"data file {spec} does not exist", "check the path")
        return _from_mapping(_read_tensor_file(path), spec)
    if ":" in spec:
        from quantwise.factory import call_factory

        made = call_factory(spec, "data")
        if isinstance(made, TensorSet):
            return made
        return _from_mapping(made if isinstance(made, dict) else {"inputs": made}, spec)
    raise QuantwiseError(f"cannot read data {spec!r}", "give a folder of images, a .pt/.npz/.safetensors file, or file.py:factory")


def _read_tensor_file(path: Path) -> Any:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return {k: torch.from_numpy(npz[k]) for k in npz.files}
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise QuantwiseError(
            f"{path} holds pickled Python objects, which quantwise will not load ({first_line(err, 100)})",
            "save plain tensors (torch.save of a tensor or dict of tensors, .npz, or safetensors)",
        ) from None
    except ValueError as err:  # np.load refusing object arrays
        raise QuantwiseError(f"{path} cannot be read safely ({first_line(err, 120)})", "save plain numeric arrays") from None
    except Exception as err:
        raise QuantwiseError(f"{path} is not a readable tensor file ({type(err).__name__}: {first_line(err, 100)})", "check the file") from None


def _from_mapping(obj: Any, spec: str) -> TensorSet:
    found = obj if isinstance(obj, (tuple, list)) else (obj.values() if isinstance(obj, dict) else [obj])
    if any(isinstance(t, torch.Tensor) and t.dim() == 0 for t in found):
        raise QuantwiseError(f"data {spec} holds a single number where samples belong", "store a tensor with the samples along its first dimension")
    if isinstance(obj, torch.Tensor):
        return TensorSet((obj,), description=spec)
    if isinstance(obj, (tuple, list)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        return TensorSet(tuple(obj), description=spec)
    if isinstance(obj, dict):
        inputs = next((obj[k] for k in INPUT_KEYS if k in obj), None)
        targets = next((obj[k] for k in TARGET_KEYS if k in obj), None)
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs,)
        if isinstance(inputs, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in inputs):
            try:
                return TensorSet(tuple(inputs), targets, description=spec)
            except ValueError as err:
                raise QuantwiseError(f"data {spec}: {err}", "give inputs and targets with the same number of samples") from None
    raise QuantwiseError(f"data {spec} holds no input tensor", f"store a tensor, or a dict with one of the keys {', '.join(INPUT_KEYS)}")


def _images(folder: Path, example: Inputs | None) -> TensorSet:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise QuantwiseError(f"folder {folder} holds no images", f"put image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in it")
    channels, height, width = (3, 224, 224) if example is None else tuple(example[0].shape[1:4])
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for f in files:
        try:
            img = Image.open(f).convert(mode).resize((width, height), Image.BILINEAR)
        except (UnidentifiedImageError, OSError) as err:
            raise QuantwiseError(f"cannot read image {f} ({err})", "remove or fix the file") from None
        arr = np.asarray(img, dtype=np.float32) / 255.0
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    # class labels from sub-folder names, when images sit in one folder per class
    classes = sorted({f.parent.name for f in files})
    targets = torch.tensor([classes.index(f.parent.name) for f in files]) if len(classes) > 1 else None
    return TensorSet((torch.from_numpy(np.stack(arrays)),), targets, description=f"{len(files)} images from {folder} (scaled to [0, 1])")
