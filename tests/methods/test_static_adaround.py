"""Learned rounding (AdaRound) in the static PT2E recipe: the codes are on nearest rounding's grid,
are exactly what the converted model, the artifact and the ONNX export hold, beat nearest rounding
on a layer's held-out output, and bad settings fail with one line. The real-model accuracy
(efficientnet-lite0) is measured by benchmarks/efficientnet_adaround.py, too slow for a test."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantwise.config import StaticInt8, parse_recipe
from quantwise.data.base import TensorSet
from quantwise.errors import QuantwiseError
from quantwise.methods import static_pt2e
from quantwise.methods.base import QuantData

ADAROUND = "static:path=pt2e,rounding=adaround,rounding_iterations=300"


class TinyNet(nn.Module):
    """Stem conv, depthwise 3x3, 1x1 projection, final Linear: the layer kinds of a MobileNet/EfficientNet."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 24, 1)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        x = self.act(self.dw(x))
        return self.fc(self.pw(x).mean((2, 3)))


def _images(n: int) -> torch.Tensor:
    """Smooth random images: neighbouring pixels correlate, as in photos (what AdaRound exploits)."""
    return F.interpolate(torch.randn(n, 3, 4, 4), size=16, mode="bilinear") + 0.05 * torch.randn(n, 3, 16, 16)


def _tiny(seed: int = 0) -> tuple[nn.Module, TensorSet]:
    torch.manual_seed(seed)
    model = TinyNet().eval()
    return model, TensorSet((_images(48),), description="random smooth images")


def _int8_weights(module: nn.Module) -> list[torch.Tensor]:
    """The int8 weight tensors of a converted PT2E model's conv/linear layers, in graph order."""
    out = []
    for node in module.graph.nodes:
        if node.op == "call_function" and "dequantize_per_channel" in str(node.target):
            attr = node.args[0]
            out.append(getattr(module, attr.target))
    return out


def _scales(module: nn.Module) -> list[torch.Tensor]:
    return [getattr(module, n.args[1].target) for n in module.graph.nodes
            if n.op == "call_function" and "dequantize_per_channel" in str(n.target)]


@pytest.fixture(scope="module")
def tiny_pair():
    model, data = _tiny()
    calls = []

    def progress(description, items, total):
        calls.append((description, total))
        return items

    nearest = static_pt2e.quantize(copy.deepcopy(model), parse_recipe("static:path=pt2e"), QuantData(data))
    learned = static_pt2e.quantize(copy.deepcopy(model), parse_recipe(ADAROUND), QuantData(data, progress=progress))
    return model, data, nearest, learned, calls


def test_learned_codes_are_the_converted_models_weights_on_nearests_grid(tiny_pair):
    _, _, nearest, learned, calls = tiny_pair
    keys = ["stem.weight", "dw.weight", "pw.weight", "fc.weight"]
    codes = [learned.tensors[k + static_pt2e.WEIGHT_SUFFIX] for k in keys]
    assert set(learned.meta["rounding"]["mse_ratio"]) == set(keys)  # depthwise, 1x1 and the Linear all learned
    # exactly the learned codes end up in the converted model
    converted = _int8_weights(learned.module)
    assert len(converted) == 4 and all(torch.equal(a, b) for a, b in zip(converted, codes))
    # same grid as nearest rounding (same scales), codes one step away at most, and not all equal
    assert all(torch.equal(a, b) for a, b in zip(_scales(learned.module), _scales(nearest.module)))
    rtn = _int8_weights(nearest.module)
    assert all(int((a.int() - b.int()).abs().max()) <= 1 for a, b in zip(codes, rtn))
    assert any(not torch.equal(a, b) for a, b in zip(codes, rtn))
    assert all(torch.equal(nearest.tensors[k], learned.tensors[k]) for k in nearest.tensors if not k.endswith(".int8"))
    # progress per layer, and the method's record says what happened
    assert ("learning rounding (adaround)", 4) in calls
    assert learned.meta["rounding"]["method"] == "adaround" and learned.meta["rounding"]["layers"] == 4


def test_adaround_lowers_a_layers_heldout_output_error(tiny_pair):
    model, _, nearest, learned, _ = tiny_pair
    torch.manual_seed(1)
    x = _images(64)  # not the calibration images
    scale = _scales(learned.module)[0].reshape(-1, 1, 1, 1)
    with torch.no_grad():
        want = F.relu6(model.stem(x))

        def error(codes: torch.Tensor) -> float:
            w = codes.float() * scale
            return float((F.relu6(F.conv2d(x, w, model.stem.bias, 2, 1)) - want).square().mean())

        learned_err, nearest_err = error(_int8_weights(learned.module)[0]), error(_int8_weights(nearest.module)[0])
    assert learned_err < 0.8 * nearest_err


