"""Learned rounding (AdaRound) of the static PT2E recipe's int8 weights.

The grid comes first, as for round-to-nearest: each weight observer of the calibrated
(prepared) graph gives its per-channel scale and zero-point. Then, layer by layer in graph
order, :func:`quantwise.rounding.adaround` chooses for every weight whether its code is
rounded down or up, so that the layer reproduces its float output on calibration data.
The result is integer codes on the observer's grid: they replace the round-to-nearest codes
of the artifact's state (``<weight>.int8``, see :mod:`.static_pt2e`), which restore
replays through prepare -> load -> convert, so the converted model, the saved artifact
and every export carry exactly these codes with nothing else changed.

Sequential scheme (AdaRound's "asymmetric reconstruction"): the graph runs twice side by
side over the calibration samples, node by node. In the *quantized* stream every layer
already handled uses its learned weights (activations stay float unless
``quantize_activations``); in the *float* stream nothing is quantized. A layer's rounding
is learned on its quantized-stream input, against its float output on the float-stream
input (``targets="float"``, the default) or on the quantized input (``targets="quantized"``).
When a conv's only consumer is a ReLU/ReLU6 (``hardtanh``), the reconstruction includes it.

A conv is reconstructed on sampled output positions: each sample is the input patch under
one output pixel, so a step costs a small matmul rather than a whole feature map. Covered:
``conv2d`` (any groups: depthwise, 1x1, grouped) and ``linear``; other weighted layers stay
at round-to-nearest and are named in the notes, as is a weight shared by several layers. A
layer whose loss is not finite, or whose learned rounding does not beat nearest on its
calibration samples, keeps nearest rounding. The layer inputs come from the first
``MAX_SAMPLES`` (128) calibration samples; fewer than ``MIN_SAMPLES`` (16) is an error.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from quantwise.config import StaticInt8
from quantwise.errors import QuantwiseError
from quantwise.methods.base import QuantData

MIN_SAMPLES = 16  # calibration samples (images, sequences) the layer inputs are drawn from
MAX_SAMPLES = 128  # more add memory (two streams of activations) and little else
PATCH_POOL = 8192  # sampled output positions (or rows) per layer
POOL_BYTES = 256 * 2**20  # ... at most this much memory of input patches
BATCH = 512  # patches per AdaRound step (a Linear's rows: min(32, samples))

_CONV = torch.ops.aten.conv2d.default
_LINEAR = torch.ops.aten.linear.default
_UNCOVERED = {
    torch.ops.aten.conv1d.default: "conv1d",
    torch.ops.aten.conv3d.default: "conv3d",
}
_ACTIVATIONS = {torch.ops.aten.hardtanh.default, torch.ops.aten.relu.default, torch.ops.aten.hardtanh_.default, torch.ops.aten.relu_.default}


@dataclass
class _Layer:
    node: fx.Node  # the conv2d / linear call
    key: str  # the weight's name in the prepared state (get_attr target)
    observer: nn.Module
    activation: fx.Node | None = None  # a ReLU/ReLU6 that alone consumes the layer's output


@dataclass
class RoundingReport:
    """What learned rounding did, for the recipe's notes and the artifact's meta."""

    codes: dict[str, torch.Tensor] = field(default_factory=dict)  # weight name -> int8 codes (learned layers only)
    ratios: dict[str, float] = field(default_factory=dict)  # weight name -> calibration mse / nearest's mse
    kept_nearest: dict[str, str] = field(default_factory=dict)  # weight name -> why it kept nearest rounding
    uncovered: list[str] = field(default_factory=list)  # weights of layer types the method does not cover
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time: with one thread, the wall time the machine would take unloaded
    samples: int = 0

    def notes(self, iterations: int) -> list[str]:
        learned = len(self.codes)
        ratios = sorted(self.ratios[k] for k in self.codes)
        median = ratios[len(ratios) // 2] if ratios else float("nan")
        out = [f"adaround: learned rounding of {learned} layers ({iterations} iterations each, {self.samples} calibration samples) "
               f"in {self.seconds:.0f} s; layer output error x{median:.2f} of nearest rounding's (median over layers, calibration data)"]
        if self.kept_nearest:
            out.append(f"adaround: nearest rounding kept ({len(self.kept_nearest)}): "
                       + "; ".join(f"{k} ({why})" for k, why in self.kept_nearest.items()))
        if self.uncovered:
            out.append(f"adaround does not cover ({len(self.uncovered)}), nearest rounding: {', '.join(self.uncovered)}")
        return out

    def to_meta(self) -> dict[str, Any]:
        return {"method": "adaround", "layers": len(self.codes), "seconds": round(self.seconds, 1),
                "cpu_seconds": round(self.cpu_seconds, 1), "threads": torch.get_num_threads(), "samples": self.samples,
                "kept_nearest": dict(self.kept_nearest), "uncovered": list(self.uncovered),
                "mse_ratio": {k: round(v, 4) if math.isfinite(v) else None for k, v in self.ratios.items()}}


def _attr(gm: nn.Module, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _layers(prepared: fx.GraphModule, weight_observers: dict[str, nn.Module]) -> tuple[list[_Layer], list[str]]:
    """The covered layers in graph order, and the names of observed weights the method leaves at nearest."""
    layers, uncovered = [], []
    uses: dict[str, int] = {}
    for node in prepared.graph.nodes:
        if node.op == "get_attr" and node.target in weight_observers:
            uses[node.target] = uses.get(node.target, 0) + sum(len(u.users) for u in node.users)
    for node in prepared.graph.nodes:
        if node.op != "call_function" or len(node.args) < 2:
            continue
        w = node.args[1]
        if not (isinstance(w, fx.Node) and w.op == "call_module" and w.args and getattr(w.args[0], "op", None) == "get_attr"):
            continue
        key = w.args[0].target
        if key not in weight_observers:
            continue
        if uses[key] > 1:  # one rounding cannot be learned for two layers' outputs separately
            uncovered.append(f"{key} (shared by {uses[key]} layers)")
        elif node.target in (_CONV, _LINEAR):
            users = list(node.users)
            act = users[0] if len(users) == 1 and users[0].op == "call_function" and users[0].target in _ACTIVATIONS else None
            layers.append(_Layer(node, key, weight_observers[key], act))
        else:
            uncovered.append(f"{key} ({_UNCOVERED.get(node.target, str(node.target))})")
    return layers, list(dict.fromkeys(uncovered))


def _qparams(observer: nn.Module, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    scale, zero_point = observer.calculate_qparams()
    shape = [1] * ndim
    shape[getattr(observer, "ch_axis", 0)] = -1
    return scale.reshape(shape).float(), zero_point.reshape(shape).float()


def nearest_codes(w: torch.Tensor, observer: nn.Module) -> torch.Tensor:
    """Round-to-nearest codes exactly as the artifact's state (and torchao's convert) compute them."""
    scale, zp = _qparams(observer, w.dim())
    return torch.clamp(torch.round(w * (1.0 / scale)) + zp, observer.quant_min, observer.quant_max)


class _Streams:
    """The prepared graph run node by node over all samples, twice: quantized and float.

    Observers are identity (weight observers pass the float weight; the layers being rounded
    take their weights from :meth:`set_layer_output`); with ``quantize_activations`` the
    quantized stream fake-quantizes at each activation observer with its calibrated range.
    Values are dropped as soon as their last consumer has run.
    """

    def __init__(self, gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...], weight_observers: set[int], quantize_activations: bool) -> None:
        self.gm = gm
        self.nodes = list(gm.graph.nodes)
        self.position = {n: i for i, n in enumerate(self.nodes)}
        last = {}
        for i, n in enumerate(self.nodes):
            for a in n.all_input_nodes:
                last[a] = i
        self.release: dict[int, list[fx.Node]] = {}
        for n, i in last.items():
            self.release.setdefault(i, []).append(n)
        self.inputs = list(inputs)
        self.weight_observers = weight_observers
        self.quantize_activations = quantize_activations
        self.q: dict[fx.Node, Any] = {}
        self.f: dict[fx.Node, Any] = {}
        self.next = 0
        self._fake: dict[int, tuple[float, int, int, int]] = {}

    def advance_to(self, node: fx.Node) -> None:
        """Run every node before ``node`` (and none after)."""
        stop = self.position[node]
        while self.next < stop:
            n = self.nodes[self.next]
            self.q[n] = self._run(n, self.q, True)
            self.f[n] = self._run(n, self.f, False)
            self._done(self.next)
            self.next += 1

    def set_layer_output(self, node: fx.Node, q_value: torch.Tensor, f_value: torch.Tensor) -> None:
        assert self.position[node] == self.next
        self.q[node], self.f[node] = q_value, f_value
        self._done(self.next)
        self.next += 1

    def _done(self, index: int) -> None:
        for n in self.release.get(index, ()):
            self.q.pop(n, None)
            self.f.pop(n, None)

    def value(self, env: dict[fx.Node, Any], a: Any) -> Any:
        return fx.node.map_arg(a, lambda n: env[n])

    def _run(self, n: fx.Node, env: dict[fx.Node, Any], quantized: bool) -> Any:
        if n.op == "placeholder":
            return self.inputs.pop(0) if quantized else self.q[n]
        if n.op == "get_attr":
            return _attr(self.gm, n.target)
        if n.op == "output":
            return None
        args, kwargs = self.value(env, n.args), self.value(env, n.kwargs)
        if n.op == "call_module":
            module = self.gm.get_submodule(n.target)
            if hasattr(module, "calculate_qparams"):  # an observer
                if quantized and self.quantize_activations and id(module) not in self.weight_observers:
                    return self._fake_quant(module, args[0])
                return args[0]
            return module(*args, **kwargs)
        return n.target(*args, **kwargs)

    def _fake_quant(self, observer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if id(observer) not in self._fake:
            scale, zp = observer.calculate_qparams()
            self._fake[id(observer)] = (float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]), observer.quant_min, observer.quant_max)
        scale, zp, lo, hi = self._fake[id(observer)]
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, lo, hi)


def _conv_args(node: fx.Node) -> tuple[list[int], list[int], list[int], int]:
    def pair(v: Any) -> list[int]:
        return list(v) * (2 // len(v)) if isinstance(v, (list, tuple)) else [int(v), int(v)]

    return (pair(_arg(node, 3, "stride", [1, 1])), pair(_arg(node, 4, "padding", [0, 0])),
            pair(_arg(node, 5, "dilation", [1, 1])), int(_arg(node, 6, "groups", 1)))


def _patches(x: torch.Tensor, kernel: tuple[int, int], stride: list[int], padding: list[int], dilation: list[int],
             index: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """The input patches under output positions ``index`` (flat over N x OH x OW): [M, C, kh, kw]."""
    if any(padding):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    oh_n, ow_n = out_hw
    n, rest = index // (oh_n * ow_n), index % (oh_n * ow_n)
    oh, ow = rest // ow_n, rest % ow_n
    rows = oh[:, None] * stride[0] + torch.arange(kernel[0]) * dilation[0]
    cols = ow[:, None] * stride[1] + torch.arange(kernel[1]) * dilation[1]
    return x[n[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def _at(y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Output values at flat positions ``index`` of [N, C, OH, OW]: [M, C]."""
    return y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])[index]


