"""Make a PT2E QDQ graph run on ONNX Runtime's integer kernels.

ONNX Runtime turns ``DequantizeLinear -> Conv -> QuantizeLinear`` into one QLinearConv (and
``DQ -> Add <- DQ -> Q`` into QLinearAdd) only where every input and output of the op is
quantized. Two patterns of the x86 quantizer's graph break that, and left alone they make
ORT run about half of EfficientNet-Lite0's convolutions in float between extra
quantize/dequantize steps (measured: 11 ms against 2.2 ms for ORT's own quantizer's graph):

- *zero padding in front of a quantized conv* (``Conv2dStaticSamePadding``: ``Pad -> Q -> DQ
  -> Conv``): the Pad is folded into the Conv's ``pads``. Exact: a zero padded before
  quantization is the zero-point after it, and QLinearConv pads with the zero-point.
- *a conv whose float output feeds a residual Add* (PT2E fuses conv + add and quantizes only
  the sum): the conv output gets its own QuantizeLinear/DequantizeLinear, with a range
  calibrated (min/max) on the calibration split, as ONNX Runtime's own quantizer places it.
  Not exact: one more rounding step than the PyTorch int8 model, which the export's parity
  check then measures.

and one for every int8 Linear whose output stays float (minilm-l6's 36, EfficientNet's classifier):

- ``DQ(x) -> MatMul(Transpose(DQ(w))) -> Add(bias)`` (and ``Gemm(DQ(x), DQ(w), bias)``) becomes one
  ``com.microsoft::MatMulIntegerToFloat(x codes, w codes transposed, scales, zero-points, bias)``.
  ONNX Runtime fuses such a MatMul itself but leaves each bias Add its other fusions do not absorb
  as a separate op (minilm-l6, batch 1: 25 Adds, 0.7 of 10.4 ms, and BiasGelu where the rewritten
  graph runs Gelu), and runs the Gemm in float on a weight it dequantizes at every call (0.3 ms of
  EfficientNet-Lite0's 3.5). The same integer GEMM with the bias added in its output stage: equal
  up to float rounding (ORT 1.32 adds the bias unscaled when the activation scale is per tensor,
  as here: tested), which can move an activation across a rounding step further on.
"""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np

from quantwise.data.base import TensorSet

QMAX = 255  # uint8 activations, as the x86 quantizer's (int8 when the graph quantizes to int8, as XNNPACK's)


def _graph_maps(graph: Any) -> tuple[dict[str, Any], dict[str, list[Any]], dict[str, Any]]:
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = collections.defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    return producer, consumers, {i.name: i for i in graph.initializer}


def _const(inits: dict[str, Any], name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[name]) if name in inits else None


def fold_pads(model: Any) -> int:
    """Fold ``Pad(0) -> Q -> DQ -> Conv`` chains into the Conv's pads; the number folded."""
    from onnx import helper

    graph = model.graph
    _, consumers, inits = _graph_maps(graph)
    folded, reshaped = [], set()
    for pad in graph.node:
        if pad.op_type != "Pad" or any(a.name == "mode" and a.s != b"constant" for a in pad.attribute):
            continue
        value = _const(inits, pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        pads = _const(inits, pad.input[1]) if len(pad.input) > 1 else None
        if value is None or value.size != 1 or float(value) != 0.0 or pads is None or pads.size != 8 or len(pad.input) > 3:
            continue
        pads = [int(p) for p in pads]  # [n, c, h, w begin, n, c, h, w end]
        if pads[0] or pads[1] or pads[4] or pads[5] or min(pads) < 0:
            continue
        users = consumers[pad.output[0]]
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            continue
        dqs = consumers[users[0].output[0]]
        convs = [c for dq in dqs for c in consumers[dq.output[0]]]
        if not dqs or any(dq.op_type != "DequantizeLinear" for dq in dqs) or not convs or any(
                c.op_type != "Conv" or c.input[0] != dq.output[0] for dq in dqs for c in consumers[dq.output[0]]):
            continue
        if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for c in convs for a in c.attribute):
            continue
        for conv in convs:
            old = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
            new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
            kept = [a for a in conv.attribute if a.name != "pads"]
            del conv.attribute[:]
            conv.attribute.extend(kept + [helper.make_attribute("pads", new)])
        users[0].input[0] = pad.input[0]
        folded.append(pad)
        reshaped.update([users[0].output[0], *(dq.output[0] for dq in dqs)])  # now unpadded: their recorded shapes are stale
    for pad in folded:
        graph.node.remove(pad)
    stale = [v for v in graph.value_info if v.name in reshaped]
    for v in stale:
        graph.value_info.remove(v)
    _prune(graph)  # the folded Pads' pads and values
    return len(folded)


