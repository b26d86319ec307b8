"""AdaRound: learn, for each weight, whether to round its grid code down or up.

Nagel, Amjad, van Baalen, Louizos & Blankevoort (2020), "Up or Down? Adaptive Rounding
for Post-Training Quantization". Block-wise use of several weights at once follows BRECQ
(Li et al. 2021, "BRECQ: Pushing the Limit of Post-Training Quantization by Block
Reconstruction").

Each weight gets a continuous variable ``V`` of its shape. With ``x = w / scale + zero``
(see :mod:`.spec`) and the rectified sigmoid (``zeta = 1.1``, ``gamma = -0.1``)::

    h(V)   = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)
    w_soft = (clamp(floor(x) + h(V), qmin, qmax) - zero) * scale

``V`` starts where ``h(V) = x - floor(x)``, so ``w_soft`` starts at the float weight (up to
clamping to the grid's range). Adam on ``V`` minimises::

    loss = mse(w_soft) / mse_rtn + reg_weight * mean(1 - |2 h(V) - 1|^beta)

``mse`` is the mini-batch reconstruction error of :mod:`.objective` and ``mse_rtn`` the
calibration error of round-to-nearest, a constant. The paper writes ``||.||_F^2 + lambda *
sum(...)``; dividing by two constants (``mse_rtn`` and the number of weights) changes
nothing but the unit of ``reg_weight``, which becomes independent of the scale of the
activations and of the layer's size: an undecided weight (``h = 1/2``) costs
``reg_weight`` times its average share of RTN's error. The reconstruction gradient of a
weight that feeds large activations is many times that average, so the default is
large (1000); on the test layers 300 to 10000 gave the same quality, while 10 or less
left decisions open until the final hard rounding and lost much of the gain. The default
``lr`` is 1e-2 rather than the reference implementations' 1e-3 because the default run
is 1000 iterations, not 10000 to 20000. The regulariser is off for the first ``warmup``
fraction of iterations; after it ``beta`` decays linearly from ``beta_start`` (20) to
``beta_end`` (2), so early on only weights already near a decision are pushed and by the
end every ``h`` is pushed to 0 or 1. The codes are::

    q = clamp(floor(x) + [h(V) >= 0.5], qmin, qmax)

i.e. each code is ``floor(x)`` or ``floor(x) + 1``, clamped (the AdaRound property; it is
``floor`` or ``ceil`` whenever ``x`` is not an integer).
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from .checks import number_at_least, positive_int, positive_number
from .objective import Forward, Reconstruction
from .result import Progress, RoundingResult
from .spec import RoundedWeight, rtn_codes

__all__ = ["adaround", "rectified_sigmoid", "beta_schedule", "ZETA", "GAMMA"]

ZETA = 1.1
GAMMA = -0.1


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """``h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)``."""
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def _initial_v(frac: torch.Tensor) -> torch.Tensor:
    # inverse of h on [0, 1): sigmoid(V) = (frac - gamma) / (zeta - gamma), which lies in
    # [1/12, 11/12], so the logit is finite
    p = (frac - GAMMA) / (ZETA - GAMMA)
    return torch.log(p) - torch.log1p(-p)


def beta_schedule(step: int, iterations: int, warmup: float, beta_start: float, beta_end: float) -> float | None:
    """``beta`` at 0-based ``step``, or ``None`` during the warm-up (regulariser off).

    After ``w = warmup * iterations`` steps: ``beta = beta_end + (beta_start - beta_end) *
    (1 - (step - w) / (iterations - w))``, so the last step is close to ``beta_end``.
    """
    start = warmup * iterations
    if step < start:
        return None
    progress = (step - start) / max(iterations - start, 1.0)
    return beta_end + (beta_start - beta_end) * max(0.0, 1.0 - progress)


class _SoftWeight:
    """One weight's ``V``, its soft value ``w_soft(V)`` and the chain rule back to ``V``.

    The elementwise part (rectified sigmoid, clamps, regulariser) is differentiated by
    hand, into buffers allocated once: on CPU these passes over weight-sized tensors are
    memory-bound, and through autograd (fresh tensors, boolean masks) they cost several
    times the layer's matmuls. Only the forward function goes through autograd, with the
    soft weight as a leaf. The gradient equals autograd's through ``torch.clamp`` except
    where ``h`` is exactly 0 or 1 (there autograd passes the gradient of a clamp at its
    bound, this gives 0), a set of measure zero.
    """

    def __init__(self, spec: RoundedWeight) -> None:
        x = spec.real_codes()
        self.qmin, self.qmax = spec.qmin, spec.qmax
        self.base = torch.floor(x).contiguous()
        self.v = _initial_v(x - self.base).contiguous()
        self.scale = spec.scale.detach().to(torch.float32)
        self.zero = spec.zero.detach().to(torch.float32)
        # floor + h with h in (0, 1) lies inside [qmin, qmax] iff floor >= qmin and floor + 1 <= qmax:
        # where it does not, the clamp cuts the reconstruction gradient
        inside = (self.base >= self.qmin) & (self.base + 1 <= self.qmax)
        self.gain = (self.scale * inside).contiguous()
        self.sig, self.h, self.grad, self.tmp, self.tmp2 = (torch.empty_like(self.v) for _ in range(5))
        self.weight = torch.empty_like(self.v).requires_grad_(True)

    def refresh(self) -> torch.Tensor:
        """Recompute ``w_soft`` for the current ``V`` (in place) and return it, a leaf requiring grad."""
        with torch.no_grad():
            torch.sigmoid(self.v, out=self.sig)
            torch.mul(self.sig, ZETA - GAMMA, out=self.h).add_(GAMMA).clamp_(0.0, 1.0)
            torch.add(self.base, self.h, out=self.weight).clamp_(self.qmin, self.qmax).sub_(self.zero).mul_(self.scale)
        return self.weight

    def v_gradient(
        self, weight_grad: torch.Tensor, beta: float | None, reg_scale: float, want_reg: bool
    ) -> tuple[torch.Tensor, float]:
        """``d loss / d V`` given ``d rec / d w_soft``; also the regulariser's sum if ``want_reg`` (else 0).

        ``loss = rec + reg_scale * sum(1 - |2h - 1|^beta)``. The returned tensor is a
        buffer, overwritten by the next call.
        """
        g = torch.mul(weight_grad, self.gain, out=self.grad)  # d rec / d h
        reg = 0.0
        if beta is not None:
            t = torch.mul(self.h, 2.0, out=self.tmp).sub_(1.0)
            p = torch.abs(t, out=self.tmp2)
            if beta != 1:  # |2h-1|^(beta-1) as exp(log(.)): pow() is several times slower on CPU
                p.log_().mul_(beta - 1).exp_()
            else:
                p.fill_(1.0)
            if want_reg:
                reg = float(t.numel() - (p * t.abs()).sum())
            # d/dh (1 - |2h-1|^beta) = -2 beta |2h-1|^(beta-1) sign(2h-1)
            g.sub_(p.copysign_(t), alpha=2.0 * beta * reg_scale)
        # dh/dV = (zeta - gamma) sigmoid(V) (1 - sigmoid(V)) where 0 < h < 1, else 0;
        # sign(h (1 - h)) is that mask, without boolean tensors
        mask = torch.mul(self.h, -1.0, out=self.tmp).add_(1.0).mul_(self.h).sign_()
        g.mul_(mask)
        slope = torch.mul(self.sig, -1.0, out=self.tmp).add_(1.0).mul_(self.sig).mul_(ZETA - GAMMA)
        return g.mul_(slope), reg

    def codes(self) -> torch.Tensor:
        """``clamp(floor(x) + [h(V) >= 0.5], qmin, qmax)``."""
        up = (rectified_sigmoid(self.v) >= 0.5).to(torch.float32)
        return torch.clamp(self.base + up, self.qmin, self.qmax)


def _check_options(iterations: int, lr: float, reg_weight: float, warmup: float, betas: tuple[float, float],
                   progress_every: int) -> None:
    positive_int("iterations", iterations)
    positive_number("lr", lr)
    number_at_least("reg_weight", reg_weight, 0)
    if not (isinstance(warmup, (int, float)) and 0 <= warmup < 1):
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup!r}")
    if not all(isinstance(b, (int, float)) and b >= 1 for b in betas):
        raise ValueError(f"beta_start and beta_end must be >= 1, got {betas}")
    positive_int("progress_every", progress_every)


def adaround(
    specs: Sequence[RoundedWeight],
    forward: Forward,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    iterations: int = 1000,
    batch_size: int = 32,
    lr: float = 1e-2,
    reg_weight: float = 1000.0,
    warmup: float = 0.2,
    beta_start: float = 20.0,
    beta_end: float = 2.0,
    seed: int = 0,
    progress: Progress | None = None,
    progress_every: int = 50,
) -> RoundingResult:
    """Learn the rounding of ``specs`` jointly so that ``forward`` reproduces ``targets``.

    ``forward(weights, x)`` receives ``{spec.name: w_soft}`` and a mini-batch of
    ``batch_size`` samples of ``inputs`` (batch-first); its output is compared with the
    same samples of ``targets``. One call may round several weights of a block (BRECQ).
    ``seed`` fixes the mini-batch order (the only randomness). ``progress(step, iterations,
    loss)`` is called every ``progress_every`` steps and after the last. See the module
    docstring for the loss and the codes; the grid (``scale``, ``zero``) is unchanged.
    """
    started = time.perf_counter()
    _check_options(iterations, lr, reg_weight, warmup, (beta_start, beta_end), progress_every)
    problem = Reconstruction(specs, forward, inputs, targets, batch_size, seed)
    specs = problem.specs

    weights = [_SoftWeight(s) for s in specs]
    n_weights = sum(sw.v.numel() for sw in weights)

    rtn_mse = problem.mse({s.name: s.dequantize(rtn_codes(s)) for s in specs})
    # An exact RTN fit leaves nothing to learn; any positive normaliser keeps the loss finite.
    norm = rtn_mse if rtn_mse > 0 else 1.0
    optimizer = torch.optim.Adam([sw.v for sw in weights], lr=lr, fused=True)

    for step, index in zip(range(iterations), problem.batches()):
        beta = beta_schedule(step, iterations, warmup, beta_start, beta_end) if reg_weight > 0 else None
        soft = [sw.refresh() for sw in weights]
        loss = problem.batch_loss({s.name: w for s, w in zip(specs, soft)}, index) / norm
        grads = problem.gradients(loss, soft)
        report = progress is not None and ((step + 1) % progress_every == 0 or step + 1 == iterations)
        value = loss.item() if report else 0.0
        for sw, g in zip(weights, grads):
            grad, reg = sw.v_gradient(g, beta, reg_weight / n_weights, report)
            sw.v.grad = grad  # same (contiguous) layout as V: the fused Adam kernel assumes it
            value += reg_weight * reg / n_weights
        optimizer.step()
        if report:
            progress(step + 1, iterations, value)

    codes = {s.name: sw.codes() for s, sw in zip(specs, weights)}
    mse = problem.mse({s.name: s.dequantize(codes[s.name]) for s in specs})
    return RoundingResult(
        codes=codes,
        scales={s.name: s.scale for s in specs},
        zeros={s.name: s.zero for s in specs},
        mse=mse,
        rtn_mse=rtn_mse,
        iterations=iterations,
        seconds=time.perf_counter() - started,
    )
