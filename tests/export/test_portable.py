"""Integer ONNX graphs compute the same on every CPU: the AVX2 kernel's saturating arithmetic as a
reference (any machine), and ONNX Runtime itself on an emulated AVX2-only CPU (QEMU user mode,
AMD EPYC-Milan: AVX2, no AVX-512, no VNNI) where qemu-x86_64 is installed."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quantwise.export import portable

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

AVX2_CPU = "EPYC-Milan"  # Zen 3: AVX2 and FMA, no AVX-512, no VNNI


def test_reference_saturates_full_range_weights_and_not_weights_within_64():
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, size=(64, 16)).astype(np.int8)
    a = np.where(w[:, :1].T > 0, 255, 0).astype(np.uint8)  # the worst case for column 0
    exact = a.astype(np.int64) @ w.astype(np.int64)
    assert (portable.saturating_u8s8_matmul(a, w) != exact).any()
    small = np.clip(w, -portable.SAFE_INT8_WEIGHT, portable.SAFE_INT8_WEIGHT)
    for _ in range(20):  # any uint8 activations: no pair of products leaves int16
        a = rng.integers(0, 256, size=(8, 64)).astype(np.uint8)
        a[0] = 255
        assert np.array_equal(portable.saturating_u8s8_matmul(a, small), a.astype(np.int64) @ small.astype(np.int64))


def _linear_graph(w: np.ndarray) -> "onnx.ModelProto":
    """uint8 activations (zero-point 128) x int8 weights in MatMulIntegerToFloat, and the same weight
    through DequantizeLinear -> MatMul (the QDQ form ORT fuses): two products at risk."""
    k, n = w.shape
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.01, np.float32), "sa"),
             numpy_helper.from_array(np.full(n, 0.02, np.float32), "sw"), numpy_helper.from_array(np.array(128, np.uint8), "za"),
             numpy_helper.from_array(np.zeros(n, np.int8), "zw")]
    nodes = [
        helper.make_node("MatMulIntegerToFloat", ["a", "w", "sa", "sw", "za", "zw"], ["y_int"], domain="com.microsoft"),
        helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["a_float"]),
        helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["w_float"], axis=1),
        helper.make_node("MatMul", ["a_float", "w_float"], ["y_qdq"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, k])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, [None, n]) for y in ("y_int", "y_qdq")], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def _worst_case(w: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(4, w.shape[0])).astype(np.uint8)
    a[0] = np.where(w[:, 0] > 0, 255, 0)
    return a


def _exact(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    return ((a.astype(np.float64) - 128) * 0.01) @ (w.astype(np.float64) * 0.02)


def _weights() -> np.ndarray:
    return np.random.default_rng(0).integers(-127, 128, size=(256, 32)).astype(np.int8)


def test_make_portable_rewrites_every_product_at_risk_and_keeps_the_values():
    w = _weights()
    model = _linear_graph(w)
    assert len(portable.hazards(model)) == 2
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert portable.make_portable(model) == 1  # one weight, read by both products
    assert portable.hazards(model) == []
    assert portable.count_by_dtype(model) == {("uint8", "uint8"): 2}
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = _worst_case(w)
    for old, new in zip(before.run(None, {"a": a}), after.run(None, {"a": a})):
        np.testing.assert_array_equal(old, new)  # the same dequantized weights: bit for bit on this CPU
        np.testing.assert_allclose(new, _exact(a, w), rtol=1e-5, atol=1e-5)


def test_weights_within_64_and_depthwise_convs_are_left_as_they_are():
    model = _linear_graph(np.clip(_weights(), -64, 64).astype(np.int8))
    assert portable.hazards(model) == [] and portable.make_portable(model) == 0
    c = 8
    inits = [numpy_helper.from_array(np.full((c, 1, 3, 3), 127, np.int8), "w"), numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.uint8), "za"), numpy_helper.from_array(np.zeros(c, np.int8), "zw"),
             numpy_helper.from_array(np.full(c, 0.1, np.float32), "sw")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "za"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wf"], axis=0),
             helper.make_node("Conv", ["xf", "wf"], ["y"], group=c)]
    graph = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, c, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    depthwise = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert [p.depthwise for p in portable.integer_products(depthwise)] == [True]
    assert portable.hazards(depthwise) == []


# --- ONNX Runtime's own kernels on an emulated AVX2-only CPU --------------------------------------

def _qemu_or_skip() -> str:
    if platform.machine() != "x86_64":
        pytest.skip("the AVX2 emulation runs this x86_64 Python; on another architecture ONNX Runtime's own CPU kernels apply")
    exe = shutil.which("qemu-x86_64")
    if exe:
        return exe
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("qemu-x86_64 is not installed on this CI machine: scripts/setup.sh (run as root) installs qemu-user")
    pytest.skip("qemu-x86_64 is not installed (scripts/setup.sh installs qemu-user when run as root)")


RUNNER = """
import sys, numpy as np, onnxruntime as ort
options = ort.SessionOptions(); options.intra_op_num_threads = 1
for model, inputs, out in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    data = np.load(inputs)
    feeds = {i.name: data[f"arr_{k}"] for k, i in enumerate(session.get_inputs())}
    np.savez(out, *session.run(None, feeds))