def _scalar(inits: dict[str, Any], name: str) -> bool:
    value = _const(inits, name)
    return value is not None and value.size == 1


def _weight_dq(node: Any, producer: dict[str, Any], consumers: dict[str, list[Any]], inits: dict[str, Any]) -> tuple[Any, list[Any]] | None:
    """The weight DequantizeLinear of an int8 Linear written as ``MatMul(DQ(x), Transpose(DQ(w)))``
    or ``Gemm(DQ(x), DQ(w), bias, transB=1)``, with the nodes only it reads (to drop), or None."""
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "MatMul":
        transpose = producer.get(node.input[1])
        if transpose is None or transpose.op_type != "Transpose" or len(consumers[transpose.output[0]]) != 1:
            return None
        if next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None) != [1, 0]:
            return None
        w_dq, only_here = producer.get(transpose.input[0]), [transpose]
    elif node.op_type == "Gemm":
        if ("transA" in attrs and attrs["transA"].i) or not ("transB" in attrs and attrs["transB"].i):
            return None
        if any(k in attrs and attrs[k].f != 1.0 for k in ("alpha", "beta")):
            return None
        w_dq, only_here = producer.get(node.input[1]), []
    else:
        return None
    if w_dq is None or w_dq.op_type != "DequantizeLinear" or w_dq.input[0] not in inits or len(w_dq.input) < 3 or len(consumers[w_dq.output[0]]) != 1:
        return None
    return w_dq, [*only_here, w_dq]


