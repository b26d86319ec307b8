"""The layer debugger on real models: names line up with the float model's modules across
fusion (FX), graph conversion (PT2E) and module swaps (dynamic LSTM); the numbers agree with
reference computations; a deliberately broken layer is found; the CLI prints and writes JSON."""
from __future__ import annotations

import json
import statistics

import pytest
import torch

from quantwise import api
from quantwise.config import QAT, StaticInt8
from quantwise.debug import DebugOptions, debug, debug_recipe
from quantwise.debug.float_side import parse_call
from quantwise.debug.stats import ActivationAccumulator, ErrorAccumulator, QuantRange, fake_quantize
from quantwise.evaluate.metrics import sqnr_db
from quantwise.report.debug_table import debug_table
from tests.helpers import error_line, invoke

MNIST_LAYERS = ["features.0", "features.3", "classifier.0", "classifier.2"]


def _float_names(model: torch.nn.Module) -> set[str]:
    return {n for n, _ in model.named_modules() if n}


# ---- numeric primitives against reference implementations ----

def test_stats_match_reference_functions():
    g = torch.Generator().manual_seed(0)
    ref, noisy = torch.randn(4, 1000, generator=g), None
    noisy = ref + 0.01 * torch.randn(4, 1000, generator=g)
    acc = ErrorAccumulator()
    acc.add(ref[:2], noisy[:2])
    acc.add(ref[2:], noisy[2:])
    stats = acc.result()
    assert stats.sqnr_db == pytest.approx(sqnr_db(ref, noisy), abs=1e-3)
    assert stats.cosine == pytest.approx(float(torch.nn.functional.cosine_similarity(ref.flatten(), noisy.flatten(), dim=0)), abs=1e-6)
    assert stats.max_abs_error == pytest.approx(float((ref - noisy).abs().max()))
    # fake quantization equals torch's own per-tensor fake-quant
    x = 3 * torch.randn(10000, generator=g)
    assert torch.equal(fake_quantize(x, 0.02, 128, 0, 255), torch.fake_quantize_per_tensor_affine(x, 0.02, 128, 0, 255))


def test_clipping_fraction_and_share():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.25, 0.5, 3.0])  # two values outside [-1, 1]
    grid = QuantRange(scale=2 / 255, zero_point=128, qmin=0, qmax=255)
    acc = ActivationAccumulator()
    acc.add(x, grid)
    stats = acc.result()
    assert stats.clip_fraction == pytest.approx(2 / 6)
    assert stats.range_lo == pytest.approx(-128 * 2 / 255) and stats.range_hi == pytest.approx(127 * 2 / 255)
    assert stats.clip_error_share > 0.99  # clipping 3.0 to ~1 dwarfs rounding inside the range


# ---- real models ----

def test_fx_rows_are_the_float_modules_and_match_the_model_output(mnist):
    report = debug_recipe(mnist, "static-fx", DebugOptions(samples=64, batch_size=32))
    assert [r.name for r in report.layers] == MNIST_LAYERS
    assert report.layers[0].fused == ["features.0", "features.1"]  # conv + ReLU fused into one quantized module
    assert report.layers[0].quantized_as.endswith("ConvReLU2d")
    # the first layer sees the same quantized input either way: isolated == propagated
    assert report.layers[0].isolated.sqnr_db == pytest.approx(report.layers[0].propagated.sqnr_db, abs=1e-6)
    # the last layer's propagated output is the model output (dequantized logits)
    assert report.layers[-1].propagated.sqnr_db == pytest.approx(report.output["sqnr_db"], abs=1e-3)
    for row in report.layers:
        assert row.isolated.sqnr_db > 25  # int8 conv/linear with per-channel weights
        assert row.weights.sqnr_db > 30 and row.inputs.range_lo is not None
    assert report.layers[-1].propagated.sqnr_db <= report.layers[-1].isolated.sqnr_db
    assert statistics.mean(r.propagated.sqnr_db for r in report.layers) <= statistics.mean(r.isolated.sqnr_db for r in report.layers)
    assert report.output["flip_rate"] <= 0.02


def test_pt2e_graph_nodes_are_named_after_float_modules(mnist):
    report = debug_recipe(mnist, StaticInt8(path="pt2e", observer="minmax"), DebugOptions(samples=64, batch_size=32))
    assert [r.name for r in report.layers] == MNIST_LAYERS
    assert report.layers[2].fused == ["classifier.0", "classifier.1"]
    assert report.layers[-1].propagated.sqnr_db == pytest.approx(report.output["sqnr_db"], abs=1e-3)
    assert min(r.isolated.sqnr_db for r in report.layers) > 25
    h = report.histogram
    assert h.layer == min(report.layers, key=lambda r: r.propagated.sqnr_db).name
    assert h.weights.numel() > 0 and h.activations.numel() > 0 and h.activation_range[0] < h.activation_range[1]


