"""Greedy decoding with a static KV cache, eager or compiled, and its speed at batch 1.

The decode step always has the same shapes (one token, a fixed-size cache), so it
compiles once with ``torch.compile`` and replays; prefill runs eagerly (it is one call).
"""
from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from quantwise.progress import ProgressFn, no_progress


@dataclass(frozen=True)
class Speed:
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    compile_s: float
    decode_tokens: int
    prefill_tokens: int
    repeats: int


def cache_kwarg(model: nn.Module) -> str:
    """The name a Hugging Face causal LM takes its KV cache by (``cache`` since transformers 5.x
    renamed ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class Decoder:
    """Greedy generation for a Hugging Face causal LM with a static cache.

    Every step passes the token positions explicitly: a model that would otherwise derive them
    from the cache's length (a Python int for sliding-window and hybrid caches) would recompile
    the compiled step on every token."""

    def __init__(self, model: nn.Module, max_len: int, compiled: bool = False) -> None:
        from transformers import StaticCache

        self.model = model
        self.max_len = max_len
        self.cache = StaticCache(config=model.config, max_cache_len=max_len)
        self._cache_kwarg = cache_kwarg(model)
        self._step: Callable[..., torch.Tensor] = self._forward
        if compiled:
            # dynamic=None: one compilation for a full-attention cache (its shapes never change); a
            # sliding-window cache's Python-int length becomes symbolic at its first change, so such a
            # model compiles a few times (before / after its window fills), not once per token
            self._step = torch.compile(self._forward)

    def _forward(self, ids: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        kwargs = {self._cache_kwarg: self.cache}
        out = self.model(input_ids=ids, position_ids=position.view(1, -1), cache_position=position, use_cache=True, **kwargs)
        return out.logits[:, -1, :]

    @torch.no_grad()
    def tokens(self, prompt: torch.Tensor, new_tokens: int, eos: int | None = None) -> Iterator[int]:
        """Yield up to ``new_tokens`` greedy token ids after the 1-D ``prompt``."""
        n = prompt.numel()
        if n + new_tokens > self.max_len:
            raise ValueError(f"prompt ({n}) + new tokens ({new_tokens}) exceed the cache ({self.max_len})")
        self.cache.reset()
        logits = self._forward(prompt.view(1, -1), torch.arange(n))
        token = int(logits.argmax(-1))
        for i in range(new_tokens):
            yield token
            if eos is not None and token == eos:
                return
            if i + 1 == new_tokens:
                return
            logits = self._step(torch.tensor([[token]]), torch.tensor([n + i]))
            token = int(logits.argmax(-1))


def decode_rate(tokens: Callable[[torch.Tensor, int], Iterator[int]], prompt: torch.Tensor, new_tokens: int, repeats: int) -> list[float]:
    """Decode tokens/s of each of ``repeats`` greedy generations by ``tokens(prompt, n)`` (any
    generator as ``Decoder.tokens``): the tokens after the first, timed from the first decode step,
    so prefill does not count."""
    rates = []
    for _ in range(repeats):
        stream = tokens(prompt, new_tokens)
        next(stream)  # prefill + first token
        t0 = time.perf_counter()
        count = sum(1 for _ in stream)
        rates.append(count / (time.perf_counter() - t0))
    return rates


@torch.no_grad()
def measure_speed(model: nn.Module, prompt: torch.Tensor, prefill: torch.Tensor, compiled: bool, new_tokens: int = 64, repeats: int = 5,
                  progress: ProgressFn = no_progress, label: str = "") -> Speed:
    """Median decode and prefill tokens/s at batch 1 (warm-up excluded).

    decode = (new_tokens - 1) tokens after the first, timed from the first decode step, so
    prefill time does not count; prefill = one forward over ``prefill`` (1-D ids) without
    cache, tokens / seconds.
    """
    steps = iter(progress(f"timing {label or 'decode'}: {'compiling, ' if compiled else ''}decode, prefill", range(3), 3))
    next(steps)
    decoder = Decoder(model, prompt.numel() + new_tokens, compiled)
    start = time.perf_counter()
    for _ in decoder.tokens(prompt, min(new_tokens, 4)):  # warm-up and compilation
        pass
    compile_s = time.perf_counter() - start
    next(steps)
    decode = decode_rate(decoder.tokens, prompt, new_tokens, repeats)
    next(steps)
    model(prefill.view(1, -1), use_cache=False)
    prefill_rates = []
    for _ in range(max(2, repeats // 2)):
        t0 = time.perf_counter()
        model(prefill.view(1, -1), use_cache=False)
        prefill_rates.append(prefill.numel() / (time.perf_counter() - t0))
    for _ in steps:  # the bar's last step, and its end
        pass
    return Speed(statistics.median(decode), statistics.median(prefill_rates), compile_s, new_tokens - 1, prefill.numel(), repeats)
