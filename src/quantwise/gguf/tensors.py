"""A Hugging Face causal LM's tensors under their GGUF names, quantized ones as llama.cpp blocks."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .writer import GGUFTensor, gguf_names, llama_permute


def model_tensors(model: nn.Module, layers: dict[str, Any], arch: str) -> dict[str, GGUFTensor]:
    """Every tensor of ``model`` under its GGUF name: quantized ones (``layers``, GGUFQuant by
    Hugging Face module name) as blocks, the rest as float32; a tied output layer once."""
    config = model.config
    n_layers = int(config.num_hidden_layers)
    state = {k: v for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    names = gguf_names(list(state), arch, n_layers)
    heads, kv_heads = int(config.num_attention_heads), int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    out = {}
    for key, value in state.items():
        module = key.removesuffix(".weight")
        quant = layers.get(module) if key.endswith(".weight") else None
        if quant is not None:
            tensor = GGUFTensor(quant.dequantize(), quant.blocks(), quant.fmt.name)
        else:
            tensor = GGUFTensor(value.detach().to(torch.float32))
        if arch == "llama" and key.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight")):
            h = heads if ".q_proj." in key else kv_heads
            tensor = GGUFTensor(llama_permute(tensor.values, h), None if tensor.blocks is None else llama_permute(tensor.blocks, h), tensor.type_name)
        out[names[key]] = tensor
    return out
