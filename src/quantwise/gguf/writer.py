"""Write a language model as a GGUF file that llama.cpp loads, and read it back to prove it.

The file takes every metadata key of the GGUF the model came from (architecture, tokenizer,
chat template: what llama.cpp needs to load and chat with it), with ``general.file_type`` set to
the recipe's type, and every tensor of that file under the same name, in the same order: the
quantized ones as quantwise's blocks, the others (norms) as float32. Hugging Face parameter names
map to GGUF names with gguf's own table; Llama's q and k rows are permuted back to llama.cpp's
rotary layout (transformers un-permutes them on load), which moves whole rows, so codes and
blocks move with them unchanged.

Only models that came from a GGUF file are written (their tokenizer and chat template are in that
file); only the architectures in :data:`SUPPORTED` (others are refused with that list).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from quantwise.errors import QuantwiseError

__all__ = ["SUPPORTED", "GGUFTensor", "gguf_names", "write", "verify"]

SUPPORTED = ("llama",)
_SKIP_KEYS = ("GGUF.", "general.file_type", "general.quantization_version")


@dataclass
class GGUFTensor:
    """One tensor to write: float32 ``values`` (``[rows, cols]`` or 1-D), or packed ``blocks``
    (``[rows, row_bytes]`` uint8) of block type ``type_name`` whose weights are ``values``."""

    values: torch.Tensor
    blocks: torch.Tensor | None = None
    type_name: str = "F32"


def _reader(path: Path):
    from gguf import GGUFReader

    try:
        return GGUFReader(str(path))
    except Exception as err:  # a corrupt or foreign file: one line
        raise QuantwiseError(f"{path} is not a readable GGUF file ({type(err).__name__}: {str(err).splitlines()[0][:120]})",
                             "give the GGUF file the model came from") from None


def source_architecture(source: Path) -> str:
    reader = _reader(source)
    field = reader.fields.get("general.architecture")
    arch = str(field.contents()) if field is not None else "?"
    if arch not in SUPPORTED:
        raise QuantwiseError(f"the GGUF writer does not support architecture '{arch}'", f"use a model of a supported architecture ({', '.join(SUPPORTED)})")
    return arch


def gguf_names(state_names: list[str], arch: str, n_layers: int) -> dict[str, str]:
    """Hugging Face parameter name -> GGUF tensor name (gguf's own mapping table)."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    arch_enum = next(k for k, v in MODEL_ARCH_NAMES.items() if v == arch)
    table = get_tensor_name_map(arch_enum, n_layers)
    out = {}
    for name in state_names:
        mapped = table.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise QuantwiseError(f"no GGUF name for tensor {name}", f"the GGUF writer supports {', '.join(SUPPORTED)} models")
        out[name] = mapped
    return out


def llama_permute(rows: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's rotary row order for q (``heads`` = attention heads) or k (KV heads):
    the inverse of what transformers applies when it loads a GGUF."""
    n = rows.shape[0]
    return rows.reshape(heads, 2, n // heads // 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)


def write(path: Path, source: Path, tensors: dict[str, GGUFTensor], file_type: int) -> None:
    """Write ``tensors`` (GGUF names) with ``source``'s metadata; every tensor of ``source`` must be given."""
    from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

    reader = _reader(source)
    arch = str(reader.fields["general.architecture"].contents())
    names = [t.name for t in reader.tensors]
    missing, extra = [n for n in names if n not in tensors], [n for n in tensors if n not in names]
    if missing or extra:
        raise QuantwiseError(f"the model's tensors do not match {source.name}'s (missing {missing[:3]}, extra {extra[:3]})",
                             "export a model quantized from that GGUF file")
    logging.getLogger("gguf").setLevel(logging.WARNING)  # its writer logs every file it writes at INFO
    writer = GGUFWriter(str(path), arch)
    for name, field in reader.fields.items():
        if name.startswith(_SKIP_KEYS) or name == "general.architecture":
            continue
        main = field.types[0]
        sub = field.types[-1] if main == GGUFValueType.ARRAY and len(field.types) > 1 else None
        writer.add_key_value(name, field.contents(), main, sub_type=sub)
    writer.add_uint32("general.file_type", int(file_type))
    writer.add_uint32("general.quantization_version", 2)
    for name in names:
        t = tensors[name]
        if t.blocks is None:
            writer.add_tensor(name, t.values.detach().to(torch.float32).contiguous().numpy())
        else:
            writer.add_tensor(name, t.blocks.contiguous().numpy(), raw_dtype=GGMLQuantizationType[t.type_name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@dataclass(frozen=True)
class FileCheck:
    tensors: int  # tensors compared
    quantized: int  # of them in block types
    bytes_equal: bool  # every tensor's bytes in the file are the bytes quantwise packed
    weights_equal: bool  # gguf's reference dequantizers give quantwise's float32 weights bit for bit
    first_mismatch: str = ""


def verify(path: Path, tensors: dict[str, GGUFTensor]) -> FileCheck:
    """Read ``path`` back with the gguf package: each tensor's bytes and its dequantized weights
    must equal what quantwise computed, bit for bit."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    reader = _reader(path)
    found = {t.name: t for t in reader.tensors}
    bytes_ok, weights_ok, first = True, True, ""
    quantized = 0
    for name, ours in tensors.items():
        t = found.get(name)
        if t is None:
            return FileCheck(len(found), quantized, False, False, f"{name} is missing")
        data = np.asarray(t.data)
        kind = GGMLQuantizationType(t.tensor_type).name
        expected = ours.values.detach().to(torch.float32).contiguous().numpy()
        if ours.blocks is not None:
            quantized += 1
            same_bytes = kind == ours.type_name and np.array_equal(data.reshape(ours.blocks.shape), ours.blocks.numpy())
            theirs = dequantize(data, t.tensor_type).reshape(expected.shape)
        else:
            same_bytes = kind == "F32"
            theirs = data.reshape(expected.shape).astype(np.float32)
        same_weights = theirs.shape == expected.shape and np.array_equal(theirs.view(np.uint32), expected.view(np.uint32))
        if not (same_bytes and same_weights) and not first:
            first = f"{name} ({kind}): bytes {'equal' if same_bytes else 'differ'}, weights {'equal' if same_weights else 'differ'}"
        bytes_ok &= same_bytes
        weights_ok &= same_weights
    return FileCheck(len(tensors), quantized, bytes_ok, weights_ok, first)

