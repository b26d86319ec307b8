"""Quantized layers of a PT2E graph (torchao ``convert_pt2e``), which has no modules left.

A quantized conv/linear is the pattern ``quantize -> dequantize -> conv(x, dequantize(w))
[-> relu/hardtanh] [-> quantize -> dequantize]``. Its name comes from the node's
``nn_module_stack`` (static_pt2e renames shared calls ``name@k``); its output is the last
node of the pattern. Running the model records those nodes' values (recording nodes are
inserted into a copy of the graph); the isolated run evaluates only the layer's own nodes
from a float input, starting where the float module's input enters the graph (before any
padding the module does itself, e.g. EfficientNet's static same-padding)."""
from __future__ import annotations

import copy
import functools
from typing import Any

import torch
from torch import fx, nn

from quantwise.data.base import Inputs
from quantwise.debug.capture import LayerWeights, QuantizedRun, QuantLayer, grid_ranges
from quantwise.debug.float_side import Call, Chain, parse_call
from quantwise.debug.stats import QuantRange

_LAYER_OPS = {
    torch.ops.aten.conv1d.default: "conv",
    torch.ops.aten.conv2d.default: "conv",
    torch.ops.aten.conv3d.default: "conv",
    torch.ops.aten.linear.default: "linear",
}
_ACTIVATION_OPS = {
    torch.ops.aten.relu.default: "relu",
    torch.ops.aten.relu_.default: "relu",
    torch.ops.aten.hardtanh.default: "hardtanh",
    torch.ops.aten.hardtanh_.default: "hardtanh",
}
_RECORDS: dict[int, dict[str, torch.Tensor]] = {}


def _record(store: int, key: str, value: torch.Tensor) -> None:
    _RECORDS[store][key] = value.detach()


def _op(node: Any) -> str:
    return str(node.target) if isinstance(node, fx.Node) and node.op == "call_function" else ""


def _is_q(node: Any) -> bool:
    return _op(node).startswith("quantized_decomposed.quantize_per_tensor")


def _is_dq(node: Any) -> bool:
    return _op(node).startswith("quantized_decomposed.dequantize_per_tensor")


def _is_weight_dq(node: Any) -> bool:
    return _op(node).startswith("quantized_decomposed.dequantize_per_")


def is_pt2e_graph(model: nn.Module) -> bool:
    return isinstance(model, fx.GraphModule) and any(_is_weight_dq(n) for n in model.graph.nodes)


def _grid(node: fx.Node) -> QuantRange | None:
    """The per-tensor grid of a quantize/dequantize node (PT2E keeps scales as literals)."""
    scale, zero_point, qmin, qmax, dtype = node.args[1:6]
    if isinstance(scale, fx.Node) or isinstance(zero_point, fx.Node):
        return None
    return QuantRange(float(scale), int(zero_point), int(qmin), int(qmax), dtype)