def test_deterministic_under_the_seed():
    model, data = _tiny()
    recipe = parse_recipe(ADAROUND.replace("300", "100"))
    a = static_pt2e.quantize(copy.deepcopy(model), recipe, QuantData(data)).tensors
    b = static_pt2e.quantize(copy.deepcopy(model), recipe, QuantData(data)).tensors
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_codes_survive_artifact_save_load_and_onnx_export(mnist, tmp_path):
    pytest.importorskip("onnxruntime")
    from quantwise import api
    from quantwise.export import export_artifact

    result = api.quantize(mnist, ADAROUND)
    codes = {k: v for k, v in result.quantized.tensors.items() if k.endswith(".int8")}
    assert len(result.quantized.meta["rounding"]["mse_ratio"]) == 4
    path = api.save(result, tmp_path / "art")  # verifies a bit-identical reload
    loaded = api.load(path, arch=api.architecture(mnist))
    assert all(torch.equal(loaded.quantized.tensors[k], v) for k, v in codes.items())
    assert all(torch.equal(a, b) for a, b in zip(_int8_weights(loaded.module), codes.values()))
    assert loaded.quantized.meta["rounding"]["layers"] == 4
    exported = export_artifact(path, "onnx", bundle=mnist, samples=256)
    assert exported.parity.passed
    weights = onnx_weight_codes(exported.path)
    assert len(weights) == 4
    for key, c in codes.items():
        assert any(w.shape == c.shape and torch.equal(w, c.long()) for w in weights), key


def onnx_weight_codes(path) -> list[torch.Tensor]:
    """The integer weights an ONNX file computes with, zero point removed (ORT's layout stores them as
    uint8 + 128; a Linear's as [in, out] for MatMulIntegerToFloat, with one zero point per column)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).astype("int64")) for t in graph.initializer}
    weights = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].dim() >= 2:
            q, zp = inits[node.input[0]], inits[node.input[2]]
            weights.append(q - zp.reshape(-1, *[1] * (q.dim() - 1)))
        elif node.op_type == "MatMulIntegerToFloat" and node.input[1] in inits:
            weights.append((inits[node.input[1]] - inits[node.input[5]].reshape(1, -1)).T)
    return weights


def test_bad_settings_fail_with_one_line():
    model, data = _tiny()
    few = QuantData(TensorSet((data.inputs[0][:8],)))
    with pytest.raises(QuantwiseError, match=r"adaround needs at least 16 calibration samples .* got 8") as err:
        static_pt2e.quantize(copy.deepcopy(model), parse_recipe(ADAROUND), few)
    assert "\n" not in str(err.value)
    for spec, message in (("static:path=fx,rounding=adaround", "pt2e path only"),
                          ("static:path=pt2e,rounding=upward", "unknown rounding 'upward'"),
                          ("static:path=pt2e,rounding=adaround,rounding_iterations=0", "rounding_iterations=0"),
                          ("static:path=pt2e,rounding=adaround,rounding_iterations=many", "not a whole number")):
        with pytest.raises(QuantwiseError, match=message) as err:
            parse_recipe(spec)
        assert "\n" not in str(err.value)
    assert StaticInt8().rounding == "nearest"


def test_non_finite_loss_keeps_nearest_rounding(monkeypatch):
    import quantwise.rounding as rounding

    real = rounding.adaround

    def broken(specs, *args, **kwargs):
        result = real(specs, *args, **kwargs)
        if specs[0].name == "dw.weight":
            result.mse = float("nan")
        return result

    monkeypatch.setattr(rounding, "adaround", broken)
    model, data = _tiny()
    nearest = static_pt2e.quantize(copy.deepcopy(model), parse_recipe("static:path=pt2e"), QuantData(data))
    learned = static_pt2e.quantize(copy.deepcopy(model), parse_recipe(ADAROUND), QuantData(data))
    assert torch.equal(learned.tensors["dw.weight.int8"], nearest.tensors["dw.weight.int8"])
    assert learned.meta["rounding"]["kept_nearest"] == {"dw.weight": "non-finite loss"}
    assert not torch.equal(learned.tensors["pw.weight.int8"], nearest.tensors["pw.weight.int8"])  # the others still learn


def test_uncovered_layer_types_are_named_and_left_at_nearest():
    pytest.importorskip("executorch")

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.fc = nn.Conv1d(4, 8, 3), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.c1(x).mean(-1))

    torch.manual_seed(0)
    data = QuantData(TensorSet((torch.randn(32, 4, 12),)))
    learned = static_pt2e.quantize(Mixed().eval(), parse_recipe("static:path=pt2e,backend=xnnpack,rounding=adaround,rounding_iterations=20"), data)
    assert learned.meta["rounding"]["uncovered"] == ["c1.weight (conv1d)"]


def test_a_weight_shared_by_two_layers_keeps_nearest_rounding():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(torch.relu(self.conv(x)))).mean((2, 3)))

    torch.manual_seed(0)
    data = QuantData(TensorSet((torch.randn(32, 4, 8, 8),)))
    learned = static_pt2e.quantize(Twice().eval(), parse_recipe(ADAROUND.replace("300", "50")), data)
    assert learned.meta["rounding"]["uncovered"] == ["conv.weight (shared by 2 layers)"]
    assert list(learned.meta["rounding"]["mse_ratio"]) == ["fc.weight"]
