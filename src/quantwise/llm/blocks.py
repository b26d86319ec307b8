"""The decoder stack of a causal language model: its blocks, their Linear layers, and the
calibration windows that quantization runs through them."""
from __future__ import annotations

import torch
from torch import nn

from quantwise.errors import QuantwiseError
from quantwise.llm.model import LanguageModel
from quantwise.llm.perplexity import token_ids, windows


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise QuantwiseError(f"{type(model).__name__} has no model.layers decoder stack", "give a decoder-only transformer (Llama, Mistral, Qwen2, ...)")
    return layers


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    out = {}
    for i, layer in enumerate(decoder_layers(model)):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                out[f"model.layers.{i}.{name}"] = module
    if not out:
        raise QuantwiseError("the decoder layers contain no nn.Linear", "give a transformer language model with Linear projections")
    return out


def calibration_batches(lm: LanguageModel, samples: int, context: int) -> torch.Tensor:
    lm.check_context(context, "calibration_context")
    ids = token_ids(lm.tokenizer, lm.text.calibration, samples * context)
    if ids.numel() < context:
        raise QuantwiseError(f"calibration text has {ids.numel()} tokens, fewer than one window of {context}", "give more text or a shorter calibration_context")
    return windows(ids, context, samples * context)
