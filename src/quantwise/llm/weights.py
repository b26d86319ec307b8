"""Load a causal LM's safetensors weights into private memory with plain file reads.

transformers memory-maps safetensors files and leaves the parameters as views of the
mapping. Every page that quantization reads then stays resident (as file-backed RSS) for
as long as any parameter of the file lives, so releasing a quantized layer's float weight
frees nothing, and the file's pages count on top of the codes and calibration working set.

Here the model is built empty (``from_config`` without weight initialisation) and each
tensor is read with ``readinto`` straight into its parameter's own storage: no mapping,
no second copy, and a released parameter is really freed. Only the safetensors format is
parsed (an 8-byte header length, a JSON header, raw little-endian data); nothing is
unpickled. :func:`load_private` returns None when the files do not line up one to one with
the model's parameters and buffers (renamed keys, other layouts): the caller then uses
``from_pretrained``.
"""
from __future__ import annotations

import json
import logging
import struct
import sys
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
MAX_HEADER = 100 * 2**20


def read_header(path: Path) -> tuple[int, dict[str, dict]]:
    """(offset of the data section, {name: {"dtype", "shape", "data_offsets"}}) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if not 0 < n <= MAX_HEADER:
            raise ValueError(f"{path.name} has an implausible safetensors header length {n}")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def _targets(model: nn.Module) -> dict[str, torch.Tensor]:
    named = dict(model.named_parameters(remove_duplicate=False))
    named.update(model.named_buffers(remove_duplicate=False))
    return named


def load_private(model_dir: Path, dtype: torch.dtype = torch.float32) -> nn.Module | None:
    """The model in ``model_dir`` with its weights read into private memory, or None when
    its files do not match the model built from its config (see the module docstring)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    if sys.byteorder != "little":
        return None
    files = sorted(model_dir.glob("*.safetensors"))
    headers = [(path, *read_header(path)) for path in files]
    config = AutoConfig.from_pretrained(model_dir)
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()  # tied parameters are stored once, under either name
    targets = _targets(model)
    stored = {name for _, _, header in headers for name in header}
    persistent = {name for name in model.state_dict()}
    tied = {name for name in persistent - stored if _is_tied(model, name, stored)}
    if stored - set(targets) or persistent - stored - tied:
        log.info("%s: safetensors keys do not match the model one to one; using from_pretrained", model_dir)
        return None
    for path, start, header in headers:
        with open(path, "rb") as f:
            for name, info in header.items():
                _read_into(f, start, info, targets[name], name)
    model.tie_weights()
    return model.eval()


def _is_tied(model: nn.Module, name: str, stored: set[str]) -> bool:
    """A parameter that is absent from the files because it shares storage with a stored one."""
    state = model.state_dict()
    ptr = state[name].data_ptr()
    return any(state[other].data_ptr() == ptr for other in stored if other in state)


def _read_into(f, start: int, info: dict, target: torch.Tensor, name: str) -> None:
    dtype, shape = DTYPES.get(info["dtype"]), tuple(info["shape"])
    begin, end = info["data_offsets"]
    if dtype is None or shape != tuple(target.shape):
        raise ValueError(f"tensor {name}: stored {info['dtype']} {shape} does not fit the model's {target.dtype} {tuple(target.shape)}")
    if end - begin != target.numel() * dtype.itemsize:
        raise ValueError(f"tensor {name}: {end - begin} bytes stored for {shape} {info['dtype']}")
    f.seek(start + begin)
    if dtype == target.dtype and target.is_contiguous():
        buffer, into = target.data, target.data
    else:  # another dtype (e.g. bf16 weights for a float32 model): one tensor's worth of temporary
        buffer, into = torch.empty(shape, dtype=dtype), target.data
    view = memoryview(buffer.view(-1).view(torch.uint8).numpy()) if buffer.numel() else memoryview(b"")
    if buffer.numel() and f.readinto(view) != end - begin:
        raise ValueError(f"tensor {name}: the file ends early")
    if buffer is not into:
        into.copy_(buffer)
