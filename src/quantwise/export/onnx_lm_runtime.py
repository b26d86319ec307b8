"""An exported language model run in ONNX Runtime with its KV cache.

The graph ``onnx_llm`` writes takes ``input_ids`` [batch, sequence] and, per layer, the cache so far
(``past_key_{i}``, ``past_value_{i}``: [batch, kv_heads, past, head_dim], ``past`` may be 0) and
returns ``logits`` and the cache extended by the new tokens (``present_key_{i}``, ...). One file
scores text (empty cache, the whole window at once) and generates (one token per call, the
cache fed back).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

PAST = "past_"
PRESENT = "present_"


class OnnxLM:
    """Greedy generation and scoring with an exported causal LM (batch 1 for generation)."""

    def __init__(self, path: str | Path, threads: int) -> None:
        from quantwise.export.onnx_target import open_session

        self.session = open_session(Path(path), threads)
        inputs = self.session.get_inputs()
        self.past = [i.name for i in inputs if i.name.startswith(PAST)]
        self.present = [PRESENT + n[len(PAST):] for n in self.past]
        self.heads, self.head_dim = (int(d) for d in (inputs[1].shape[1], inputs[1].shape[3])) if self.past else (0, 0)

    def empty_cache(self, batch: int = 1) -> dict[str, np.ndarray]:
        return {n: np.zeros((batch, self.heads, 0, self.head_dim), np.float32) for n in self.past}

    def step(self, ids: np.ndarray, cache: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits for ``ids`` [batch, n] after ``cache``, and the cache extended by them."""
        out = self.session.run(["logits", *self.present], {"input_ids": ids, **cache})
        return out[0], dict(zip(self.past, out[1:]))

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits of a whole window scored at once (empty cache): ``model(ids).logits``."""
        ids = ids.numpy().astype(np.int64)
        return torch.from_numpy(self.step(ids, self.empty_cache(len(ids)))[0])

    def cached_logits(self, ids: torch.Tensor, prefix: int) -> torch.Tensor:
        """Logits [1, n, vocab] of the 1-D ``ids``: the first ``prefix`` tokens at once, every later one
        alone through the cache. Equal to ``self(ids)`` when the cache path is right."""
        ids = ids.view(1, -1).numpy().astype(np.int64)
        logits, cache = self.step(ids[:, :prefix], self.empty_cache())
        steps = [logits]
        for k in range(prefix, ids.shape[1]):
            logits, cache = self.step(ids[:, k : k + 1], cache)
            steps.append(logits)
        return torch.from_numpy(np.concatenate(steps, axis=1))

    def tokens(self, prompt: torch.Tensor, new_tokens: int, eos: int | None = None) -> Iterator[int]:
        """Yield up to ``new_tokens`` greedy token ids after the 1-D ``prompt`` (as ``llm.decode.Decoder.tokens``)."""
        logits, cache = self.step(prompt.view(1, -1).numpy().astype(np.int64), self.empty_cache())
        token = int(logits[0, -1].argmax())
        for i in range(new_tokens):
            yield token
            if (eos is not None and token == eos) or i + 1 == new_tokens:
                return
            logits, cache = self.step(np.array([[token]], np.int64), cache)
            token = int(logits[0, -1].argmax())
