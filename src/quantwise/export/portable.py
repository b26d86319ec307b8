"""Integer ONNX graphs that compute the same on every CPU.

ONNX Runtime multiplies uint8 activations by int8 weights with different instructions on
different CPUs. With VNNI (``vpdpbusd``), AMX or ARM's dot products every product is summed in
32 bits. Without them (AVX2, and AVX-512 without VNNI) the kernel uses ``vpmaddubsw``: it adds
*pairs* of uint8 x int8 products in saturating 16-bit arithmetic, so ``a0*b0 + a1*b1`` above
32767 is clipped and the result is silently wrong. A full-range pair reaches 2 x 255 x 128 =
65280. ONNX Runtime's own answer (``reduce_range``) is 7-bit weights, which loses accuracy.

quantwise instead writes every int8 weight that meets uint8 activations as uint8 codes with
the zero-point moved by 128 (``w + 128`` with ``z + 128``): the dequantized weight is the same
number, so nothing the graph computes changes, and ONNX Runtime then runs its uint8 x uint8
kernels, which widen to 16 bits before multiplying (``vpmaddwd``: a pair is at most 2 x 255 x
255, far inside 32 bits) on every x86 and use dot products on ARM. A weight whose codes all lie
within +-64 cannot saturate (2 x 255 x 64 = 32640) and stays int8, and so do depthwise
convolutions, whose kernels widen before multiplying on every CPU.

``hazards`` lists the integer products a graph still has at risk; the export refuses a graph
with any. ``saturating_u8s8_matmul`` is a reference of the AVX2 kernel's arithmetic, for tests.
"""
from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

INT16_MAX = 32767
U8_MAX = 255
SAFE_INT8_WEIGHT = INT16_MAX // (2 * U8_MAX)  # 64: |w| <= 64 keeps any pair of u8 x s8 products within int16

# op type -> (activation, activation zero-point, weight, weight zero-point) input positions
_INTEGER_OPS: dict[str, tuple[int, int, int, int]] = {
    "MatMulIntegerToFloat": (0, 4, 1, 5),
    "MatMulInteger": (0, 2, 1, 3),
    "ConvInteger": (0, 2, 1, 3),
    "QLinearConv": (0, 2, 3, 5),
    "QLinearMatMul": (0, 2, 3, 5),
}
_QDQ_CONSUMERS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass(frozen=True)
class Product:
    """One integer product in a graph: the node, its weight codes and zero-point (names), and
    the dtypes of both sides (numpy dtype names, or None where the graph does not say)."""

    node: str
    weight: str
    weight_zero_point: str | None
    activation_dtype: str | None
    weight_dtype: str
    depthwise: bool = False