def fold_linear_biases(model: Any) -> int:
    """Turn each int8 Linear with a float output, ``DQ(x) -> MatMul(Transpose(DQ(w))) [-> Add(bias)]``
    or ``Gemm(DQ(x), DQ(w), bias)``, into one MatMulIntegerToFloat carrying the bias; the number rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producer, consumers, inits = _graph_maps(graph)
    outputs = {o.name for o in graph.output}
    replaced: dict[int, Any] = {}
    dropped: set[int] = set()
    for node in graph.node:
        x_dq = producer.get(node.input[0]) if node.input else None
        found = _weight_dq(node, producer, consumers, inits) if x_dq is not None and x_dq.op_type == "DequantizeLinear" else None
        if found is None or len(x_dq.input) < 3:
            continue
        w_dq, weight_nodes = found
        axis = next((a.i for a in w_dq.attribute if a.name == "axis"), 1)
        codes, w_scale, w_zero = (_const(inits, i) for i in w_dq.input[:3])
        if codes.ndim != 2 or (w_scale.size != 1 and axis != 0):
            continue
        if not (_scalar(inits, x_dq.input[1]) and _scalar(inits, x_dq.input[2])):
            continue  # MatMulIntegerToFloat's activation scale and zero-point: one per tensor here
        n_out = codes.shape[0]
        bias, output, add = (node.input[2] if len(node.input) > 2 and node.input[2] else None), node.output[0], None
        if node.op_type == "Gemm":
            value = None if bias is None else _const(inits, bias)
            if bias is not None and (value is None or value.shape != (n_out,)):
                continue  # a bias broadcast other than one per output stays a Gemm
        else:
            users = consumers[output]
            if len(users) == 1 and users[0].op_type == "Add" and output not in outputs:
                other = users[0].input[1] if users[0].input[0] == output else users[0].input[0]
                value = _const(inits, other)
                if value is not None and value.shape == (n_out,):
                    bias, output, add = other, users[0].output[0], users[0]
        name = node.name or node.output[0]
        graph.initializer.extend([
            numpy_helper.from_array(np.ascontiguousarray(codes.T), f"{name}_codes_t"),  # (in, out): the op's B
            numpy_helper.from_array(np.broadcast_to(w_scale.astype(np.float32).reshape(-1), (n_out,)).copy(), f"{name}_w_scale"),
            numpy_helper.from_array(np.broadcast_to(w_zero.reshape(-1), (n_out,)).copy(), f"{name}_w_zero_point"),
        ])
        inputs = [x_dq.input[0], f"{name}_codes_t", x_dq.input[1], f"{name}_w_scale", x_dq.input[2], f"{name}_w_zero_point"]
        replaced[id(node)] = helper.make_node("MatMulIntegerToFloat", inputs + ([bias] if bias else []), [output],
                                              name=f"{name}_integer", domain="com.microsoft")
        dropped.update(id(n) for n in [*weight_nodes, *([add] if add is not None else [])])
    if not replaced:
        return 0
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    _prune(graph)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replaced)


def _prune(graph: Any) -> None:
    """Drop nodes whose outputs nothing reads (the activations' now unused DequantizeLinear) and unused initializers."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input} | outputs
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def _residual_convs(model: Any) -> list[tuple[Any, int, str]]:
    """(Add node, input index, conv output name) for float conv outputs feeding a quantized Add."""
    producer, consumers, _ = _graph_maps(model.graph)
    found = []
    for add in model.graph.node:
        if add.op_type != "Add":
            continue
        users = consumers[add.output[0]]
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            continue
        others = [producer.get(i) for i in add.input]
        for k, src in enumerate(add.input):
            conv = producer.get(src)
            other = others[1 - k] if len(add.input) == 2 else None
            if conv is not None and conv.op_type == "Conv" and len(consumers[src]) == 1 and other is not None and other.op_type in ("DequantizeLinear", "Conv"):
                found.append((add, k, src))
    return found


def _ranges(model: Any, names: list[str], calibration: TensorSet, input_names: list[str], batch_size: int, fixed: bool) -> dict[str, tuple[float, float]]:
    """Min/max of the named float tensors over the calibration split, run in ONNX Runtime."""
    import copy

    import onnxruntime as ort
    from onnx import TensorProto, helper

    probe = copy.deepcopy(model)
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    for inputs, _ in calibration.batches(batch_size):
        if fixed and len(inputs[0]) != batch_size:
            continue  # a graph exported without a dynamic batch takes its example's batch only
        outs = session.run(names, {k: t.numpy() for k, t in zip(input_names, inputs)})
        for n, v in zip(names, outs):
            lo[n], hi[n] = min(lo[n], float(v.min())), max(hi[n], float(v.max()))
    return {n: (lo[n], hi[n]) for n in names}


def quantize_residual_convs(model: Any, calibration: TensorSet, input_names: list[str], fixed_batch: int | None = None) -> int:
    """Give each conv output that feeds a quantized residual Add its own calibrated Q/DQ; the number."""
    from onnx import TensorProto, helper

    sites = _residual_convs(model)
    if not sites:
        return 0
    ranges = _ranges(model, [s for _, _, s in sites], calibration, input_names, fixed_batch or 16, fixed_batch is not None)
    graph = model.graph
    _, consumers, inits = _graph_maps(graph)
    for add, k, src in sites:
        out_q = consumers[add.output[0]][0]  # the sum's QuantizeLinear: its zero-point type is the graph's activation type
        signed = len(out_q.input) > 2 and out_q.input[2] in inits and inits[out_q.input[2]].data_type == TensorProto.INT8
        qmin, qmax = (-128, 127) if signed else (0, QMAX)
        lo, hi = min(ranges[src][0], 0.0), max(ranges[src][1], 0.0)
        scale = max((hi - lo) / (qmax - qmin), float(np.finfo(np.float32).eps))
        zero = int(np.clip(qmin + round(-lo / scale), qmin, qmax))
        s_name, z_name = f"{src}_residual_scale", f"{src}_residual_zero_point"
        graph.initializer.extend([helper.make_tensor(s_name, TensorProto.FLOAT, [], [scale]),
                                  helper.make_tensor(z_name, TensorProto.INT8 if signed else TensorProto.UINT8, [], [zero])])
        q = helper.make_node("QuantizeLinear", [src, s_name, z_name], [f"{src}_residual_q"], name=f"{src}_residual_q")
        dq = helper.make_node("DequantizeLinear", [f"{src}_residual_q", s_name, z_name], [f"{src}_residual_dq"], name=f"{src}_residual_dq")
        add.input[k] = dq.output[0]
        at = list(graph.node).index(add)
        graph.node.insert(at, dq)
        graph.node.insert(at, q)
    return len(sites)


def optimize(path: Path, calibration: TensorSet | None, input_names: list[str], fixed_batch: int | None = None) -> list[str]:
    """Rewrite the QDQ graph at ``path`` in place; notes saying what changed."""
    import onnx

    model = onnx.load(str(path))
    notes = []
    folded = fold_pads(model)
    if folded:
        notes.append(f"{folded} zero Pad(s) folded into their quantized Conv (exact)")
    if calibration is not None and len(calibration) >= (fixed_batch or 1):
        added = quantize_residual_convs(model, calibration, input_names, fixed_batch)
        if added:
            notes.append(f"{added} conv output(s) feeding a residual Add quantized (8-bit, min/max on the calibration split) so that "
                         "ONNX Runtime runs QLinearConv + QLinearAdd: one rounding more than the PyTorch int8 model")
    elif _residual_convs(model):
        notes.append("residual Adds stay float in ONNX Runtime (no calibration data to quantize the conv outputs feeding them)")
    linears = fold_linear_biases(model)
    if linears:
        notes.append(f"{linears} int8 Linear(s) written as MatMulIntegerToFloat with their bias (com.microsoft: needs ONNX Runtime)")
    if notes:
        onnx.save(model, str(path))
    return notes
