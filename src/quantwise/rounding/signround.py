"""SignRound: learn an additive rounding offset per weight by signed gradient descent.

Cheng, Zhang, Shen, Meng, Guo, Lv & Liu (2023), "Optimize Weight Rounding via Signed
Gradient Descent for the Quantization of LLMs" (Intel AutoRound). Each weight gets an
offset ``V`` in ``[-0.5, 0.5]``, starting at 0 (i.e. at round-to-nearest), and::

    q     = clamp(round(w / scale + zero + V), qmin, qmax)
    w_hat = (q - zero) * scale

``round`` passes gradients straight through (``d round(t) / dt := 1``). Each iteration
computes the reconstruction MSE of one mini-batch (:mod:`.objective`) and updates::

    V <- clamp(V - lr_t * sign(dL/dV), -0.5, 0.5),   lr_t = lr * (1 - t / iterations)

with ``lr = 1 / iterations`` by default, as AutoRound (which uses 200 iterations and
mini-batches of 8 sequences for LLMs): the offsets can then travel at most about 0.5 in
total. Because the sign ignores the gradient's scale, no loss normalisation is needed.
Like AutoRound, the best offsets seen are kept (the loss of step ``t`` is measured before
its update, so step 0 is RTN itself). AutoRound ranks them by the raw mini-batch loss,
which its large batches (8 x 2048 tokens) make comparable; with small batches the
spread between batches swamps the differences between offsets, so here a step's score
is its mini-batch loss divided by RTN's loss on the same samples (per-sample RTN errors
are computed once, so the score costs nothing extra).

Optional learned clipping (``learn_clipping=True``, :mod:`.clipping`) also learns range
factors by the same signed steps and returns a NEW ``scale``/``zero``; callers whose grid
is fixed by the target format (e.g. llama.cpp) must leave it off. Without it the grid is
the caller's, untouched. An offset of exactly ``-0.5`` on an integer-valued ``w / scale +
zero`` can round (half to even) one code below ``floor``; otherwise each code is
``floor`` or ``ceil`` of ``w / scale + zero``, clamped.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

from .checks import positive_int, positive_number
from .clipping import ClippedGrid, round_ste
from .objective import Forward, Reconstruction
from .result import Progress, RoundingResult
from .spec import RoundedWeight, rtn_codes

__all__ = ["signround"]


class _Rounder:
    """One weight's offset ``V`` and its (fixed or learned) grid."""

    def __init__(self, spec: RoundedWeight, learn_clipping: bool) -> None:
        self.spec = spec
        self.w = spec.w.detach().to(torch.float32)
        self.v = torch.zeros_like(self.w, requires_grad=True)
        self.clip = ClippedGrid(spec) if learn_clipping else None
        self.fixed_x = None if learn_clipping else spec.real_codes()
        self.fixed_grid = (spec.scale.detach().to(torch.float32), spec.zero.detach().to(torch.float32))

    def grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fixed_grid if self.clip is None else self.clip.grid()

    def weight(self) -> torch.Tensor:
        """Differentiable ``w_hat`` for the current offsets (and factors)."""
        scale, zero = self.grid()
        x = self.fixed_x if self.clip is None else self.w / scale + zero
        q = torch.clamp(round_ste(x + self.v), self.spec.qmin, self.spec.qmax)
        return (q - zero) * scale

    def project(self) -> None:
        with torch.no_grad():
            self.v.clamp_(-0.5, 0.5)
        if self.clip is not None:
            self.clip.project()


def _check_options(iterations: int, lr: float | None, progress_every: int, check_samples: int | None) -> None:
    positive_int("iterations", iterations)
    positive_number("lr", lr, none_means="1 / iterations")
    positive_int("progress_every", progress_every)
    if check_samples is not None:
        positive_int("check_samples", check_samples)


def _checked(n: int, check_samples: int | None) -> slice:
    """The samples the final MSEs are measured on: all, or about ``check_samples`` spread evenly."""
    return slice(None) if check_samples is None or check_samples >= n else slice(None, None, math.ceil(n / check_samples))


