"""How much each weight matters to a language model's loss: the diagonal empirical Fisher.

``F[w] = mean over calibration windows of (d loss / d w)^2``, the loss being the next-token
cross-entropy of the window. To second order, moving the weights by ``delta`` raises the loss by
about ``0.5 * sum(F * delta^2)`` (the quantity :mod:`quantwise.gguf.allocate` ranks block types
with). Averaged over runs of ``block`` columns as the gradients arrive (each parameter's gradient
is folded in by a post-accumulate hook and freed at once), so the extra memory is 1/``block`` of
the weights, not a second copy of them.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from quantwise.progress import ProgressFn, no_progress

__all__ = ["fisher_blocks"]


def fisher_blocks(model: nn.Module, weights: Mapping[str, nn.Parameter], batches: torch.Tensor, block: int = 32,
                  progress: ProgressFn = no_progress) -> dict[str, torch.Tensor]:
    """``{name: [rows, cols / block]}`` mean squared gradient of each 2-D parameter in ``weights``
    over the windows ``batches`` ``[n, context]`` (one window per backward pass)."""
    acc = {name: torch.zeros(p.shape[0], p.shape[1] // block) for name, p in weights.items()}
    by_param = {id(p): name for name, p in weights.items()}  # a tied table is one parameter, one entry
    saved = {id(p): p.requires_grad for p in model.parameters()}
    handles = []

    def fold(p: torch.Tensor) -> None:
        g = p.grad.detach().to(torch.float32)
        acc[by_param[id(p)]] += g.pow(2).reshape(g.shape[0], -1, block).mean(-1)
        p.grad = None

    was_training = model.training
    try:
        for p in model.parameters():
            p.requires_grad_(id(p) in by_param)
        for p in {id(p): p for p in weights.values()}.values():
            handles.append(p.register_post_accumulate_grad_hook(fold))
        model.eval()  # no dropout: the gradients of the model as it will run
        for i in progress("sensitivity (Fisher)", range(len(batches)), len(batches)):
            ids = batches[i : i + 1]
            with torch.enable_grad():
                loss = model(ids, labels=ids, use_cache=False).loss
                loss.backward()
    finally:
        for h in handles:
            h.remove()
        for p in model.parameters():
            p.requires_grad_(saved[id(p)])
            p.grad = None
        model.train(was_training)
    n = max(len(batches), 1)
    return {name: a / n for name, a in acc.items()}