def test_a_tampered_layer_is_ranked_worst(mnist):
    quantized = api.quantize(mnist, "static-fx").quantized
    conv = quantized.module.get_submodule("features.3")
    weight = conv.weight()
    coarse = torch.quantize_per_channel(weight.dequantize(), weight.q_per_channel_scales() * 24, weight.q_per_channel_zero_points(), 0, torch.qint8)
    conv.set_weight_bias(coarse, conv.bias())  # about 3-bit weights in this one layer
    report = debug(mnist, quantized, DebugOptions(samples=32, batch_size=32))
    assert report.diagnosis.worst_layer == "features.3"
    assert report.diagnosis.cause == "weight rounding"
    assert report.layer("features.3").weights.sqnr_db < min(r.weights.sqnr_db for r in report.layers if r.name != "features.3")


def test_qat_rows_line_up_like_fx(mnist):
    report = debug_recipe(mnist, QAT(steps=10, batch_size=32), DebugOptions(samples=32, batch_size=32))
    assert [r.name for r in report.layers] == MNIST_LAYERS
    assert report.layers[-1].propagated.sqnr_db == pytest.approx(report.output["sqnr_db"], abs=1e-3)


def test_dynamic_lstm_is_found_as_the_culprit(speaker):
    report = debug_recipe(speaker, "dynamic", DebugOptions(samples=8, layer="lstm"))
    assert [r.name for r in report.layers] == ["lstm", "linear"]
    assert report.layers[0].kind == "lstm" and "LSTM" in report.layers[0].quantized_as
    # the zoo measured 0.66-0.74 cosine for naive dynamic int8 of this LSTM; the debugger must name it
    assert report.output["cosine"] < 0.9
    assert report.diagnosis.worst_layer == "lstm"
    assert report.layer("lstm").isolated.sqnr_db < report.layer("linear").isolated.sqnr_db
    h = report.histogram
    assert h.layer == "lstm" and h.activation_range is None and h.weights.numel() == 100_000


def test_efficientnet_pt2e_names_fold_batch_norm_and_activation():
    bundle = api.load_model("efficientnet-lite0", n_calibration=4, n_evaluation=1)
    report = debug_recipe(bundle, StaticInt8(path="pt2e", observer="minmax"), DebugOptions(samples=1, batch_size=1))
    floats = _float_names(bundle.model)
    assert len(report.layers) == 50
    assert all(parse_call(part)[0] in floats for r in report.layers for part in r.fused)
    stem = report.layer("_conv_stem")
    assert stem.fused == ["_conv_stem", "_bn0", "_swish"] and stem.index == 0
    assert report.layer("_blocks.1._depthwise_conv").fused[-1] == "_blocks.1._swish@1"  # the shared ReLU6's second call
    # BatchNorm folded into the float weights the same way the quantizer did: weight SQNR stays that of int8
    assert min(r.weights.sqnr_db for r in report.layers) > 15
    assert statistics.median(r.isolated.sqnr_db for r in report.layers) > 25


def _tiny_conv_bn_bundle():
    """A conv + BatchNorm (non-trivial statistics, folded by the quantizer) + ReLU, then a Linear."""
    from quantwise.data.base import TensorSet
    from quantwise.models.base import ModelBundle
    from tests.methods.test_static_adaround import _images

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.2, 3.0)
        model[1].weight.uniform_(0.5, 2.0)
    return ModelBundle("tiny-conv-bn", model, TensorSet((_images(48),)), TensorSet((_images(16),)), "classification", "kl", 0.05)


