"""The float model's side of the debugger: which modules one quantized layer stands for,
and their inputs and outputs on each batch (forward hooks, keyed by module name and call)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from quantwise.data.base import Inputs

Call = tuple[str, int]  # (module name, index of the call within one forward)

LAYER_KINDS: tuple[tuple[type, str], ...] = (
    (nn.Conv1d, "conv"), (nn.Conv2d, "conv"), (nn.Conv3d, "conv"),
    (nn.Linear, "linear"), (nn.LSTM, "lstm"), (nn.GRU, "gru"), (nn.Embedding, "embedding"),
)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh)


def layer_kind(module: nn.Module) -> str | None:
    for cls, kind in LAYER_KINDS:
        if isinstance(module, cls):
            return kind
    return None


def call_name(call: Call) -> str:
    """How a call is shown: the module name, with ``@k`` for the k-th call of a shared module."""
    return call[0] if call[1] == 0 else f"{call[0]}@{call[1]}"


def parse_call(name: str) -> Call:
    base, _, index = name.rpartition("@")
    return (base, int(index)) if base and index.isdigit() else (name, 0)


def first_tensor(value: Any) -> torch.Tensor:
    """A layer's main output: the tensor itself, an LSTM/GRU's output sequence, or the
    ``logits`` of a Hugging Face model output."""
    while not isinstance(value, torch.Tensor):
        if hasattr(value, "logits"):
            value = value.logits
        elif isinstance(value, (tuple, list)):
            value = value[0]
        else:
            raise TypeError(f"cannot find the output tensor in a {type(value).__name__}")
    return value


@dataclass
class Chain:
    """A float layer call and what follows it directly (BatchNorm, then an activation
    module), found by tensor identity: the BatchNorm's input *is* the layer's output."""

    layer: Call
    kind: str
    batch_norm: Call | None = None
    activation: Call | None = None


class _Calls:
    """Forward hooks on chosen modules with per-forward call counters."""

    def __init__(self, model: nn.Module, names: set[str], on_call: Any) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.handles = []
        for name, module in model.named_modules():
            if name in names:
                self.handles.append(module.register_forward_hook(self._hook(name, on_call)))

    def _hook(self, name: str, on_call: Any) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            call = (name, self.counts[name])
            self.counts[name] += 1
            on_call(call, module, args, output)

        return hook

    def reset(self) -> None:
        self.counts.clear()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _watched(model: nn.Module) -> set[str]:
    names = set()
    for name, module in model.named_modules():
        if layer_kind(module) or isinstance(module, BATCH_NORMS + ACTIVATIONS):
            names.add(name)
    return names


def trace_chains(model: nn.Module, inputs: Inputs) -> list[Chain]:
    """Every float layer call in execution order, with its BatchNorm and activation."""
    events: list[tuple[Call, nn.Module, Any, Any]] = []
    calls = _Calls(model, _watched(model), lambda call, module, args, output: events.append((call, module, args, output)))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        calls.remove()
    consumers: dict[int, tuple[Call, nn.Module, Any]] = {}
    for call, module, args, output in events:
        if args and isinstance(args[0], torch.Tensor):
            consumers.setdefault(id(args[0]), (call, module, output))
    chains = []
    layers = [(c, m, o) for c, m, _, o in events if layer_kind(m)]
    # forward hooks fire when a module returns; a layer's own start order is the same here
    for call, module, output in layers:
        chain = Chain(call, layer_kind(module) or "")
        current = first_tensor(output)
        follower = consumers.get(id(current))
        if follower and isinstance(follower[1], BATCH_NORMS) and chain.kind in ("conv", "linear"):
            chain.batch_norm = follower[0]
            current = follower[2]
            follower = consumers.get(id(current))
        if follower and isinstance(follower[1], ACTIVATIONS) and chain.kind in ("conv", "linear"):
            chain.activation = follower[0]
        chains.append(chain)
    return chains


class FloatRecorder:
    """Captures, for each forward, the inputs of ``input_calls`` and the (first) outputs of
    ``output_calls``. Tensors are detached; nothing else is kept."""

    def __init__(self, model: nn.Module, input_calls: set[Call], output_calls: set[Call]) -> None:
        self.model = model
        self.input_calls, self.output_calls = input_calls, output_calls
        self.inputs: dict[Call, tuple[Any, ...]] = {}
        self.outputs: dict[Call, torch.Tensor] = {}
        names = {c[0] for c in input_calls | output_calls}
        self.calls = _Calls(model, names, self._record)

    def _record(self, call: Call, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if call in self.input_calls:
            self.inputs[call] = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        if call in self.output_calls:
            self.outputs[call] = first_tensor(output).detach()

    def run(self, inputs: Inputs) -> torch.Tensor:
        self.inputs, self.outputs = {}, {}
        self.calls.reset()
        with torch.no_grad():
            return self.model(*inputs)

    def close(self) -> None:
        self.calls.remove()