def _activation_fn(node: fx.Node | None) -> Callable[[torch.Tensor], torch.Tensor]:
    if node is None:
        return lambda y: y
    if node.target in (torch.ops.aten.relu.default, torch.ops.aten.relu_.default):
        return torch.relu
    lo, hi = float(_arg(node, 1, "min_val", -1.0)), float(_arg(node, 2, "max_val", 1.0))
    return lambda y: torch.clamp(y, lo, hi)


def _patch_forward(key: str, w_shape: torch.Size, groups: int, bias: torch.Tensor | None, act: Callable) -> Callable:
    """``forward({key: w}, patches)``: the conv at each sampled position, [M, Cout]."""
    cout = w_shape[0]
    depthwise = groups > 1 and w_shape[1] == 1 and cout == groups

    def forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        w, m = p[key], x.shape[0]
        if groups == 1:
            out = x.reshape(m, -1) @ w.reshape(cout, -1).T
        elif depthwise:
            out = (x.reshape(m, cout, -1) * w.reshape(cout, -1)).sum(-1)
        else:
            out = torch.einsum("bgi,goi->bgo", x.reshape(m, groups, -1), w.reshape(groups, cout // groups, -1)).reshape(m, cout)
        return act(out if bias is None else out + bias)

    return forward


def _linear_forward(key: str, bias: torch.Tensor | None, act: Callable) -> Callable:
    return lambda p, x: act(F.linear(x, p[key], bias))


def _samples(data: QuantData, limit: int) -> tuple[torch.Tensor, ...]:
    got, parts = 0, []
    for inputs, _ in data.calibration.batches(data.batch_size):
        parts.append(inputs)
        got += len(inputs[0])
        if got >= limit:
            break
    return tuple(torch.cat([p[i] for p in parts])[:limit] for i in range(len(parts[0]))) if parts else ()


def check_samples(data: QuantData) -> int:
    n = len(data.calibration)
    if n < MIN_SAMPLES:
        raise QuantwiseError(f"adaround needs at least {MIN_SAMPLES} calibration samples to learn the rounding from, got {n}",
                             f"give {MIN_SAMPLES} or more (e.g. --n-calibration 128), or use rounding=nearest")
    return min(n, MAX_SAMPLES)


def learn_rounding(prepared: fx.GraphModule, recipe: StaticInt8, data: QuantData, weight_observers: dict[str, nn.Module], *,
                   targets: str = "float", quantize_activations: bool = False, include_activation: bool = True,
                   samples: int | None = None, **adaround_options: Any) -> RoundingReport:
    """AdaRound codes (int8) for the covered layers of a calibrated prepared graph; see the module docstring."""
    from quantwise.rounding import RoundedWeight, adaround

    if targets not in ("float", "quantized"):
        raise ValueError(f"targets must be 'float' or 'quantized', got {targets!r}")
    started, cpu_started = time.perf_counter(), time.process_time()
    n = check_samples(data) if samples is None else samples
    layers, uncovered = _layers(prepared, weight_observers)
    report = RoundingReport(uncovered=uncovered, samples=n)
    generator = torch.Generator().manual_seed(recipe.rounding_seed)
    streams = _Streams(prepared, _samples(data, n), {id(o) for o in weight_observers.values()}, quantize_activations)
    with torch.no_grad():
        for i, layer in enumerate(data.progress("learning rounding (adaround)", layers, len(layers))):
            node = layer.node
            streams.advance_to(node)
            xq, xf = streams.value(streams.q, node.args[0]), streams.value(streams.f, node.args[0])
            w = _attr(prepared, layer.key).detach().float()
            bias_arg = _arg(node, 2, "bias", None)
            bias = streams.value(streams.f, bias_arg).detach().float() if bias_arg is not None else None
            act = _activation_fn(layer.activation if include_activation else None)
            scale, zp = _qparams(layer.observer, w.dim())
            spec = RoundedWeight(layer.key, w, scale, zp, int(layer.observer.quant_min), int(layer.observer.quant_max))
            if node.target is _CONV:
                stride, padding, dilation, groups = _conv_args(node)
                yf = F.conv2d(xf, w, bias, stride, padding, dilation, groups)
                oh, ow = yf.shape[2:]
                total = yf.shape[0] * oh * ow
                pool = max(1, min(PATCH_POOL, total, POOL_BYTES // (4 * w[0].numel() * groups)))
                index = torch.randperm(total, generator=generator)[:pool]
                inputs = _patches(xq, tuple(w.shape[2:]), stride, padding, dilation, index, (oh, ow))
                forward = _patch_forward(layer.key, w.shape, groups, bias, act)
                if targets == "float":
                    wanted = act(_at(yf, index))
                else:
                    wanted = forward({layer.key: w}, inputs)
                batch = BATCH
            else:
                yf = F.linear(xf, w, bias)
                rows_q, rows_f = xq.reshape(-1, w.shape[1]), yf.reshape(-1, w.shape[0])
                index = torch.randperm(len(rows_q), generator=generator)[:PATCH_POOL]
                inputs = rows_q[index].contiguous()
                forward = _linear_forward(layer.key, bias, act)
                wanted = act(rows_f[index]) if targets == "float" else forward({layer.key: w}, inputs)
                batch = min(32, len(inputs))
            nearest = nearest_codes(w, layer.observer)
            codes, why = nearest, None
            if not (torch.isfinite(inputs).all() and torch.isfinite(wanted).all()):
                why = "non-finite layer inputs or outputs"
            else:
                with torch.enable_grad():
                    result = adaround([spec], forward, inputs, wanted, iterations=recipe.rounding_iterations, batch_size=batch,
                                      seed=recipe.rounding_seed + i, **adaround_options)
                report.ratios[layer.key] = result.mse_ratio
                if not (math.isfinite(result.mse) and math.isfinite(result.rtn_mse)):
                    why = "non-finite loss"
                elif result.mse > result.rtn_mse:
                    why = f"learned rounding did not beat nearest on calibration data (x{result.mse_ratio:.2f})"
                else:
                    codes = result.codes[layer.key]
            if why is None:
                report.codes[layer.key] = codes.to(torch.int8)
            else:
                report.kept_nearest[layer.key] = why
            w_hat = (codes - zp) * scale
            if node.target is _CONV:
                yq = F.conv2d(xq, w_hat, bias, stride, padding, dilation, groups)
            else:
                yq = F.linear(xq, w_hat, bias)
            del inputs, wanted
            streams.set_layer_output(node, yq, yf)
    report.seconds, report.cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return report