def test_learned_rounding_debug_shows_nearest_rounding_on_the_same_grid():
    """The "if nearest" column re-rounds each float weight (BatchNorm folded) on the layer's own grid: on a
    model whose codes ARE nearest rounding it reproduces the isolated error exactly; on learned codes it differs."""
    import dataclasses

    bundle = _tiny_conv_bn_bundle()
    nearest = api.quantize(bundle, "static:path=pt2e,weight_bits=4").quantized
    posing = dataclasses.replace(nearest, recipe=dataclasses.replace(nearest.recipe, rounding="adaround"))
    report = debug(bundle, posing, DebugOptions(samples=16))
    assert len(report.layers) == 2
    for r in report.layers:
        assert r.nearest is not None and r.nearest.sqnr_db == pytest.approx(r.isolated.sqnr_db, abs=1e-4), r.name
    assert all(r.nearest is None for r in debug(bundle, nearest, DebugOptions(samples=16)).layers)  # nothing learned: no column
    learned = api.quantize(bundle, "static:path=pt2e,weight_bits=4,rounding=adaround").quantized
    rows = debug(bundle, learned, DebugOptions(samples=16)).layers
    assert all(r.nearest is not None for r in rows)
    assert any(abs(r.nearest.sqnr_db - r.isolated.sqnr_db) > 0.05 for r in rows)


# ---- CLI ----

def test_cli_table_and_json(capsys, tmp_path):
    path = tmp_path / "debug.json"
    code, out, err = invoke(capsys, "-q", "debug", "mnist-cnn", "--recipe", "static-pt2e", "--samples", "16",
                            "--n-calibration", "64", "--json", str(path))
    assert code == 0, err
    assert out.startswith("diagnosis: largest own error:")
    for name in MNIST_LAYERS:
        assert name in out
    data = json.loads(path.read_text())
    assert [r["name"] for r in data["layers"]] == MNIST_LAYERS
    assert data["output"]["flip_rate"] >= 0 and data["samples"] == 16
    assert len(data["histogram"]["weights"]) > 0 and data["diagnosis"]["worst_layer"] in MNIST_LAYERS


@pytest.mark.parametrize("args, message", [
    (["--layer", "features.9"], "not a module of the float model"),
    (["--layer", "features.2"], "not a quantized layer"),  # a MaxPool: exists, but is not quantized
    (["--recipe", "int4-rtn"], "does not handle"),
])
def test_cli_bad_input_is_one_line(capsys, tmp_path, args, message):
    base = ["-q", "debug", "mnist-cnn", "--samples", "8", "--n-calibration", "32", "--json", str(tmp_path / "x.json")]
    code, _, err = invoke(capsys, *base, *args)
    assert code == 2
    assert message in error_line(err)
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow  # the slowest test here: SmolLM2 held twice (float reference + quantized), 211 Linear layers
def test_language_model_linears_and_perplexity():
    from quantwise.debug.language_model import debug_language_model
    from quantwise.llm.model import load_language_model

    report = debug_language_model("smollm2-135m", "weight-only:bits=8,group_size=None,activations=float32", DebugOptions(samples=1), context=64)
    linears = {n for n, m in load_language_model("smollm2-135m").model.named_modules() if isinstance(m, torch.nn.Linear)}
    # 30 blocks x 7 projections + lm_head, named as in the float model, and the tied token table, which reads lm_head's int8 codes
    assert {r.name for r in report.layers} == linears | {"model.embed_tokens"}
    assert report.layers[-1].name == "lm_head"
    # the output layer's propagated output is the logits: same SQNR as measured at the output
    assert report.layers[-1].propagated.sqnr_db == pytest.approx(report.output["sqnr_db"], abs=1e-3)
    assert statistics.median(r.isolated.sqnr_db for r in report.layers) > 30  # int8 per-row weights, float activations
    assert report.output["delta_perplexity"] == pytest.approx(report.output["perplexity"] - report.output["perplexity_float"])


@pytest.mark.slow
def test_language_model_debug_shows_what_the_algorithm_gained_over_nearest_rounding():
    """HQQ chooses its codes (optimised zero-points): each decoder Linear also gets the isolated error
    it would have with round-to-nearest, and HQQ's is lower on most layers (measured per layer on
    held-out inputs: 0.6-0.7x RTN's output MSE, except block 0's o_proj)."""
    from quantwise.debug.language_model import debug_language_model

    report = debug_language_model("smollm2-135m", "weight-only:algorithm=hqq,activations=float32", DebugOptions(samples=1), context=64)
    blocks = [r for r in report.layers if r.name.startswith("model.layers.")]
    assert len(blocks) == 210 and all(r.nearest is not None and r.isolated is not None for r in blocks)
    assert all(r.nearest is None for r in report.layers if not r.name.startswith("model.layers."))
    gains = [r.isolated.sqnr_db - r.nearest.sqnr_db for r in blocks]
    assert statistics.median(gains) > 1.0  # dB
    assert "if nearest dB" in [c.header for c in debug_table(report).columns]
