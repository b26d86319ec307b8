"""The QDQ rewrites for ONNX Runtime's integer kernels, on a hand-built graph shaped like an
EfficientNet block (random weights: a structure test; the real model's parity and speed are in
benchmarks/RESULTS.md and tests/export/test_export.py)."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from quantwise.data.base import TensorSet
from quantwise.export.onnx_qdq import fold_linear_biases, fold_pads, quantize_residual_convs

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _block() -> "onnx.ModelProto":
    """x -> Pad(1) -> Q -> DQ -> Conv3x3 -> Add(DQ(Q(x))) -> Q -> DQ -> y: the pad of
    Conv2dStaticSamePadding and a conv whose float output meets a residual, as PT2E exports them."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.2, (4, 4, 3, 3)).astype(np.float32)
    w_scale = (np.abs(w).reshape(4, -1).max(1) / 127).astype(np.float32)
    w_q = np.round(w / w_scale[:, None, None, None]).astype(np.int8)
    inits = [
        numpy_helper.from_array(w_q, "w_q"), numpy_helper.from_array(w_scale, "w_scale"), numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"), numpy_helper.from_array(np.array(0.0, np.float32), "pad_value"),
        numpy_helper.from_array(np.array(0.02, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z"),
        numpy_helper.from_array(np.zeros(4, np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]), helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("Pad", ["xd", "pads", "pad_value"], ["p"], mode="constant"),
        helper.make_node("QuantizeLinear", ["p", "s", "z"], ["pq"]), helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["pd"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["wd"], axis=0),
        helper.make_node("Conv", ["pd", "wd", "bias"], ["c"], kernel_shape=[3, 3]),
        helper.make_node("Add", ["c", "xd"], ["a"]),
        helper.make_node("QuantizeLinear", ["a", "s", "z"], ["aq"]), helper.make_node("DequantizeLinear", ["aq", "s", "z"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _linear(per_channel: bool = True, gemm: bool = False) -> "onnx.ModelProto":
    """x -> Q -> DQ -> MatMul(Transpose(DQ(w))) -> Add(bias) -> Gelu: an int8 Linear as PT2E exports
    it in a transformer ([batch, 5, 8] input); with ``gemm``, ``Gemm(DQ(x), DQ(w), bias, transB=1)`` on
    [batch, 8], as in a classifier's head."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.2, (6, 8)).astype(np.float32)  # (out, in)
    w_scale = (np.abs(w).max(1) / 127).astype(np.float32) if per_channel else np.array(np.abs(w).max() / 127, np.float32)
    w_q = np.round(w / (w_scale[:, None] if per_channel else w_scale)).astype(np.int8)
    inits = [
        numpy_helper.from_array(w_q, "w_q"), numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(6 if per_channel else (), np.int8), "w_zp"),
        numpy_helper.from_array(np.array(0.03, np.float32), "s"), numpy_helper.from_array(np.array(120, np.uint8), "z"),
        numpy_helper.from_array(rng.normal(0, 1, 6).astype(np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]), helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["wd"], **({"axis": 0} if per_channel else {})),
        *([helper.make_node("Gemm", ["xd", "wd", "bias"], ["a"], name="fc", transB=1)] if gemm else [
            helper.make_node("Transpose", ["wd"], ["wt"], perm=[1, 0]),
            helper.make_node("MatMul", ["xd", "wt"], ["m"], name="fc"), helper.make_node("Add", ["m", "bias"], ["a"])]),
        helper.make_node("Gelu", ["a"], ["y"]),
    ]
    shape = ["batch", 8] if gemm else ["batch", 5, 8]
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _run(model, x: np.ndarray, tmp_path, name: str) -> tuple[np.ndarray, collections.Counter]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{name}.opt.onnx")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": x})[0]
    return out, collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def test_zero_pad_folds_into_the_conv_exactly_and_residual_conv_gets_integer_kernels(tmp_path):
    x = np.random.default_rng(1).normal(0, 1, (2, 4, 8, 8)).astype(np.float32)
    model = _block()
    before, ops_before = _run(model, x, tmp_path, "before")
    assert ops_before["QLinearConv"] == 0  # the Pad between and the float conv output keep ORT in float

    assert fold_pads(model) == 1
    assert not [n for n in model.graph.node if n.op_type == "Pad"]
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [1, 1, 1, 1]
    folded, _ = _run(model, x, tmp_path, "folded")
    np.testing.assert_array_equal(folded, before)  # exact: padding zero is the zero-point

    calibration = TensorSet((torch.from_numpy(x),))
    assert quantize_residual_convs(model, calibration, ["x"]) == 1
    after, ops_after = _run(model, x, tmp_path, "after")
    assert ops_after["QLinearConv"] == 1 and ops_after["QLinearAdd"] == 1
    # one more rounding: within a few output steps (scale 0.02) of the float-conv graph
    assert np.abs(after - before).max() <= 3 * 0.02 + 1e-6


def test_a_pad_that_is_not_zero_stays(tmp_path):
    from onnx import numpy_helper

    model = _block()
    value = next(i for i in model.graph.initializer if i.name == "pad_value")
    value.CopyFrom(numpy_helper.from_array(np.array(1.0, np.float32), "pad_value"))
    assert fold_pads(model) == 0


@pytest.mark.parametrize("per_channel,gemm", [(True, False), (False, False), (True, True)])
def test_linear_with_its_bias_becomes_one_integer_matmul(tmp_path, per_channel, gemm):
    x = np.random.default_rng(3).normal(0, 1, (3, 8) if gemm else (3, 5, 8)).astype(np.float32)
    model = _linear(per_channel, gemm)
    before, _ = _run(model, x, tmp_path, "before")

    assert fold_linear_biases(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["QuantizeLinear", "MatMulIntegerToFloat", "Gelu"]  # the Transpose, weight DQ, bias Add and dead activation DQ gone
    node = model.graph.node[1]
    assert node.domain == "com.microsoft" and node.input[6] == "bias"
    assert {i.name for i in model.graph.initializer} == {"s", "z", "bias", "fc_codes_t", "fc_w_scale", "fc_w_zero_point"}
    after, ops_after = _run(model, x, tmp_path, "after")
    assert ops_after["Add"] == ops_after["Gemm"] == 0
    # the same integer GEMM and the bias added in its output stage, unscaled (ORT 1.32 with a per-tensor activation scale)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_a_linear_with_a_per_row_activation_scale_stays():
    from onnx import numpy_helper

    model = _linear()
    scale = next(i for i in model.graph.initializer if i.name == "s")
    scale.CopyFrom(numpy_helper.from_array(np.full(5, 0.03, np.float32), "s"))
    assert fold_linear_biases(model) == 0