def signround(
    specs: Sequence[RoundedWeight],
    forward: Forward,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    iterations: int = 200,
    batch_size: int = 8,
    lr: float | None = None,
    learn_clipping: bool = False,
    keep_best: bool = True,
    seed: int = 0,
    progress: Progress | None = None,
    progress_every: int = 50,
    check_samples: int | None = None,
) -> RoundingResult:
    """Learn rounding offsets for ``specs`` jointly so that ``forward`` reproduces ``targets``.

    Same calling convention as :func:`~.adaround.adaround`: ``forward(weights, x)`` gets
    ``{spec.name: w_hat}`` and a mini-batch of ``batch_size`` samples of ``inputs``.
    A *sample* is whatever ``inputs`` is batched by: AutoRound's 8 are whole sequences;
    for rows of single tokens use more (e.g. 32-128). ``lr=None`` means ``1 / iterations``.
    ``keep_best=False`` returns the last offsets instead of the best-scoring ones.
    ``learn_clipping=True`` also learns the grid's range (see the module docstring); the
    result's ``scales``/``zeros`` are then new float32 tensors of shape
    ``broadcast(scale, zero)``, and its codes refer to them.
    ``check_samples`` measures the result's ``mse`` and ``rtn_mse`` on about that many samples,
    spread evenly, instead of all of them (the learned codes' pass over all the data is the
    costliest part after the steps; the steps themselves still see every sample).
    """
    started = time.perf_counter()
    _check_options(iterations, lr, progress_every, check_samples)
    problem = Reconstruction(specs, forward, inputs, targets, batch_size, seed)
    specs = problem.specs
    lr = 1.0 / iterations if lr is None else float(lr)
    rounders = [_Rounder(s, learn_clipping) for s in specs]
    params = [r.v for r in rounders] + [f for r in rounders if r.clip is not None for f in r.clip.factors]

    rtn_errors = problem.sample_errors({s.name: s.dequantize(rtn_codes(s)) for s in specs})
    per_sample = problem.targets[0].numel()
    checked = _checked(len(rtn_errors), check_samples)
    rtn_mse = float(rtn_errors[checked].mean()) / per_sample
    best_score, best = math.inf, None
    for step, index in zip(range(iterations), problem.batches()):
        loss = problem.batch_loss({r.spec.name: r.weight() for r in rounders}, index)
        value = loss.item()
        # Mini-batches differ in difficulty far more than the offsets' effect on the loss,
        # so candidates are compared by their loss relative to RTN's on the same samples.
        rtn_batch = float(rtn_errors[index].sum()) / (per_sample * len(index))
        score = value / rtn_batch if rtn_batch > 0 else value
        if keep_best and score < best_score:
            best_score, best = score, [p.detach().clone() for p in params]
        step_size = lr * (1.0 - step / iterations)
        grads = problem.gradients(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(g.sign_(), alpha=step_size)
        for r in rounders:
            r.project()
        if progress is not None and ((step + 1) % progress_every == 0 or step + 1 == iterations):
            progress(step + 1, iterations, value)

    with torch.no_grad():
        if best is not None:
            for p, b in zip(params, best):
                p.copy_(b)
        codes, scales, zeros = {}, {}, {}
        for r in rounders:
            name = r.spec.name
            if r.clip is None:
                scales[name], zeros[name] = r.spec.scale, r.spec.zero
                x = r.fixed_x
            else:
                scale, zero = (t.detach().clone() for t in r.clip.grid())
                scales[name], zeros[name] = scale, zero
                x = r.w / scale + zero
            codes[name] = torch.round(x + r.v).clamp_(r.spec.qmin, r.spec.qmax)
    result = RoundingResult(codes, scales, zeros, math.nan, rtn_mse, iterations, 0.0)
    result.mse = problem.mse(result.dequantized(), checked)
    result.seconds = time.perf_counter() - started
    return result
