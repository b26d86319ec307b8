"""ONNX export of the ``dynamic`` recipe: integer ops in the graph, int8 weights in the file,
parity with the torchao model on real models (mnist-cnn, minilm-l6), refusal for legacy LSTM."""
from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

from helpers import error_line, invoke


def _graph(path):
    import onnx

    model = onnx.load(str(path))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    inits = {i.name: i for i in model.graph.initializer}
    return ops, inits


def _float_param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * 4 for p in model.parameters())


@pytest.mark.parametrize("bias", [True, False])
def test_translation_matches_torchao_exactly(tmp_path, bias):
    """The custom op's reference and the ONNX graph compute torchao's int8 dynamic Linear bit for bit
    (same per-token scales, same reciprocal rounding), with and without bias."""
    import onnxruntime as ort
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    from quantwise.export import onnx_dynamic

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(96, 48, bias=bias))
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    x = torch.randn(3, 17, 96) * torch.logspace(-2, 1, 17).unsqueeze(-1)  # tokens of very different ranges
    with torch.no_grad():
        expected = model(x)
        prepared = onnx_dynamic.prepare(model)
        assert torch.equal(prepared(x), expected)
    onnx_dynamic.write(model, (x,), tmp_path / "linear.onnx", dynamic_batch=True)
    session = ort.InferenceSession(str(tmp_path / "linear.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    assert (got - expected).abs().max().item() < 1e-5 * expected.abs().max().item()


def test_mnist_dynamic_exports_integer_graph(mnist, tmp_path):
    from quantwise import api
    from quantwise.export import export_artifact

    artifact = api.save(api.quantize(mnist, "dynamic"), tmp_path / "dynamic")
    result = export_artifact(artifact, "onnx", bundle=mnist, samples=512)
    p = result.parity
    assert p.passed and p.vs_quantized.agreement == 1.0
    assert p.vs_quantized.max_abs < 1e-3  # same numerics as torchao, not just the same argmax
    assert p.vs_float.agreement >= 0.99
    ops, inits = _graph(result.path)
    assert ops["MatMulIntegerToFloat"] == 2 and ops["QuantizeLinear"] == 2 and "Gemm" not in ops
    # both Linear weights, (in, out), as uint8 codes + 128 so that no CPU's integer GEMM saturates them
    uint8 = [i for i in inits.values() if i.data_type == 2 and len(i.dims) == 2]  # TensorProto.UINT8
    assert sorted(tuple(i.dims) for i in uint8) == [(128, 10), (3136, 128)]
    assert not [i for i in inits.values() if i.data_type == 3 and len(i.dims) == 2]  # no int8 weight left
    assert not any(tuple(i.dims) in ((128, 3136), (3136, 128)) for i in inits.values() if i.data_type == 1)  # no float copy
    linear_bytes = 4 * (3136 * 128 + 128 * 10)
    assert result.path.stat().st_size < _float_param_bytes(mnist.model) - 0.7 * linear_bytes


@pytest.fixture(scope="module")
def minilm_artifact(tmp_path_factory):
    from quantwise import api

    bundle = api.load_model("minilm-l6", n_calibration=8, n_evaluation=16)
    return bundle, api.save(api.quantize(bundle, "dynamic"), tmp_path_factory.mktemp("minilm") / "dynamic")


def test_minilm_dynamic_exports_with_parity(minilm_artifact):
    from quantwise.export import export_artifact
    from quantwise.export.parity import NOISE_MARGIN

    bundle, artifact = minilm_artifact
    result = export_artifact(artifact, "onnx", bundle=bundle, samples=16)
    p = result.parity
    assert p.passed, p
    # as faithful to the float encoder as the PyTorch int8 model (torchao per-token int8 reaches ~0.997)
    assert p.vs_float.cosine >= p.quantized_vs_float.cosine - NOISE_MARGIN
    assert p.quantized_vs_float.cosine > 0.99 and p.vs_quantized.cosine > 0.99
    ops, inits = _graph(result.path)
    assert ops["MatMulIntegerToFloat"] == 36  # 6 layers x (q, k, v, attention out, FFN in, FFN out)
    assert "MatMul" not in ops or ops["MatMul"] <= 12  # only the attention score/context products stay float
    table = inits["embeddings.word_embeddings.qdata"]
    assert table.data_type == 3 and tuple(table.dims) == (30522, 384)
    assert result.path.stat().st_size < 0.3 * _float_param_bytes(bundle.model)  # 90.9 MB float -> ~24 MB


def test_legacy_lstm_is_refused_in_one_line(capsys, speaker, tmp_path):
    from quantwise import api

    artifact = api.save(api.quantize(speaker, "dynamic"), tmp_path / "dynamic")
    before = sorted(p.name for p in artifact.iterdir())
    code, _, err = invoke(capsys, "export", str(artifact), "--to", "onnx")
    assert code == 2
    line = error_line(err)
    assert "LSTM/GRU quantized by the legacy dynamic kernels" in line and "dynamic:recurrent=false" in line
    assert sorted(p.name for p in artifact.iterdir()) == before


def test_float_lstm_with_int8_linear_exports(speaker, tmp_path):
    """The fix the refusal names works: int8 Linear, float LSTM (an ONNX LSTM op)."""
    from quantwise import api
    from quantwise.export import export_artifact

    artifact = api.save(api.quantize(speaker, "dynamic:recurrent=false"), tmp_path / "linear-only")
    result = export_artifact(artifact, "onnx", bundle=speaker, samples=16)
    assert result.parity.passed and result.parity.vs_quantized.cosine > 0.9999
    ops, _ = _graph(result.path)
    assert ops["LSTM"] == 3 and ops["MatMulIntegerToFloat"] == 1


def test_parity_within_noise_rule():
    """Embeddings: an export as close to float as the int8 model passes even below 0.999 to it;
    one farther from float (a wrong translation) fails."""
    from quantwise.export.parity import Agreement, Parity

    def parity(vs_q: float, vs_f: float, q_vs_f: float) -> Parity:
        return Parity(64, Agreement(0.02, vs_q, None), Agreement(0.02, vs_f, None), "", Agreement(0.02, q_vs_f, None))

    assert parity(0.9978, 0.9970, 0.9969).passed  # minilm: chaotic, equally faithful
    assert not parity(0.9978, 0.9950, 0.9969).passed  # farther from float than the int8 model
    assert not parity(0.9900, 0.9970, 0.9969).passed  # beyond twice the int8 model's own noise
    assert parity(0.9995, 0.9900, 0.9969).passed  # the plain tolerance still applies
    assert not parity(0.9949, 0.3076, 0.3072).passed  # minilm static-xnnpack: a broken int8 model makes "its noise" vacuous


def test_classifier_parity_accepts_near_tie_flips_only():
    """efficientnet-lite0 (measured): ORT flips 3 of 256 near-tie crops of the PyTorch int8 model,
    each by less than the typical logit difference (0.16); a translation error flips confident ones."""
    import torch

    from quantwise.export.parity import Agreement, Parity, unexplained_flips

    q = torch.tensor([[2.00, 1.99, 0.0], [3.0, 0.0, 1.0], [0.0, 1.0, 5.0], [1.0, 0.0, 0.5]])
    near = q + torch.tensor([[-0.02, 0.02, 0.0], [0.01, 0.0, 0.0], [0.0, 0.0, 0.01], [0.0, 0.01, 0.0]])  # row 0 flips by 0.01
    wrong = q.clone()
    wrong[1] = torch.tensor([0.0, 3.0, 1.0])  # a confident sample flips
    assert unexplained_flips(q, near) == 0 and unexplained_flips(q, wrong) == 1

    def parity(vs_q: Agreement, vs_f_agreement: float, flips: int) -> Parity:
        return Parity(256, vs_q, Agreement(1.0, 0.98, vs_f_agreement), "", Agreement(1.0, 0.98, 0.914), flips)

    assert parity(Agreement(0.2, 0.9994, 0.988), 0.922, 0).passed  # the measured ORT export
    assert not parity(Agreement(0.2, 0.9994, 0.988), 0.922, 1).passed  # one confident flip
    assert not parity(Agreement(0.2, 0.9950, 0.988), 0.922, 0).passed  # logits not the int8 model's
    assert not parity(Agreement(0.2, 0.9994, 0.988), 0.890, 0).passed  # farther from float
    assert parity(Agreement(0.2, 0.9000, 0.995), 0.5, 3).passed  # the plain tolerance still applies


def test_a_flip_by_exactly_the_typical_difference_is_a_near_tie():
    """ExecuTorch's int8 logits lie on a grid (efficientnet-lite0 static-xnnpack: scale 0.0563):
    measured, one flip had a gap of 3 codes, 0.16890907, against a typical difference of 3 codes
    computed elsewhere as 0.16890873. Equal codes are a near-tie; one code more is not."""
    import torch

    from quantwise.export.parity import unexplained_flips

    q = torch.tensor([[0.16890907, 0.0, -1.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    e = q.clone()
    e[0, :2] = torch.tensor([0.0, 0.16890907])  # flipped by the gap itself
    e[1:, 0] = 0.16890873  # the typical difference, 3 codes computed in other float bits
    assert unexplained_flips(q, e) == 0
    q[0, 0], e[0, 1] = 4 * 0.0563030, 4 * 0.0563030  # a gap of 4 codes, beyond the typical 3
    assert unexplained_flips(q, e) == 1
