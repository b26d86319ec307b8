"""Save and reload quantized language models (safetensors + manifest + tokenizer files).

Stored: for every quantized Linear its codes (4-bit codes packed two per byte), scales and
zero-points; every other tensor (embedding, norms) in the activation dtype the recipe runs
in; the model's config and the tokenizer's files. Loading builds the architecture from the
config (no weights file of the original model is needed), loads the tensors and turns the
codes into torchao tensors, which gives the same logits as before saving (checked when
the artifact is written).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantwise.artifact import store
from quantwise.config import recipe_from_dict, recipe_to_dict
from quantwise.errors import QuantwiseError, first_line
from quantwise.gguf.quant import GGUFQuant
from quantwise.algorithms import GroupGrid, GroupQuant
from quantwise.llm.quantize import LLMRecipe, QuantizedLM
from quantwise.llm.runtime import materialize, run_dtype
from quantwise.versions import versions

KIND = "language-model"
TOKENIZER_DIR = store.TOKENIZER_DIR


@dataclass
class LoadedLM:
    model: nn.Module
    tokenizer: Any
    recipe: LLMRecipe
    manifest_metrics: dict[str, Any]
    notes: list[str]

    @property
    def module(self) -> nn.Module:
        return self.model


def pack4(codes: torch.Tensor) -> torch.Tensor:
    """[out, in] codes 0..15 -> [out, in/2] bytes (low nibble = even column)."""
    codes = codes.to(torch.uint8)
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack4(packed: torch.Tensor) -> torch.Tensor:
    out = torch.empty(packed.shape[0], packed.shape[1] * 2, dtype=torch.uint8)
    out[:, 0::2] = packed & 0x0F
    out[:, 1::2] = packed >> 4
    return out


def _tensors(q: QuantizedLM) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    dtype = run_dtype(q.recipe)
    quantized = {f"{name}.weight" for name in q.layers}
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    state = q.model.state_dict()
    # a GGUF recipe quantizes the token table itself, a weight-only one the tied output layer: either way the
    # table's codes are stored once and its float twin not at all
    seen.update(state[f"{n}.weight"].data_ptr() for n, v in q.layers.items() if isinstance(v, GGUFQuant) and f"{n}.weight" in state)
    read_from_head = {k for k in state if _read_from_head(q.model, k, q.layers)}
    for key, value in state.items():
        if key in quantized or key in read_from_head or value.data_ptr() in seen:
            continue  # quantized weights are stored as codes; tied copies once
        seen.add(value.data_ptr())
        tensors[key] = value.detach().to(dtype if value.is_floating_point() else value.dtype).clone()
    layers = {}
    for name, quant in q.layers.items():
        if isinstance(quant, GGUFQuant):
            tensors[f"{name}.blocks"] = quant.blocks()
            layers[name] = {"gguf_type": quant.fmt.name, "shape": list(quant.shape), "reason": quant.reason}
            continue
        grid = quant.grid
        tensors[f"{name}.qdata"] = pack4(quant.qdata) if grid.bits == 4 else quant.qdata
        tensors[f"{name}.scale"], tensors[f"{name}.zero"] = quant.scale, quant.zero
        layers[name] = {"bits": grid.bits, "group_size": grid.group_size, "symmetric": grid.symmetric, "shape": list(quant.shape)}
    return tensors, layers


def save(q: QuantizedLM, tokenizer: Any, model_name: str, path: str | Path, metrics: dict[str, Any] | None = None, overwrite: bool = False, verify: bool = True) -> Path:
    tensors, layers = _tensors(q)
    config = q.model.config.to_dict()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        files = {f"{TOKENIZER_DIR}/{p.name}": p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    art = store.Artifact(
        model=model_name, recipe=recipe_to_dict(q.recipe), tensors=tensors,
        meta={"kind": KIND, "config": config, "layers": layers}, inputs=[], metrics=metrics or {},
        versions=versions(), notes=q.notes, files=files,
    )
    return store.write(art, Path(path), overwrite=overwrite, verify=(lambda written: _verify(q.model, written)) if verify else None)


@torch.no_grad()
def _verify(model: nn.Module, path: Path) -> None:
    ids = torch.arange(1, 17).view(1, -1)
    before = model(ids).logits
    after = load(path).model(ids).logits
    if not torch.equal(before, after):
        diff = float((before.float() - after.float()).abs().max())
        raise QuantwiseError(f"the saved model does not reproduce the quantized logits (max diff {diff:.3g}); nothing was kept", "report this as a bug")


def is_language_model_artifact(path: str | Path) -> bool:
    try:
        manifest = json.loads((Path(path) / store.MANIFEST).read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and isinstance(manifest.get("meta"), dict) and manifest["meta"].get("kind") == KIND


@dataclass
class StoredLM:
    """An artifact's parts before its codes become torchao tensors: the architecture with every
    other tensor loaded (in the recipe's activation dtype), and the quantized layers' codes."""

    model: nn.Module
    layers: dict[str, GroupQuant]
    tokenizer: Any
    recipe: LLMRecipe
    metrics: dict[str, Any]
    notes: list[str]
    spec: str  # the model spec it was quantized from


def read(path: str | Path, art: store.Artifact | None = None) -> StoredLM:
    """The artifact at ``path`` (``art``: its contents, where the caller has read them already)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    art = art if art is not None else store.read(Path(path))
    meta = art.meta
    if meta.get("kind") != KIND:
        raise QuantwiseError(f"{path} does not hold a language model", "use 'quantwise eval' for other artifacts")
    recipe = recipe_from_dict(art.recipe)
    config_dict = dict(meta["config"])
    try:
        config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)  # a registered architecture only
        with torch.device("meta"):  # sizes first: a config cannot make quantwise allocate more than the file holds
            _check_sizes(AutoModelForCausalLM.from_config(config, trust_remote_code=False), art.tensors, meta["layers"], Path(path))
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(Path(path) / TOKENIZER_DIR, trust_remote_code=False)
    except (KeyError, ValueError, OSError) as err:
        raise QuantwiseError(f"{path}: cannot rebuild the model or tokenizer ({err})".splitlines()[0], "re-create the artifact with 'quantwise quantize'") from None
    layers: dict[str, GroupQuant | GGUFQuant] = {}
    for name, spec in meta["layers"].items():
        if "gguf_type" in spec:
            try:
                layers[name] = GGUFQuant.from_blocks(art.tensors.pop(f"{name}.blocks"), spec["gguf_type"], int(spec["shape"][1]), str(spec.get("reason", "")))
            except (KeyError, ValueError, TypeError, IndexError) as err:
                raise QuantwiseError(f"{path}: the GGUF blocks of {name} are unreadable ({first_line(err)})", "re-create the artifact") from None
            continue
        grid = GroupGrid(spec["bits"], spec["group_size"], spec["symmetric"])
        codes = art.tensors.pop(f"{name}.qdata")
        codes = unpack4(codes) if grid.bits == 4 else codes
        layers[name] = GroupQuant(codes, art.tensors.pop(f"{name}.scale"), art.tensors.pop(f"{name}.zero"), grid)
    model.to(run_dtype(recipe))
    missing, unexpected = model.load_state_dict(art.tensors, strict=False)
    quantized = {f"{n}.weight" for n in layers}
    missing = [k for k in missing if k not in quantized and not _tied(model, k) and not _read_from_head(model, k, layers)]
    if _tied_head(model.config, layers):  # the float table, for whatever reads it before materialize: the head's weights
        model.get_input_embeddings().weight.data.copy_(layers["lm_head"].dequantize(run_dtype(recipe)))
    if missing or unexpected:
        raise QuantwiseError(f"{path}: tensors do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})", "re-create the artifact")
    return StoredLM(model, layers, tokenizer, recipe, art.metrics, art.notes, art.model)


