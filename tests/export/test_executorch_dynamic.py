"""dynamic-xnnpack: the transformer recipe for ExecuTorch, on the real sentence encoder (minilm-l6)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def minilm_xnnpack(tmp_path_factory):
    from quantwise import api

    bundle = api.load_model("minilm-l6", n_calibration=8, n_evaluation=16)
    # api.save reloads the artifact and checks it reproduces the quantized model's outputs
    return bundle, api.save(api.quantize(bundle, "dynamic-xnnpack"), tmp_path_factory.mktemp("minilm") / "dynamic-xnnpack")


def test_minilm_dynamic_xnnpack_exports_to_executorch_with_parity(minilm_xnnpack):
    from quantwise.export import export_artifact

    bundle, artifact = minilm_xnnpack
    result = export_artifact(artifact, "executorch", bundle=bundle, samples=16)
    p = result.parity
    assert p.passed, p
    # the PyTorch graph quantizes each layer input as one tensor, XNNPACK each row: measured on
    # 250 texts, the .pte is nearer float (cosine 0.9988) than the PyTorch int8 model (0.9924)
    assert p.quantized_vs_float.cosine > 0.99
    assert p.vs_float.cosine >= p.quantized_vs_float.cosine


def test_minilm_dynamic_xnnpack_to_onnx_is_refused_in_one_line(minilm_xnnpack):
    from quantwise.errors import QuantwiseError
    from quantwise.export import export_artifact

    bundle, artifact = minilm_xnnpack
    with pytest.raises(QuantwiseError, match="choose_qparams.*use the dynamic recipe for ONNX") as err:
        export_artifact(artifact, "onnx", bundle=bundle, samples=4)
    assert "\n" not in str(err.value)
    assert not (artifact / "model.onnx").exists()


def test_recurrent_model_is_refused_before_a_lowering_that_does_not_finish(tmp_path):
    """resemblyzer-lstm's ExecuTorch lowering ran 15 minutes (7.9 GB) without finishing: refuse at once."""
    import torch
    from torch import nn

    from quantwise.errors import QuantwiseError
    from quantwise.export.executorch_target import write

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, 8, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lstm(x)[0]

    x = torch.randn(1, 5, 4)
    graph = torch.export.export(Tiny().eval(), (x,)).module()
    with pytest.raises(QuantwiseError, match=r"cannot export this model to executorch.*aten\.lstm.*--to onnx"):
        write(graph, (x,), tmp_path / "m.pte", False)
    assert not (tmp_path / "m.pte").exists()
