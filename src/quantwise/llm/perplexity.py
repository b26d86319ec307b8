"""Token ids for calibration and evaluation, and perplexity over fixed windows.

Perplexity is computed over non-overlapping windows of ``context`` tokens (stride =
context) of the evaluation text, joined article after article; each window is scored on
all its tokens but the first (the usual "sliding window with stride = context" rule, so
every scored token sees between 1 and context-1 tokens of history). The window length and
token count are part of every report.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from quantwise.errors import QuantwiseError
from quantwise.progress import ProgressFn, no_progress



@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    tokens: int  # tokens scored
    windows: int
    context: int

    @property
    def setting(self) -> str:
        return f"{self.windows} windows x {self.context} tokens, stride {self.context} ({self.tokens} tokens scored)"


def token_ids(tokenizer, documents: Sequence[str], limit: int | None = None) -> torch.Tensor:
    """The documents tokenized and joined (EOS between documents), as one 1-D int64 tensor."""
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids: list[int] = []
    for doc in documents:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"] + sep)
        if limit is not None and len(ids) >= limit:
            break
    out = torch.tensor(ids[:limit] if limit else ids, dtype=torch.long)
    return out


def windows(ids: torch.Tensor, context: int, n_tokens: int) -> torch.Tensor:
    """[n_windows, context] non-overlapping windows covering the first ``n_tokens`` ids."""
    n = min(n_tokens, ids.numel()) // context
    if n == 0:
        raise QuantwiseError(f"the text has {ids.numel()} tokens, fewer than one window of {context}", "give more text or a shorter --context")
    return ids[: n * context].view(n, context)


def text_windows(tokenizer, documents: Sequence[str], context: int, n_tokens: int) -> torch.Tensor:
    """The first ``n_tokens`` tokens of ``documents`` as [n_windows, context] windows."""
    return windows(token_ids(tokenizer, documents, n_tokens), context, n_tokens)


@torch.no_grad()
def perplexity(model: nn.Module, batches: torch.Tensor, batch_size: int = 4, progress: ProgressFn = no_progress) -> PerplexityResult:
    """Perplexity of a Hugging Face causal LM (or any ``model(ids).logits``) over windows."""
    total, count = 0.0, 0
    starts = range(0, len(batches), batch_size)
    for start in progress("perplexity", starts, len(starts)):
        chunk = batches[start : start + batch_size]
        logits = model(chunk).logits.float()
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += chunk[:, 1:].numel()
    return PerplexityResult(math.exp(total / count), count, len(batches), batches.shape[1])


def window_scores(logits_fn: Any, ids: torch.Tensor, progress: ProgressFn, label: str) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(summed NLL over the scored tokens, argmax per scored position, logits of the first window)."""
    total, argmax, first = 0.0, [], None
    for i in progress(label, range(len(ids)), len(ids)):
        window = ids[i : i + 1]
        logits = logits_fn(window).float()
        total += float(F.cross_entropy(logits[0, :-1], window[0, 1:], reduction="sum"))
        argmax.append(logits[0, :-1].argmax(-1))
        first = logits[0] if first is None else first
    return total, torch.cat(argmax), first
