"""Sensitivity on real models: the proxies are checked against the real recipe, the ranking
against what is known about the model, and the cache and CLI against their contracts."""
from __future__ import annotations

import json

import pytest
import torch

from quantwise import api
from quantwise.config import DynamicInt8, StaticInt8
from quantwise.errors import QuantwiseError
from quantwise.evaluate.metrics import outputs
from quantwise.mixed.sensitivity import SensitivityOptions, analyse
from quantwise.mixed.simulate import FakeQuantModel, SwapModel, simulator
from tests.report.browser import open_page
from tests.report.test_html import _Page
from tests.helpers import error_line, invoke, run


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTWISE_CACHE", str(tmp_path / "cache"))


def test_dynamic_proxy_is_exactly_the_keep_float_recipe(mnist):
    sim = simulator(mnist.model, DynamicInt8(), mnist.calibration)
    assert isinstance(sim, SwapModel) and sim.layers == ["classifier.0", "classifier.2"]
    probe = mnist.evaluation.example(64)
    swapped = run(sim.set_quantized(["classifier.0"]), probe)
    real = run(api.quantize(mnist, DynamicInt8(keep_float=("classifier.2",))).quantized.module, probe)
    assert torch.equal(swapped, real)
    assert torch.equal(run(sim.set_quantized([]), probe), run(mnist.model, probe))  # nothing quantized: float


def test_static_proxy_weights_are_the_converted_int8_weights(mnist):
    """Per-channel symmetric fake quantization gives the same weight values as the fx int8 model."""
    sim = FakeQuantModel(mnist.model, StaticInt8(), mnist.calibration)
    converted = api.quantize(mnist, StaticInt8()).quantized.module
    sim.set_quantized(sim.layers)
    for name in ("features.3", "classifier.2"):
        real = converted.get_submodule(name).weight().dequantize()
        assert torch.allclose(sim.module.get_submodule(name).weight, real, rtol=0, atol=1e-6)
    sim.set_quantized([])
    assert torch.equal(sim.module.get_submodule("features.3").weight, mnist.model.get_submodule("features.3").weight)


def test_lstm_is_the_sensitive_layer_and_the_report_is_cached():
    speaker = api.load_model("resemblyzer-lstm", n_calibration=16, n_evaluation=40)
    opts = SensitivityOptions(proxy_samples=8, top_k=1, controls=1)
    report = analyse(speaker, DynamicInt8(), opts)
    assert [l.name for l in report.layers] == ["lstm", "linear"]  # ZOO.md: the int8 LSTM is what loses cosine
    lstm = report.layer("lstm")
    assert report.quantized_metric < 0.8 and lstm.metric_float > 0.99  # measured on all evaluation samples
    assert report.improvement(lstm) > 0.2 and report.drop_alone(lstm) > 0.2
    assert report.confirmed == ["lstm", "linear"] and report.ranking()[0] == "lstm"
    assert set(report.seconds) == {"proxy", "confirm", "total"} and not report.cached
    again = analyse(speaker, DynamicInt8(), opts)
    assert again.cached and again.to_dict() | {"cached": False} == report.to_dict() | {"cached": False}
    json.dumps(report.to_dict())


def test_cli_prints_the_table_and_writes_json(capsys, tmp_path):
    path, html = tmp_path / "s.json", tmp_path / "s.html"
    code, out, _ = invoke(capsys, "sensitivity", "mnist-cnn", "--recipe", "static-fx", "--n-calibration", "32", "--n-evaluation", "128",
                          "--top-k", "2", "--controls", "2", "--proxy-samples", "16", "--json", str(path), "--html", str(html))
    assert code == 0 and "per-layer sensitivity" in out and "features.0" in out
    data = json.loads(path.read_text())
    page = open_page(html)
    assert page.console == [] and page.errors == [] and len(page.images) == 1 and page.images[0]["ok"]
    parsed = _Page()
    parsed.feed(html.read_text())
    assert json.loads(parsed.data) == data  # the page carries exactly the JSON numbers
    assert data["primary"] == "top1" and len(data["layers"]) == 4 and len(data["confirmed"]) == 4
    assert all(row["metric_float"] is not None for row in data["layers"])
    assert all(row["metric_alone"] is None for row in data["layers"])  # static: one direction unless --confirm-alone
    code, out, _ = invoke(capsys, "sensitivity", "mnist-cnn", "--recipe", "static-fx", "--n-calibration", "32", "--n-evaluation", "128",
                          "--top-k", "2", "--controls", "2", "--proxy-samples", "16")
    assert code == 0 and "from cache" in out


