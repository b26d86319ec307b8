"""auto on real models: the naive LSTM failure becomes a result within budget, the recipe file
reproduces the winner, 'nothing fits' is a result, and bad budgets are one error line."""
from __future__ import annotations

import json

import pytest
import torch

from quantwise import api
from quantwise.config import parse_recipe, recipe_from_dict
from quantwise.mixed.auto import AutoOptions, search, write_outputs
from tests.report.browser import open_page
from tests.helpers import error_line, invoke, run

FAST = ("bf16", "dynamic")  # the two workflows that need no calibration: keeps the test in seconds


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTWISE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small_speaker():
    return api.load_model("resemblyzer-lstm", n_calibration=16, n_evaluation=24)


@pytest.mark.parametrize("args, words", [
    (["--max-drop", "-0.1"], ["negative"]),
    (["--objective", "speed"], ["objective", "latency"]),
    (["--max-drop", "5"], ["top1", "fraction", "0.05"]),
    (["--workflows", "qat"], ["qat"]),
    (["--target", "tflite"], ["target", "onnxruntime"]),
])
def test_bad_budget_or_objective_is_one_line(capsys, tmp_path, args, words):
    recipe = tmp_path / "r.json"
    code, _, err = invoke(capsys, "auto", "mnist-cnn", "--n-calibration", "16", "--n-evaluation", "32",
                          "--recipe-out", str(recipe), "--out", str(tmp_path / "art"), *args)
    line = error_line(err)
    assert code == 2 and all(w in line for w in words), line
    assert not recipe.exists() and not (tmp_path / "art").exists()


def test_lstm_fallback_meets_the_budget_and_the_recipe_reproduces_it(small_speaker, tmp_path):
    opts = AutoOptions(objective="size", compile=False, workflows=FAST, repeats=3, max_seconds=1.0)
    report, result = search(small_speaker, opts)
    naive = report.candidate("dynamic")
    assert naive.drop > 0.1 and not naive.within_budget  # ZOO.md: the int8 LSTM loses ~0.3 cosine
    chosen = report.candidate(report.chosen)
    assert chosen.within_budget and chosen.drop <= small_speaker.tolerance and chosen.kept_float == ["lstm"]
    assert chosen.size_mb < report.candidate("float").size_mb  # the Linear is int8
    assert "lstm" in report.why_float and report.sensitivity
    write_outputs(report, small_speaker, result, tmp_path / "best.yaml", tmp_path / "art")
    assert parse_recipe(str(tmp_path / "best.yaml")) == recipe_from_dict(chosen.recipe)
    loaded = api.load(tmp_path / "art")
    probe = small_speaker.evaluation.example(4)
    assert torch.equal(run(loaded.module, probe), run(result.quantized.module, probe))


def test_nothing_within_budget_is_a_result_with_tradeoffs(capsys, tmp_path):
    recipe, data = tmp_path / "r.json", tmp_path / "auto.json"
    code, out, _ = invoke(capsys, "auto", "resemblyzer-lstm", "--n-calibration", "16", "--n-evaluation", "24", "--max-drop", "0",
                          "--objective", "size", "--no-compile", "--workflows", ",".join(FAST), "--max-float", "0",
                          "--recipe-out", str(recipe), "--json", str(data), "--html", str(tmp_path / "auto.html"))
    assert code == 0 and "no candidate keeps cosine within 0 of float" in out
    report = json.loads(data.read_text())
    page = open_page(tmp_path / "auto.html")
    assert page.console == [] and page.errors == [] and page.images and all(i["ok"] for i in page.images)
    assert "No candidate meets the budget" in (tmp_path / "auto.html").read_text()
    assert report["chosen"] is None and report["tradeoffs"] and not recipe.exists()
    assert {c["name"] for c in report["candidates"]} >= {"float", "bf16", "dynamic"}


def test_bf16_recipe_runs_under_autocast_and_reloads_exactly(mnist, mnist_reference, tmp_path):
    result = api.quantize(mnist, "bf16")
    probe = mnist.evaluation.example(32)
    out = run(result.quantized.module, probe)
    assert out.dtype == torch.float32 and not torch.equal(out, mnist_reference[:32])  # bf16 math changes the logits
    assert (out.argmax(1) == mnist_reference[:32].argmax(1)).all()
    loaded = api.load(api.save(result, tmp_path / "a"))
    assert torch.equal(run(loaded.module, probe), out) and loaded.recipe == parse_recipe("bf16")


def test_onnxruntime_target_exports_and_times_every_candidate_there(mnist):
    """--target onnxruntime: ORT float is the baseline, int8 candidates are exported (parity-checked)
    and timed in ONNX Runtime, and a recipe that cannot be exported says why and cannot win."""
    opts = AutoOptions(objective="latency", compile=False, workflows=("bf16", "static-pt2e"), repeats=3, max_seconds=1.0,
                       max_drop=0.05, target="onnxruntime")
    report, _ = search(mnist, opts)
    baseline = report.candidate("onnxruntime float")
    assert baseline.runtime == "onnxruntime" and baseline.latency_ms > 0 and report.target == "onnxruntime"
    assert [c.name for c in report.candidates if c.stage == "baseline"] == ["onnxruntime float"]
    static = report.candidate("static-pt2e")
    assert static.runtime == "onnxruntime" and static.latency_ms > 0
    assert static.size_mb < 0.5 * baseline.size_mb  # the .onnx file holds int8 weights
    bf16 = report.candidate("bf16")
    assert bf16.latency_ms is None
    assert report.chosen != "bf16"