def _check_sizes(empty: nn.Module, tensors: dict[str, torch.Tensor], layers: dict[str, Any], path: Path) -> None:
    """Every tensor of the architecture the manifest's config describes must be in the file with the
    same shape (a quantized layer's weight as its codes; a tied output layer as the embedding)."""
    quantized = {f"{name}.weight": spec for name, spec in layers.items()}
    for name, tensor in empty.state_dict().items():
        if name in quantized and "gguf_type" in quantized[name]:
            _check_blocks(name, quantized[name], tensors.get(f"{name.removesuffix('.weight')}.blocks"), tensor, path)
            continue
        if name in quantized:
            spec, codes = quantized[name], tensors.get(f"{name.removesuffix('.weight')}.qdata")
            per_byte = 2 if spec.get("bits") == 4 else 1
            if codes is None or codes.numel() * per_byte != tensor.numel() or list(spec.get("shape", tensor.shape)) != list(tensor.shape):
                raise QuantwiseError(f"{path}: the codes of {name} do not fit the shape {list(tensor.shape)} the manifest's config makes", "re-create the artifact")
            continue
        if name not in tensors:
            if _tied(empty, name) or _read_from_head(empty, name, layers):
                continue
            raise QuantwiseError(f"{path}: the manifest's config needs tensor {name}, which the file lacks", "re-create the artifact")
        if tuple(tensors[name].shape) != tuple(tensor.shape):
            raise QuantwiseError(f"{path}: the manifest's config makes {name} {list(tensor.shape)}, the file holds {list(tensors[name].shape)}",
                                 "re-create the artifact")


def _check_blocks(name: str, spec: dict[str, Any], blocks: torch.Tensor | None, tensor: torch.Tensor, path: Path) -> None:
    from quantwise.gguf.formats import format_named

    try:
        fmt = format_named(str(spec["gguf_type"]))
    except ValueError as err:
        raise QuantwiseError(f"{path}: {name}: {err}", "re-create the artifact") from None
    rows, cols = tensor.shape
    if (blocks is None or list(spec.get("shape", [])) != [rows, cols] or not fmt.fits(cols)
            or tuple(blocks.shape) != (rows, fmt.row_bytes(cols)) or blocks.dtype != torch.uint8):
        raise QuantwiseError(f"{path}: the {fmt.name} blocks of {name} do not fit the shape {[rows, cols]} the manifest's config makes", "re-create the artifact")


def load(path: str | Path, art: store.Artifact | None = None) -> LoadedLM:
    stored = read(path, art)
    model = materialize(stored.model, stored.layers, stored.recipe)
    return LoadedLM(model, stored.tokenizer, stored.recipe, stored.metrics, stored.notes)


def _tied(model: nn.Module, key: str) -> bool:
    return key == "lm_head.weight" and getattr(model.config, "tie_word_embeddings", False)


def _tied_head(config: Any, layers: dict[str, Any]) -> bool:
    """A weight-only recipe quantized the output layer of a model whose token table is tied to it
    (``layers``: the codes, or the manifest's specs of them)."""
    head = layers.get("lm_head")
    gguf = isinstance(head, GGUFQuant) or (isinstance(head, dict) and "gguf_type" in head)
    return head is not None and not gguf and bool(getattr(config, "tie_word_embeddings", False))


def _read_from_head(model: nn.Module, key: str, layers: dict[str, Any]) -> bool:
    """``key`` is the token table of a tied model whose output layer is stored as codes: it is read from them."""
    if not _tied_head(model.config, layers):
        return False
    table = getattr(model.get_input_embeddings(), "weight", None)  # None once materialize swapped in the code lookup
    return table is not None and any(p is table for k, p in model.named_parameters(remove_duplicate=False) if k == key)
