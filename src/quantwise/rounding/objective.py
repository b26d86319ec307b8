"""The reconstruction objective shared by the learned-rounding algorithms.

A *forward function* ``forward(weights, x)`` maps a dict of weights (name -> tensor) and a
mini-batch of inputs ``x`` (batch-first) to outputs: a plain lambda ``lambda p, x: x @ p["w"].T``,
a block of several layers, or a module via :func:`module_forward`. Given calibration
``inputs`` and ``targets`` (usually ``float_targets``, i.e. the outputs with the float
weights, but a caller may pass targets computed from quantized upstream layers), the
objective of a set of dequantized weights ``W_hat`` is the mean squared error over every
element of every sample::

    mse(W_hat) = sum_n ||forward(W_hat, x_n) - y_n||^2 / (number of output elements)

Training uses the same mean over one mini-batch. Inputs and targets stay where the caller
keeps them; only one mini-batch is gathered (and cast to float32) at a time, so the extra
memory is the weights plus one mini-batch of activations.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .checks import positive_int
from .spec import RoundedWeight

__all__ = ["Forward", "module_forward", "float_targets", "reconstruction_mse", "Reconstruction"]

Forward = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


class _Weights(dict):
    """The dict handed to a forward function: a missing name is a readable ``ValueError``."""

    def __missing__(self, key: object) -> torch.Tensor:
        raise ValueError(
            f"the forward function asked for weight {key!r}, which is not among the weights given: "
            f"{sorted(self)}"
        )


def module_forward(module: nn.Module) -> Forward:
    """A forward function that runs ``module(x)`` with some parameters replaced by ``weights``.

    Uses :func:`torch.func.functional_call`; parameters not named in ``weights`` are the
    module's own. Names are ``module.named_parameters()`` names, e.g. ``"0.weight"`` for a
    ``nn.Sequential``. A name the module does not have raises ``ValueError`` (``functional_call``
    would silently ignore it). The module's train/eval mode is the caller's choice
    (BatchNorm and dropout should normally be in eval mode).
    """
    known = {n for n, _ in module.named_parameters()} | {n for n, _ in module.named_buffers()}

    def forward(weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        unknown = sorted(set(weights) - known)
        if unknown:
            raise ValueError(
                f"weight name(s) {unknown} are not parameters of the {type(module).__name__}; "
                f"it has {sorted(n for n, _ in module.named_parameters())}"
            )
        return torch.func.functional_call(module, dict(weights), (x,))

    return forward


def _check_data(inputs: torch.Tensor, targets: torch.Tensor | None, batch_size: int) -> None:
    if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0:
        raise ValueError("inputs must be a batch-first tensor with at least one dimension")
    if len(inputs) == 0:
        raise ValueError("inputs are empty: at least one calibration sample is needed")
    if targets is not None:
        if not isinstance(targets, torch.Tensor) or targets.dim() == 0:
            raise ValueError("targets must be a batch-first tensor with at least one dimension")
        if len(targets) != len(inputs):
            raise ValueError(
                f"inputs and targets must have the same number of samples, got {len(inputs)} inputs "
                f"and {len(targets)} targets"
            )
        if not targets.is_floating_point():
            raise ValueError(f"targets must be floating point, got {targets.dtype}")
    positive_int("batch_size", batch_size)


def _as_input(x: torch.Tensor) -> torch.Tensor:
    # integer inputs (token ids, indices) pass through; floating ones are computed in float32
    return x.to(torch.float32) if x.is_floating_point() else x


def float_targets(
    forward: Forward, specs: Sequence[RoundedWeight], inputs: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """``forward({name: w}, x)`` with the float weights, for all ``inputs``, float32, batch-first."""
    _check_data(inputs, None, batch_size)
    weights = _Weights({s.name: s.w.detach().to(torch.float32) for s in specs})
    with torch.no_grad():
        outs = [forward(weights, _as_input(inputs[i : i + batch_size])) for i in range(0, len(inputs), batch_size)]
    return torch.cat([o.to(torch.float32) for o in outs])


def reconstruction_mse(
    forward: Forward,
    weights: Mapping[str, torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 64,
) -> float:
    """The mean squared error ``mean((forward(weights, x) - y)^2)`` over all samples and elements.

    Computed in mini-batches of ``batch_size`` samples; the result is the global mean
    whatever the split (sums of squares are accumulated in float64).
    """
    sums, per_sample = _squared_errors(forward, weights, inputs, targets, batch_size)
    return float(sums.sum()) / (per_sample * len(inputs))


def _squared_errors(
    forward: Forward, weights: Mapping[str, torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, int]:
    """Per-sample sums of squared errors (float64 ``[n]``) and the number of output elements per sample."""
    _check_data(inputs, targets, batch_size)
    w = _Weights({k: v.detach().to(torch.float32) for k, v in weights.items()})
    sums = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch_size):
            err = _error(forward, w, inputs[i : i + batch_size], targets[i : i + batch_size])
            sums.append(err.to(torch.float64).square().reshape(len(err), -1).sum(1))
    return torch.cat(sums), targets[0].numel()


def _error(forward: Forward, weights: _Weights, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = forward(weights, _as_input(x))
    if not isinstance(out, torch.Tensor) or out.shape != y.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the forward function returned {got} for a mini-batch whose targets have shape {tuple(y.shape)}"
        )
    return out.to(torch.float32) - y.to(torch.float32)


class Reconstruction:
    """Validated calibration data, mini-batch sampling and the loss, for one rounding run.

    ``specs`` are the weights being rounded (unique names); ``forward`` must use each of
    them. Mini-batches are drawn without replacement within an epoch, in an order set by
    ``seed`` through a private :class:`torch.Generator` (the global RNG is untouched).
    """

    def __init__(
        self,
        specs: Sequence[RoundedWeight],
        forward: Forward,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        seed: int = 0,
    ) -> None:
        specs = list(specs)
        if not specs:
            raise ValueError("specs is empty: give at least one RoundedWeight")
        for s in specs:
            if not isinstance(s, RoundedWeight):
                raise ValueError(f"specs must be RoundedWeight objects, got {type(s).__name__}")
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"weight names must be unique, got duplicates {dupes}")
        if not callable(forward):
            raise ValueError("forward must be callable as forward(weights: dict[str, Tensor], x: Tensor)")
        _check_data(inputs, targets, batch_size)
        self.specs = specs
        self.forward = forward
        self.inputs = inputs
        self.targets = targets
        self.batch_size = min(batch_size, len(inputs))
        self._generator = torch.Generator().manual_seed(int(seed))

    def batches(self) -> Iterator[torch.Tensor]:
        """Endless sample indices, ``batch_size`` at a time (the last batch of an epoch may be shorter)."""
        n = len(self.inputs)
        while True:
            perm = torch.randperm(n, generator=self._generator)
            for i in range(0, n, self.batch_size):
                yield perm[i : i + self.batch_size]

    def batch_loss(self, weights: Mapping[str, torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        """Differentiable mean squared error on the samples ``index``."""
        return _error(self.forward, _Weights(weights), self.inputs[index], self.targets[index]).square().mean()

    def mse(self, weights: Mapping[str, torch.Tensor], samples: slice = slice(None)) -> float:
        """:func:`reconstruction_mse` over the calibration samples ``samples`` (all by default)."""
        return reconstruction_mse(self.forward, weights, self.inputs[samples], self.targets[samples], self.batch_size)

    def sample_errors(self, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample sums of squared errors over all calibration samples, float64 ``[n]``."""
        return _squared_errors(self.forward, weights, self.inputs, self.targets, self.batch_size)[0]

    def gradients(self, loss: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``d loss / d params``; ``params`` starts with one tensor per spec, in order.

        A weight the forward function does not use is a ``ValueError``; any further
        parameters without a gradient get zeros. :func:`torch.autograd.grad` rather than
        ``backward()``, so that parameters of a module behind :func:`module_forward` do
        not accumulate gradients.
        """
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, list(params), allow_unused=True)
        else:  # the output does not depend on any of them
            grads = (None,) * len(params)
        unused = [s.name for s, g in zip(self.specs, grads) if g is None]
        if unused:
            raise ValueError(f"the forward function does not use weight(s) {unused}: their rounding cannot be learned")
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
