"""A token table read from int8 codes: the tied output layer's, so the table is stored once.

Hugging Face's small models tie the output layer to the token table (SmolLM2: 28 M of its 135 M
weights). Quantizing the output layer as a separate int8 copy and keeping the float table would
store the table twice; instead the lookup reads the output layer's own codes and per-row scales::

    embed(ids) = (codes[ids] * scale[ids]) computed in float32, returned in the model's dtype

which is the dequantized output-layer weight, row by row: tied stays tied.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["QuantizedEmbedding"]


class QuantizedEmbedding(nn.Module):
    """``nn.Embedding``'s lookup over int8 codes ``[vocab, dim]`` and float32 row scales ``[vocab]``."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> None:
        super().__init__()
        if codes.dtype != torch.int8 or codes.dim() != 2 or scale.shape != (codes.shape[0],):
            raise ValueError(f"expected int8 codes [vocab, dim] and scales [vocab], got {codes.dtype} {tuple(codes.shape)} and {tuple(scale.shape)}")
        self.register_buffer("codes", codes, persistent=False)  # shared with the output layer's weight, not a copy
        self.register_buffer("scale", scale.to(torch.float32), persistent=False)
        self.num_embeddings, self.embedding_dim = codes.shape
        self.dtype = dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = nn.functional.embedding(ids, self.codes).to(torch.float32)
        return (rows * self.scale[ids].unsqueeze(-1)).to(self.dtype)
