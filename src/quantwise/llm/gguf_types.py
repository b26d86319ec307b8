"""The llama.cpp block type of every tensor a GGUF recipe quantizes: llama.cpp's own rule for a
file type, or (``type=auto``) the allocation from measured sensitivity under a size budget."""
from __future__ import annotations

import time
from collections import Counter

from torch import nn

from quantwise.config import GGUFWeights
from quantwise.errors import QuantwiseError
from quantwise.gguf.types import TensorType
from quantwise.llm.blocks import block_linears, calibration_batches, decoder_layers
from quantwise.llm.model import LanguageModel
from quantwise.progress import ProgressFn

FISHER_WINDOWS = 32  # calibration windows for the sensitivity pass (one backward pass each)


def _tensors(model: nn.Module) -> dict[str, nn.Module]:
    """Every module whose weight a GGUF recipe quantizes: the decoder Linears and the token table (and an untied output layer)."""

    out: dict[str, nn.Module] = dict(block_linears(model))
    out["model.embed_tokens"] = model.get_input_embeddings()
    if not getattr(model.config, "tie_word_embeddings", False):
        out["lm_head"] = model.get_output_embeddings()
    return out


def _cols(module: nn.Module) -> int:
    """Row length, known before the weights are read (a deferred block's are still in the file)."""
    return module.in_features if isinstance(module, nn.Linear) else module.embedding_dim


def gguf_types(model: nn.Module, recipe: GGUFWeights) -> dict[str, TensorType]:
    """By llama.cpp's rule for ``recipe.type`` (for ``auto``: its budget's, to check that every tensor
    fits some type); refused in one line if a tensor fits no type."""
    from quantwise.gguf.types import choose_type

    n_layers = len(decoder_layers(model))
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    try:
        rule = {name: choose_type(recipe.file_type, name, _cols(m), n_layers, tied, recipe.pure, recipe.needs_calibration)
                for name, m in _tensors(model).items()}
    except ValueError as err:
        raise QuantwiseError(str(err), "this model's shapes fit no llama.cpp block type; use a weight-only recipe and --to onnx") from None
    if recipe.type == "AUTO":
        _budget(model, recipe, rule)  # refuse an impossible budget before the slow work
    return rule


def _budget(model: nn.Module, recipe: GGUFWeights, rule: dict[str, TensorType]) -> tuple[int, str]:
    """(bytes, description) an auto file may take; refused if no choice of the allowed types fits."""
    from quantwise.gguf.allocate import CANDIDATES, fitting_types, tensor_bytes

    shapes = {name: (m.num_embeddings if isinstance(m, nn.Embedding) else m.out_features, _cols(m)) for name, m in _tensors(model).items()}
    candidates = recipe.types or CANDIDATES
    floor = 0
    for name, (rows, cols) in shapes.items():
        fits = fitting_types(cols, candidates)
        if not fits:
            raise QuantwiseError(f"{name}: rows of {cols} weights fit none of the types {', '.join(candidates)}",
                                 "add a type of 32-weight blocks (Q4_0, Q5_0, Q8_0, ...) to types=")
        floor += min(tensor_bytes(t, rows, cols) for t in fits)
    if recipe.bpw:
        budget = int(recipe.bpw * sum(r * c for r, c in shapes.values()) / 8)
        what = f"{recipe.bpw:g} bits per weight"
    else:
        budget = sum(tensor_bytes(rule[n].chosen, *shapes[n]) for n in shapes)
        what = f"the size of llama.cpp's {recipe.budget} file of this model"
    if floor > budget:
        raise QuantwiseError(f"type=auto: {what} ({budget / 1e6:.1f} MB) is below the smallest file the types {', '.join(candidates)} give "
                             f"({floor / 1e6:.1f} MB)", "raise the budget (budget=Q5_K_M, a larger bpw=) or allow cheaper types in types=")
    return budget, what


def auto_types(lm: LanguageModel, recipe: GGUFWeights, progress: ProgressFn, notes: list[str]) -> dict[str, TensorType]:
    """Each tensor's type from its Fisher-estimated loss, the summed bytes within the budget."""
    from quantwise.gguf.allocate import CANDIDATES, allocate, estimated_losses
    from quantwise.llm.fisher import fisher_blocks

    start = time.perf_counter()
    model = lm.model
    rule = gguf_types(model, recipe)
    budget, what = _budget(model, recipe, rule)
    weights = {name: m.weight for name, m in _tensors(model).items()}
    candidates = recipe.types or CANDIDATES
    batches = calibration_batches(lm, min(recipe.calibration_samples, FISHER_WINDOWS), recipe.calibration_context)
    fisher = fisher_blocks(model, weights, batches, progress=progress)
    costs = {}
    for name, w in progress("estimating each type's loss", list(weights.items()), len(weights)):
        costs[name] = estimated_losses(w.data, fisher.pop(name), candidates)
    try:
        chosen = allocate(costs, budget)
    except ValueError as err:
        raise QuantwiseError(f"type=auto: {err}", "raise the budget (budget=Q5_K_M, bpw=...) or allow cheaper types in types=") from None
    used = sum(c.bytes for c in chosen.values())
    counts = Counter(c.type for c in chosen.values())
    notes.append(f"block types chosen by measured sensitivity (Fisher information on {len(batches)} calibration windows) within {what}: "
                 f"{used / 1e6:.1f} of {budget / 1e6:.1f} MB; {time.perf_counter() - start:.0f} s")
    if lm.gguf_path is not None and "Q4_1" in lm.gguf_path.name.upper() and "Q4_1" in counts:
        notes.append("this model's weights came from a Q4_1 file and lie on Q4_1's grid already: that type reproduces them almost "
                     "exactly and costs nothing by this measure (restrict types= to compare with llama.cpp's mixtures)")
    return {name: TensorType(name, c.type, c.type, f"type=auto: Fisher-weighted error {c.loss:.3g} (relative units) "
                             f"(llama.cpp's {recipe.budget} rule: {rule[name].chosen})") for name, c in chosen.items()}