"""


def _run_on(cpu: str | None, jobs: list[tuple[Path, tuple[np.ndarray, ...]]], tmp_path: Path) -> list[list[np.ndarray]]:
    """Each (model, inputs) run by ONNX Runtime in a fresh process: natively, or under QEMU as ``cpu``."""
    script = tmp_path / "run_onnx.py"
    script.write_text(RUNNER)
    args, outs = [], []
    for k, (model, inputs) in enumerate(jobs):
        np.savez(tmp_path / f"in{k}.npz", *inputs)
        outs.append(tmp_path / f"out{k}_{cpu or 'native'}.npz")
        args += [str(model), str(tmp_path / f"in{k}.npz"), str(outs[-1])]
    command = [sys.executable, str(script), *args]
    if cpu is not None:
        command = [_qemu_or_skip(), "-cpu", cpu, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return [[f[k] for k in sorted(f.files, key=lambda n: int(n.split("_")[1]))] for f in (np.load(o) for o in outs)]


@pytest.mark.slow
def test_on_an_avx2_cpu_the_rewritten_graph_is_exact_where_the_original_saturates(tmp_path):
    _qemu_or_skip()
    w = _weights()
    original = _linear_graph(w)
    rewritten = _linear_graph(w)
    portable.make_portable(rewritten)
    onnx.save(original, tmp_path / "original.onnx")
    onnx.save(rewritten, tmp_path / "portable.onnx")
    a = (_worst_case(w),)
    avx2 = _run_on(AVX2_CPU, [(tmp_path / "original.onnx", a), (tmp_path / "portable.onnx", a)], tmp_path)
    exact = _exact(a[0], w)
    # the emulated CPU really runs the saturating kernel: the original graph is wrong there ...
    assert np.abs(avx2[0][0] - exact).max() > 1.0
    # ... and the rewritten one is exact there, in both the integer op and the QDQ form
    for y in avx2[1]:
        np.testing.assert_allclose(y, exact, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_exported_zoo_models_compute_the_same_on_avx2_as_here(mnist, tmp_path):
    """mnist-cnn's ONNX exports (torchao dynamic int8 and PT2E static int8) give the same outputs on an
    emulated AVX2-only CPU as on this one."""
    from quantwise import api
    from quantwise.export import export_artifact

    _qemu_or_skip()
    jobs = []
    inputs = (mnist.evaluation.example(64)[0].numpy(),)
    for recipe in ("dynamic", "static-pt2e"):
        artifact = api.save(api.quantize(mnist, recipe), tmp_path / recipe)
        path = export_artifact(artifact, "onnx", bundle=mnist, samples=64).path
        assert portable.hazards(onnx.load(str(path))) == []
        jobs.append((path, inputs))
    here = _run_on(None, jobs, tmp_path)
    avx2 = _run_on(AVX2_CPU, jobs, tmp_path)
    for (y_here,), (y_avx2,) in zip(here, avx2):
        np.testing.assert_allclose(y_avx2, y_here, rtol=1e-5, atol=1e-4)
        assert (y_avx2.argmax(1) == y_here.argmax(1)).all()


def _matmul_nbits(bits: int, level: int, k: int = 576, n: int = 64, block: int = 32) -> tuple["onnx.ModelProto", np.ndarray]:
    """One MatMulNBits (a language model's layer in the ONNX export) with extreme codes; and its weight."""
    rng = np.random.default_rng(bits + level)
    q = np.where(rng.random((n, k)) < 0.5, 2**bits - 1, 0).astype(np.uint8)
    zero = np.full((n, k // block), 2 ** (bits - 1), np.uint8)
    if bits == 4:
        packed, zero_packed = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(n, k // block, block // 2), zero[:, 0::2] | (zero[:, 1::2] << 4)
    else:
        packed, zero_packed = q.reshape(n, k // block, block), zero
    inits = [numpy_helper.from_array(packed, "w"), numpy_helper.from_array(np.full(n * k // block, 0.01, np.float32), "s"),
             numpy_helper.from_array(zero_packed.reshape(-1), "z")]
    node = helper.make_node("MatMulNBits", ["x", "w", "s", "z"], ["y"], domain="com.microsoft", K=k, N=n, bits=bits, block_size=block, accuracy_level=level)
    graph = helper.make_graph([node], "nbits", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return model, (q.astype(np.float64) - zero.repeat(block, 1)) * 0.01


@pytest.mark.slow
def test_on_an_avx2_cpu_language_model_layers_are_exact_at_every_accuracy_level(tmp_path):
    """MatMulNBits with 4- and 8-bit codes at accuracy level 0 (float activations) and 4 (int8
    activations, the export's output layer): no saturation on AVX2 with the most extreme codes."""
    _qemu_or_skip()
    jobs, weights = [], []
    for bits in (4, 8):
        for level in (0, 4):
            model, w = _matmul_nbits(bits, level)
            onnx.save(model, tmp_path / f"nbits{bits}_{level}.onnx")
            x = np.where(w[0] > 0, 3.0, -3.0).astype(np.float32)[None]  # every product of row 0 at its largest
            jobs.append((tmp_path / f"nbits{bits}_{level}.onnx", (x,)))
            weights.append(w)
    for ((_, (x,)), w, (y,)) in zip(jobs, weights, _run_on(AVX2_CPU, jobs, tmp_path)):
        exact = x.astype(np.float64) @ w.T
        assert np.abs(y - exact).max() <= 1e-5 * np.abs(exact).max()


def test_vnni_only_keeps_the_fast_layout_says_so_and_is_refused_where_it_would_be_wrong(mnist, tmp_path, monkeypatch):
    from quantwise import api
    from quantwise.errors import QuantwiseError
    from quantwise.export import exporter, export_artifact

    artifact = api.save(api.quantize(mnist, "dynamic"), tmp_path / "dynamic")
    monkeypatch.setattr(exporter, "has_vnni", lambda: True)
    result = export_artifact(artifact, "onnx", bundle=mnist, samples=64, vnni_only=True, out=tmp_path / "fast.onnx")
    assert not result.portable and result.to_dict()["portable"] is False
    assert len(portable.hazards(onnx.load(str(result.path)))) == 2
    monkeypatch.setattr(exporter, "has_vnni", lambda: False)
    with pytest.raises(QuantwiseError, match="no VNNI"):
        export_artifact(artifact, "onnx", bundle=mnist, samples=64, vnni_only=True, out=tmp_path / "fast2.onnx")
    assert not (tmp_path / "fast2.onnx").exists()


@pytest.mark.slow
def test_on_an_avx2_cpu_depthwise_int8_convolutions_do_not_saturate(tmp_path):
    """Why make_portable leaves depthwise convolutions int8: ORT's depthwise kernels widen before
    multiplying. Every input 255 and every weight 127 (a pair of products is 64770, twice int16's
    range) gives the exact sum on the emulated AVX2 CPU."""
    _qemu_or_skip()
    c, k = 16, 3
    inits = [numpy_helper.from_array(np.full((c, 1, k, k), 127, np.int8), "w"), numpy_helper.from_array(np.array(1.0, np.float32), "xs"),
             numpy_helper.from_array(np.array(0, np.uint8), "xz"), numpy_helper.from_array(np.full(c, 1.0, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(c, np.int8), "wz"), numpy_helper.from_array(np.array(2000.0, np.float32), "ys"),
             numpy_helper.from_array(np.array(0, np.uint8), "yz")]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], group=c)
    graph = helper.make_graph([node], "dw", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, c, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, c, 4, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "dw.onnx")
    assert [p.depthwise for p in portable.integer_products(onnx.load(str(tmp_path / "dw.onnx")))] == [True]
    x = np.full((1, c, 6, 6), 255, np.uint8)
    (y,), = _run_on(AVX2_CPU, [(tmp_path / "dw.onnx", (x,))], tmp_path)
    assert (y == round(255 * 127 * k * k / 2000)).all()  # 146: the exact sum, requantized (saturated pairs would give 82)
