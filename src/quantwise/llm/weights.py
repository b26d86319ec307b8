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

With ``defer_blocks`` the decoder blocks' tensors (``model.layers.<i>.*``) are left in the file
and read by :class:`DeferredBlocks` when layer-by-layer quantization reaches each block: the
float model is then never resident as a whole, only the embeddings, the blocks done so far (as
codes) and the block at hand. Calibrated quantization also sets the token table aside
(:meth:`DeferredBlocks.set_aside`) once the first block's inputs are computed: it is read back
from the file after the last block, so the block loop runs without it (SmolLM2: 113 MB).
"""
from __future__ import annotations

import json
import logging
import math
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


BLOCK_PREFIX = "model.layers."


@dataclass
class _Stored:
    path: Path
    start: int
    name: str
    info: dict
    target: torch.Tensor
    shape: tuple[int, ...]


@dataclass
class DeferredBlocks:
    """Decoder blocks whose float weights are still in the file. Their parameters are empty
    until :meth:`load`; running such a block raises instead of computing with garbage.
    ``read`` locates the tensors that were read at load time, so that :meth:`set_aside` can
    release one module's weights for a while (the token table during the block loop)."""

    blocks: nn.ModuleList
    stored: dict[int, list[_Stored]]
    read: list[_Stored] = field(default_factory=list)
    guards: dict[int, Any] = field(default_factory=dict)
    aside: list[_Stored] = field(default_factory=list)  # released by set_aside, read back first by load_all
    aside_guard: Any = None

    def __post_init__(self) -> None:
        for index in self.stored:
            self.guards[index] = self.blocks[index].register_forward_pre_hook(_unread_block(index))

    @property
    def pending(self) -> list[int]:
        """The blocks not read yet."""
        return sorted(self.stored)

    def load(self, index: int) -> None:
        """Read block ``index``'s tensors from the file (a no-op once read)."""
        entries = self.stored.pop(index, None)
        if entries is None:
            return
        _read_back(entries)
        self.guards.pop(index).remove()

    def load_all(self) -> None:
        """Read every unread block, and the weights set aside."""
        if self.aside:
            _read_back(self.aside)
            self.aside = []
            self.aside_guard.remove()
        for index in self.pending:
            self.load(index)

    def set_aside(self, module: nn.Module) -> int:
        """Release ``module``'s weights that were read from the file; :meth:`load_all` reads them
        back. Returns the bytes released (0 when none of its weights came from the file)."""
        if self.aside:
            raise RuntimeError("one module's weights are already set aside")
        mine = {id(p) for p in module.parameters()}
        # one entry per tensor: a tied table may be stored under both of its names
        self.aside = list({id(e.target): e for e in self.read if id(e.target) in mine}.values())
        if not self.aside:
            return 0
        released = sum(e.target.numel() * e.target.element_size() for e in self.aside)
        for e in self.aside:
            e.target.data = torch.empty(0, dtype=e.target.dtype)
        self.aside_guard = module.register_forward_pre_hook(_unread(f"{type(module).__name__} set aside", "load_all()"))
        return released


def _read_back(entries: list[_Stored]) -> None:
    for e in entries:
        e.target.data = torch.empty(e.shape, dtype=e.target.dtype)
        with open(e.path, "rb") as f:
            _read_into(f, e.start, e.info, e.target, e.name)


def _unread(what: str, call: str):
    def guard(module, args):
        raise RuntimeError(f"{what} ran before its weights were read (DeferredBlocks.{call})")

    return guard


def _unread_block(index: int):
    return _unread(f"decoder block {index}", f"load({index})")


def check_config_fits(model_dir: Path) -> None:
    """Refuse a directory whose config describes a larger model than its safetensors files hold.

    The architecture is built on the ``meta`` device first (no memory), so an untrusted config
    (say, a vocabulary of 10^12) cannot make quantwise allocate more than the files contain."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from quantwise.errors import QuantwiseError

    stored = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        _, header = read_header(path)
        for info in header.values():
            shape = info.get("shape", []) if isinstance(info, dict) else []
            if not all(isinstance(d, int) and d >= 0 for d in shape):
                raise QuantwiseError(f"{path.name}: a tensor header has an invalid shape {shape}", "give safetensors files written by save_pretrained")
            stored += math.prod(shape)
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    with torch.device("meta"):
        empty = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    needed = sum(p.numel() for p in empty.parameters())  # tied parameters once
    if needed > stored:
        raise QuantwiseError(f"{model_dir}: its config describes a model of {needed / 1e6:.1f} M parameters, but its weights hold {stored / 1e6:.1f} M values",
                             "give the config.json that belongs to these weights")


def load_private(model_dir: Path, dtype: torch.dtype = torch.float32, defer_blocks: bool = False) -> tuple[nn.Module, DeferredBlocks | None] | None:
    """(the model in ``model_dir`` with its weights read into private memory, the deferred
    decoder blocks when ``defer_blocks``), or None when its files do not match the model built
    from its config (see the module docstring)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    if sys.byteorder != "little":
        return None
    files = sorted(model_dir.glob("*.safetensors"))
    headers = [(path, *read_header(path)) for path in files]
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    model.tie_weights()  # tied parameters are stored once, under either name
    targets = _targets(model)
    stored = {name for _, _, header in headers for name in header}
    persistent = {name for name in model.state_dict()}
    tied = {name for name in persistent - stored if _is_tied(model, name, stored)}
    if stored - set(targets) or persistent - stored - tied:
        log.info("%s: safetensors keys do not match the model one to one; using from_pretrained", model_dir)
        return None
    blocks = getattr(getattr(model, "model", None), "layers", None) if defer_blocks else None
    deferred: dict[int, list[_Stored]] = {}
    read: list[_Stored] = []
    for path, start, header in headers:
        with open(path, "rb") as f:
            for name, info in header.items():
                index = _block_index(name) if isinstance(blocks, nn.ModuleList) else None
                target = targets[name]
                if index is None:
                    _read_into(f, start, info, target, name)
                    read.append(_Stored(path, start, name, info, target, tuple(target.shape)))
                    continue
                deferred.setdefault(index, []).append(_Stored(path, start, name, info, target, tuple(target.shape)))
                target.data = torch.empty(0, dtype=target.dtype)  # its allocation was never touched: not resident
    model.tie_weights()
    return model.eval(), (DeferredBlocks(blocks, deferred, read) if deferred else None)


def _block_index(name: str) -> int | None:
    if not name.startswith(BLOCK_PREFIX):
        return None
    index = name[len(BLOCK_PREFIX):].split(".", 1)[0]
    return int(index) if index.isdigit() else None


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
