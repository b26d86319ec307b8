"""Which block type each tensor gets: llama.cpp's own rule for its file types (``llama-quant.cpp``,
``llama_tensor_get_type``), restricted to dense Llama-style models and the file types quantwise
writes, plus llama.cpp's fallback for rows that do not fit a K-quant's 256-weight super-blocks.

Tensors are named by role (``attn_q``, ``attn_k``, ``attn_v``, ``attn_output``, ``ffn_gate``,
``ffn_up``, ``ffn_down``, ``token_embd``, ``output``) and decoder layer.
"""
from __future__ import annotations

from dataclasses import dataclass

from .formats import FORMATS

__all__ = ["TensorType", "BASE_TYPE", "FALLBACK", "LLAMA_FILE_TYPE", "role_of", "choose_type"]

BASE_TYPE = {"Q8_0": "Q8_0", "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q6_K": "Q6_K",
             "Q4_K_M": "Q4_K", "Q4_K": "Q4_K", "Q5_K_M": "Q5_K", "Q5_K": "Q5_K"}
FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}  # llama.cpp's tensor_type_fallback
# general.file_type values (llama.cpp's llama_ftype)
LLAMA_FILE_TYPE = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q4_K_M": 15, "Q4_K": 15, "Q5_K_M": 17, "Q5_K": 17, "Q6_K": 18}

_ROLES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
          "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


@dataclass(frozen=True)
class TensorType:
    """The type a tensor gets: ``wanted`` by the file type's rule, ``chosen`` after the fallback."""

    name: str
    wanted: str
    chosen: str
    reason: str = ""

    @property
    def fell_back(self) -> bool:
        return self.wanted != self.chosen


def role_of(name: str) -> tuple[str, int | None]:
    """(role, decoder layer) of a Hugging Face Llama parameter name (without ``.weight``)."""
    if name.endswith("embed_tokens"):
        return "token_embd", None
    if name == "lm_head":
        return "output", None
    parts = name.split(".")
    if len(parts) >= 3 and parts[0] == "model" and parts[1] == "layers" and parts[-1] in _ROLES:
        return _ROLES[parts[-1]], int(parts[2])
    raise ValueError(f"{name} is not a tensor of a Llama-style decoder (q/k/v/o, gate/up/down projections, embedding, output)")


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def choose_type(file_type: str, name: str, cols: int, n_layers: int, tied: bool, pure: bool = False, calibrated: bool = False) -> TensorType:
    """The block type of tensor ``name`` (rows of ``cols`` weights) in a file of ``file_type``.

    ``calibrated``: the codes are chosen with calibration data, llama.cpp's "has an importance
    matrix" case (Q4_0 / Q5_0 then give the first eighth of ``ffn_down`` layers Q4_1 / Q5_1)."""
    base = BASE_TYPE[file_type]
    role, layer = role_of(name)
    wanted, reason = base, ""
    if not pure:
        if role == "output" or (tied and role == "token_embd"):
            if cols % FORMATS[base].block:
                wanted, reason = "Q8_0", f"output layer: rows of {cols} do not fit {base}'s blocks of {FORMATS[base].block}"
            elif base != "Q8_0":
                wanted, reason = "Q6_K", "output layer: one type up (llama.cpp's rule)"
        elif role == "attn_v" and file_type in ("Q4_K_M", "Q4_K", "Q5_K_M", "Q5_K") and _more_bits(layer, n_layers):
            wanted, reason = "Q6_K", "attn_v of this layer: one type up (llama.cpp's Q*_K_M rule)"
        elif role == "ffn_down" and file_type in ("Q4_K_M", "Q4_K", "Q5_K_M", "Q5_K") and _more_bits(layer, n_layers):
            wanted, reason = "Q6_K", "ffn_down of this layer: one type up (llama.cpp's Q*_K_M rule)"
        elif role == "ffn_down" and file_type in ("Q4_0", "Q5_0") and calibrated and layer < n_layers // 8:
            wanted = "Q4_1" if file_type == "Q4_0" else "Q5_1"
            reason = f"ffn_down of the first eighth of the layers: {wanted} (llama.cpp's rule when an importance matrix is given)"
    chosen = wanted
    if cols % FORMATS[chosen].block:
        if chosen not in FALLBACK:
            raise ValueError(f"{name}: rows of {cols} weights fit no {chosen} block (a multiple of {FORMATS[chosen].block} is needed)")
        chosen = FALLBACK[chosen]
        reason = f"rows of {cols} are not a multiple of {FORMATS[wanted].block}: {wanted} falls back to {chosen}, as llama.cpp does"
        if cols % FORMATS[chosen].block:
            raise ValueError(f"{name}: rows of {cols} weights fit neither {wanted} nor {chosen}")
    return TensorType(name, wanted, chosen, reason)