def test_qat_is_refused_with_the_alternative(capsys):
    code, _, err = invoke(capsys, "sensitivity", "mnist-cnn", "--recipe", "qat", "--n-calibration", "32", "--n-evaluation", "64")
    assert code == 2 and "static recipe" in error_line(err)
    with pytest.raises(QuantwiseError, match="top_k"):
        analyse(api.load_model("mnist-cnn", n_calibration=8, n_evaluation=8), StaticInt8(), SensitivityOptions(top_k=0))


def test_real_ranking_breaks_ties_by_whole_split_sqnr_not_by_the_proxy():
    from quantwise.mixed.sensitivity import LayerSensitivity, SensitivityReport, _rank_confirmed

    # (name, proxy rank, agreement with the layer float, whole-split SQNR with it float)
    spec = [("a", 1, 0.92, 13.0), ("b", 2, 0.92, 13.4), ("c", 3, 0.93, 12.9), ("d", 4, 0.91, 13.1),
            ("e", 5, 0.92, 13.2), ("f", 6, 0.91, 14.0), ("g", 7, 0.90, 15.0)]
    layers = [LayerSensitivity(n, "Conv2d", 10.0, 12.0, 1.0, rank, metric_float=m, sqnr_float=q) for n, rank, m, q in spec]
    report = SensitivityReport("m", {}, "static-pt2e", "agreement", True, "proxy", 8, False, "eval", 256, 1.0, 0.91, 12.0,
                               layers, [n for n, *_ in spec], None, None, {})
    _rank_confirmed(report)
    assert report.ranking() == ["c", "b", "e", "a", "f", "d", "g"]  # 0.92 x3 and 0.91 x2 ordered by SQNR
    assert report.tied == 5
    assert report.top5_agreement == 0.8  # f beats d on SQNR; breaking the tie by proxy rank would have said 100 %


def test_classifiers_judged_by_a_count_are_ranked_by_kl_over_the_whole_split(mnist):
    """Agreement / top-1 move in steps of one sample; the real ranking then orders by KL (lower is
    better), whatever the count says, and still reports the count."""
    from quantwise.mixed.sensitivity import LayerSensitivity, SensitivityReport, _rank_confirmed, ranking_metric

    assert mnist.primary == "top1" and ranking_metric(mnist) == "kl"
    # (name, proxy rank, agreement with the layer float, KL with it float)
    spec = [("a", 1, 0.93, 0.010), ("b", 2, 0.90, 0.012), ("c", 3, 0.92, 0.018), ("d", 4, 0.91, 0.015),
            ("e", 5, 0.92, 0.011), ("f", 6, 0.91, 0.013), ("g", 7, 0.94, 0.020)]
    layers = [LayerSensitivity(n, "Conv2d", 10.0, 12.0, 1.0, rank, metric_float=m, sqnr_float=13.0, ranked_float=k) for n, rank, m, k in spec]
    report = SensitivityReport("m", {}, "static-pt2e", "agreement", True, "proxy", 8, False, "eval", 256, 1.0, 0.91, 12.0,
                               layers, [n for n, *_ in spec], None, None, {}, ranking_metric="kl", quantized_ranked=0.02)
    _rank_confirmed(report)
    assert report.ranking() == ["a", "e", "b", "f", "d", "c", "g"]  # g has the best agreement and the worst KL
    assert report.tied == 0
    assert report.top5_agreement == 0.8  # proxy a-e vs real a, e, b, f, d


def test_cache_key_follows_weights_and_data_not_names(mnist):
    """Two models or data sets with the same name and sizes but other content never share an entry."""
    import copy

    from quantwise.config import parse_recipe
    from quantwise.mixed.sensitivity import SensitivityOptions, _cache_key

    recipe, opts = parse_recipe("dynamic"), SensitivityOptions()
    key = _cache_key(mnist, recipe, opts)
    assert _cache_key(mnist, recipe, opts) == key  # deterministic
    other = copy.copy(mnist)
    other.model = copy.deepcopy(mnist.model)
    with torch.no_grad():
        next(other.model.parameters())[0].add_(1e-3)
    assert _cache_key(other, recipe, opts) != key
    other = copy.copy(mnist)
    other.evaluation = mnist.evaluation.select(torch.arange(len(mnist.evaluation)).flip(0))  # same samples, same size, another order
    other.evaluation.description = mnist.evaluation.description
    assert _cache_key(other, recipe, opts) != key