def _module_of(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


class GraphBackend:
    def __init__(self, model: fx.GraphModule, chains: list[Chain]) -> None:
        self.model = model
        # layer -> its float weight as the layer quantizes it (BatchNorm folded), set by the debugger when
        # the codes were chosen by an algorithm (learned rounding): then :meth:`nearest` answers
        self.float_weights: dict[Call, torch.Tensor] = {}
        self.placeholders = [n for n in model.graph.nodes if n.op == "placeholder"]
        known = {c.layer for c in chains}
        self.layers: list[QuantLayer] = []
        self.unmatched: list[str] = []
        for node in model.graph.nodes:
            kind = _LAYER_OPS.get(node.target) if node.op == "call_function" else None
            if kind is None or len(node.args) < 2 or not _is_weight_dq(node.args[1]):
                continue
            call = parse_call(_module_of(node))
            if call not in known:
                self.unmatched.append(_module_of(node) or node.name)
                continue
            self.layers.append(self._layer(node, call, kind))
        self._const: dict[fx.Node, Any] = {}
        self._store = id(self)
        _RECORDS[self._store] = {}
        self._recording = self._instrument()

    def _layer(self, node: fx.Node, call: Call, kind: str) -> QuantLayer:
        out, activation, act_name = node, None, ""
        users = list(out.users)
        if len(users) == 1 and users[0].target in _ACTIVATION_OPS:
            act = users[0]
            activation = functools.partial(lambda x, n: n.target(x, *n.args[1:]), n=act)
            act_name, out = _ACTIVATION_OPS[act.target], act
        users, out_grid = list(out.users), None
        if users and all(_is_q(u) for u in users):
            out_grid = _grid(users[0])
            dqs = [u for u in users[0].users if _is_dq(u)]
            out = dqs[0] if dqs else out
        grid, cut = None, node.args[0]
        if _is_dq(cut):
            grid = _grid(cut)
            cut = cut.args[0].args[0] if _is_q(cut.args[0]) else cut
        # step back over what the float module does before its quantized op (its own padding)
        while isinstance(cut, fx.Node) and cut.op == "call_function" and _module_of(cut).startswith(call[0] + ".") and cut.args:
            cut = cut.args[0]
        op = f"pt2e {_op(node).split('.')[1]}" + (f"+{act_name}" if act_name else "")
        handle = {"node": node, "out": out, "cut": cut, "grid": grid, "out_grid": out_grid}
        return QuantLayer(call, kind, op, folds_batch_norm=kind == "conv", activation=activation, activation_name=act_name, handle=handle)

    def _instrument(self) -> fx.GraphModule:
        gm = copy.deepcopy(self.model)
        nodes = {n.name: n for n in gm.graph.nodes}
        for layer in self.layers:
            out = nodes[layer.handle["out"].name]
            with gm.graph.inserting_after(out):
                gm.graph.call_function(_record, (self._store, out.name, out))
        gm.recompile()
        return gm

    def run(self, inputs: Inputs) -> QuantizedRun:
        _RECORDS[self._store] = {}
        with torch.no_grad():
            output = self._recording(*inputs)
        records = _RECORDS[self._store]
        run = QuantizedRun(output.dequantize() if output.is_quantized else output)
        for layer in self.layers:
            run.layer_outputs[layer.call] = records[layer.handle["out"].name]
            run.input_grids[layer.call] = layer.handle["grid"]
            run.output_grids[layer.call] = layer.handle["out_grid"]
        return run

    def isolated(self, layer: QuantLayer, float_args: tuple[Any, ...], inputs: Inputs, grid: QuantRange | None) -> torch.Tensor:
        values: dict[fx.Node, Any] = {layer.handle["cut"]: float_args[0]}
        values.update({p: t for p, t in zip(self.placeholders, inputs)})
        with torch.no_grad():
            return self._evaluate(layer.handle["out"], values)

    def nearest(self, layer: QuantLayer, float_args: tuple[Any, ...]) -> torch.Tensor | None:
        """The layer's output on its float input had its float weight been rounded to nearest on the
        same grid (same scales, zero points and code range) instead of by the recipe's algorithm."""
        w = self.float_weights.get(layer.call)
        if w is None:
            return None
        dq = layer.handle["node"].args[1]
        with torch.no_grad():
            weight, scales, zero_points, axis, qmin, qmax = self._weight_grid(dq)
            if w.shape != weight.shape:
                return None
            shape = [1] * w.dim()
            shape[axis] = -1
            scale, zero = scales.float().reshape(shape), zero_points.float().reshape(shape)
            # as the recipe's nearest rounding computes codes (torchao's reciprocal multiply)
            rounded = (torch.clamp(torch.round(w * (1.0 / scale)) + zero, qmin, qmax) - zero) * scale
            values: dict[fx.Node, Any] = {layer.handle["cut"]: float_args[0], dq: rounded}
            return self._evaluate(layer.handle["out"], values)

    def weights(self, layer: QuantLayer) -> LayerWeights | None:
        with torch.no_grad():
            weight, scales, zero_points, _axis, qmin, qmax = self._weight_grid(layer.handle["node"].args[1])
        return LayerWeights({"weight": weight}, grid_ranges(scales, zero_points, qmin, qmax))

    def _weight_grid(self, dq: fx.Node) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int, int]:
        """A weight's dequantize node read back: (dequantized weight, scales and zero points per channel
        along ``axis`` (a per-tensor grid repeated per row, axis 0), qmin, qmax)."""
        weight = self._evaluate(dq, {})
        args = [self._evaluate(a, {}) if isinstance(a, fx.Node) else a for a in dq.args[1:6]]
        if _op(dq).startswith("quantized_decomposed.dequantize_per_channel"):
            scales, zero_points, axis, qmin, qmax = args
            return weight, torch.as_tensor(scales), torch.as_tensor(zero_points), int(axis), int(qmin), int(qmax)
        scale, zero_point, qmin, qmax = args[:4]
        rows = weight.shape[0]
        return weight, torch.full((rows,), float(scale)), torch.full((rows,), float(zero_point)), 0, int(qmin), int(qmax)

    def _evaluate(self, target: fx.Node, values: dict[fx.Node, Any]) -> Any:
        """The value of ``target`` computed from ``values`` (overrides), constants and get_attr only."""
        needed, stack = set(), [target]
        while stack:
            node = stack.pop()
            if node in needed or node in values or node in self._const:
                continue
            needed.add(node)
            stack.extend(node.all_input_nodes)
        env = dict(values)
        for node in self.model.graph.nodes:  # graph order is topological
            if node not in needed:
                continue
            if node.op == "get_attr":
                env[node] = self._const.setdefault(node, functools.reduce(getattr, node.target.split("."), self.model))
                continue
            if node.op != "call_function":
                raise RuntimeError(f"cannot evaluate {node.op} node {node.name} in isolation")
            lookup = lambda n: env[n] if n in env else self._const[n]  # noqa: E731
            args = fx.node.map_arg(node.args, lookup)
            kwargs = fx.node.map_arg(node.kwargs, lookup)
            env[node] = node.target(*args, **kwargs)
            if all(n in self._const for n in node.all_input_nodes):
                self._const[node] = env[node]  # weight dequantization: same value every time
        return env[target] if target in env else self._const[target]

    def close(self) -> None:
        _RECORDS.pop(self._store, None)