def saturating_u8s8_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` as the AVX2 integer GEMM computes it: uint8 ``a`` (M, K) times int8 ``b`` (K, N),
    products of neighbouring k taken in pairs and each pair's sum saturated to int16
    (``vpmaddubsw``), then the pair sums added in int32 (``vpmaddwd`` with ones)."""
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    k = a64.shape[1]
    if k % 2:
        a64, b64 = np.pad(a64, ((0, 0), (0, 1))), np.pad(b64, ((0, 1), (0, 0)))
    pairs = a64[:, 0::2, None] * b64[None, 0::2, :] + a64[:, 1::2, None] * b64[None, 1::2, :]
    return np.clip(pairs, -INT16_MAX - 1, INT16_MAX).sum(axis=1)


def integer_products(model: Any) -> Iterator[Product]:
    """Every integer product the graph asks ONNX Runtime for, with a constant weight: the integer
    ops themselves, and ``DequantizeLinear`` of weight codes feeding a Conv/MatMul/Gemm (ORT fuses
    those with the quantized activation into QLinearConv / MatMulIntegerToFloat)."""
    graph = model.graph
    consts = _constants(graph)
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type in _INTEGER_OPS:
            a, az, w, wz = _INTEGER_OPS[node.op_type]
            if len(node.input) > w and node.input[w] in consts:
                yield Product(node.name or node.output[0], node.input[w], _input(node, wz),
                              _dtype_of(_input(node, az), consts, producer), str(consts[node.input[w]].dtype),
                              _is_depthwise(node, consts[node.input[w]]))
        elif node.op_type in _QDQ_CONSUMERS and len(node.input) >= 2:
            act, weight = (_through_transpose(producer.get(i), producer) for i in node.input[:2])
            if _is_dq(act) and _is_dq(weight) and weight.input[0] in consts:
                yield Product(node.name or node.output[0], weight.input[0], _input(weight, 2),
                              _dq_dtype(act, consts, producer), str(consts[weight.input[0]].dtype),
                              _is_depthwise(node, consts[weight.input[0]]))


def hazards(model: Any) -> list[str]:
    """Names of the integer products that can saturate on AVX2: uint8 activations (or
    activations of unknown type) times int8 weights with codes beyond +-64."""
    consts = _constants(model.graph)
    return [p.node for p in integer_products(model)
            if p.weight_dtype == "int8" and p.activation_dtype in ("uint8", None) and not p.depthwise
            and int(np.abs(consts[p.weight].astype(np.int16)).max(initial=0)) > SAFE_INT8_WEIGHT]


def make_portable(model: Any) -> int:
    """Rewrite, in place, every int8 weight at risk (see ``hazards``) as uint8 codes + 128 with its
    zero-point + 128: the same dequantized values. Returns the number of weights rewritten."""
    from onnx import numpy_helper

    graph = model.graph
    at_risk = set(hazards(model))
    consts = _constants(graph)
    done: set[str] = set()
    for product in integer_products(model):
        if product.node not in at_risk or product.weight in done:
            continue
        _set_constant(graph, product.weight, (consts[product.weight].astype(np.int16) + 128).astype(np.uint8))
        # a fresh zero-point: exporters share one zero-point constant between many weights
        zero = product.weight_zero_point
        old = consts[zero] if zero in consts else np.array(0, np.int8)
        name = f"{product.weight}_zero_point_u8"
        graph.initializer.append(numpy_helper.from_array((old.astype(np.int16) + 128).astype(np.uint8), name))
        _set_zero_point(graph, product.weight, name)
        done.add(product.weight)
    _drop_unused_initializers(graph)
    left = hazards(model)
    if left:
        from quantwise.errors import QuantwiseError

        raise QuantwiseError(f"the ONNX graph keeps uint8 x int8 products that saturate on CPUs without VNNI ({', '.join(left[:3])})",
                             "report this model as a bug; export --to pt2 meanwhile")
    return len(done)


def _set_constant(graph: Any, name: str, values: np.ndarray) -> None:
    """Replace the value of constant ``name``: an initializer or a Constant node's tensor."""
    from onnx import numpy_helper

    tensor = numpy_helper.from_array(values, name)
    for init in graph.initializer:
        if init.name == name:
            init.CopyFrom(tensor)
            return
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            next(a for a in node.attribute if a.name == "value").t.CopyFrom(tensor)
            return
    raise KeyError(name)


def _set_zero_point(graph: Any, weight: str, name: str) -> None:
    """Point every node that reads ``weight`` (its DequantizeLinear or integer op) at zero-point ``name``."""
    for node in graph.node:
        if weight not in node.input:
            continue
        if node.op_type != "DequantizeLinear" and node.op_type not in _INTEGER_OPS:
            raise ValueError(f"weight {weight} is read by a {node.op_type} node, which has no zero-point input to move")
        position = 2 if node.op_type == "DequantizeLinear" else _INTEGER_OPS[node.op_type][3]
        while len(node.input) <= position:
            node.input.append("")
        node.input[position] = name


def _drop_unused_initializers(graph: Any) -> None:
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def _is_depthwise(node: Any, weight: np.ndarray) -> bool:
    """A convolution with one input channel per group: ONNX Runtime runs it on its depthwise kernels,
    which widen to 16 bits before multiplying and so do not saturate (checked on an emulated AVX2
    CPU by the tests)."""
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return "Conv" in node.op_type and group > 1 and weight.ndim >= 3 and weight.shape[1] == 1


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _input(node: Any, index: int) -> str | None:
    return node.input[index] if len(node.input) > index and node.input[index] else None


def _is_dq(node: Any) -> bool:
    return node is not None and node.op_type == "DequantizeLinear"


def _through_transpose(node: Any, producer: dict[str, Any]) -> Any:
    if node is not None and node.op_type == "Transpose":
        return producer.get(node.input[0])
    return node


def _dq_dtype(dq: Any, consts: dict[str, np.ndarray], producer: dict[str, Any]) -> str | None:
    """The integer type a DequantizeLinear reads: its zero-point's, else its input's constant type."""
    if dq.input[0] in consts:
        return str(consts[dq.input[0]].dtype)
    return _dtype_of(_input(dq, 2), consts, producer) or _dtype_of_quantize(producer.get(dq.input[0]), consts)


def _dtype_of(name: str | None, consts: dict[str, np.ndarray], producer: dict[str, Any]) -> str | None:
    if name is None:
        return None
    if name in consts:
        return str(consts[name].dtype)
    return _dtype_of_quantize(producer.get(name), consts)


def _dtype_of_quantize(node: Any, consts: dict[str, np.ndarray]) -> str | None:
    if node is not None and node.op_type in ("QuantizeLinear", "DynamicQuantizeLinear"):
        if node.op_type == "DynamicQuantizeLinear":
            return "uint8"
        zero = _input(node, 2)
        return str(consts[zero].dtype) if zero in consts else "uint8"  # QuantizeLinear without a zero-point: uint8
    return None


def count_by_dtype(model: Any) -> dict[tuple[str | None, str], int]:
    """How many integer products of each (activation, weight) type the graph has: for reports."""
    return dict(collections.Counter((p.activation_dtype, p.weight_dtype) for p in integer_products(model)))
