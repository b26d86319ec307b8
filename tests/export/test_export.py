"""Exports of real quantized models, each proved by a parity check; refusals are one line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from helpers import error_line, invoke


@pytest.fixture(scope="module")
def artifacts(mnist, tmp_path_factory):
    from quantwise import api

    root = tmp_path_factory.mktemp("export")
    made = {}
    for recipe in ("static-pt2e", "static-fx", "dynamic", "static-xnnpack"):
        made[recipe] = api.save(api.quantize(mnist, recipe), root / recipe)
    return made


@pytest.mark.parametrize("recipe,target", [
    ("static-pt2e", "onnx"), ("static-pt2e", "pt2"), ("static-pt2e", "torchscript"),
    ("static-fx", "onnx"), ("static-fx", "torchscript"), ("dynamic", "pt2"),
    ("static-xnnpack", "executorch"), ("static-xnnpack", "onnx"),
])
def test_export_holds_parity_and_is_recorded(artifacts, mnist, recipe, target):
    from quantwise.export import export_artifact

    result = export_artifact(artifacts[recipe], target, bundle=mnist, samples=512)
    assert result.path.is_file() and result.path.parent == artifacts[recipe]
    p = result.parity
    assert p.passed and p.samples == 512
    assert p.vs_quantized.agreement >= 0.99
    assert p.vs_float.agreement >= 0.97  # int8 mnist stays close to float
    manifest = json.loads((artifacts[recipe] / "manifest.json").read_text())
    assert manifest["exports"][target]["parity"]["passed"] is True
    assert manifest["exports"][target]["file"] == str(result.path)


def test_pt2_runs_in_a_fresh_process_without_quantwise(artifacts, mnist):
    from quantwise.export import export_artifact

    path = export_artifact(artifacts["static-pt2e"], "pt2", bundle=mnist, overwrite=True, samples=64).path
    x = mnist.evaluation.example(5)[0]
    torch.save(x, path.parent / "x.pt")
    code = ("import sys, torch, torchao\n"
            "assert 'quantwise' not in sys.modules\n"
            f"m = torch.export.load({str(path)!r}).module()\n"
            f"print(m(torch.load({str(path.parent / 'x.pt')!r})).argmax(1).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    from quantwise import api

    with torch.no_grad():
        expected = api.load(artifacts["static-pt2e"]).module(x).argmax(1).tolist()
    assert out.stdout.strip().splitlines()[-1] == str(expected)


def test_failed_parity_leaves_nothing(artifacts, mnist, monkeypatch):
    from quantwise.errors import QuantwiseError
    from quantwise.export import base, export_artifact, target_for

    target = target_for("onnx")
    real_load = target.load

    def noisy(path, threads):
        run = real_load(path, threads)
        return lambda *x: run(*x).flip(1)  # a broken export: classes reversed

    monkeypatch.setitem(base.TARGETS, "onnx", base.ExportTarget(**{**target.__dict__, "load": noisy}))
    out = artifacts["static-fx"] / "noisy.onnx"
    before = (artifacts["static-fx"] / "manifest.json").read_text()
    with pytest.raises(QuantwiseError, match="does not match the quantized model"):
        export_artifact(artifacts["static-fx"], "onnx", bundle=mnist, out=out, samples=256)
    assert not out.exists()
    assert not [p for p in artifacts["static-fx"].iterdir() if p.name.startswith(".")]
    assert (artifacts["static-fx"] / "manifest.json").read_text() == before


@pytest.mark.parametrize("recipe,to,words", [
    ("static-fx", "pt2", "cannot export a fx model to pt2"),
    ("dynamic", "torchscript", "cannot be traced by TorchScript"),
    ("static-fx", "tflite", "unknown export target"),
    ("static-pt2e", "executorch", "quantize with static:path=pt2e,backend=xnnpack"),
])
def test_unsupported_export_is_one_line(capsys, artifacts, recipe, to, words):
    before = sorted(p.name for p in artifacts[recipe].iterdir())
    code, _, err = invoke(capsys, "export", str(artifacts[recipe]), "--to", to)
    assert code == 2
    assert words in error_line(err)
    assert sorted(p.name for p in artifacts[recipe].iterdir()) == before


def test_newer_manifest_is_refused(capsys, artifacts, tmp_path):
    import shutil

    copy = tmp_path / "newer"
    shutil.copytree(artifacts["static-fx"], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    before = sorted(p.name for p in copy.iterdir())
    code, _, err = invoke(capsys, "export", str(copy), "--to", "onnx", "--out", str(tmp_path / "x.onnx"))
    assert code == 2 and "newer than this quantwise reads" in error_line(err)
    assert sorted(p.name for p in copy.iterdir()) == before and not (tmp_path / "x.onnx").exists()


def test_cli_prints_parity(capsys, artifacts, tmp_path):
    target = tmp_path / "deploy" / "m.ptl"
    code, out, _ = invoke(capsys, "export", str(artifacts["static-fx"]), "--to", "torchscript", "--out", str(target), "--samples", "128")
    assert code == 0, out
    assert target.is_file() and "parity passed" in out and "quantized PyTorch model" in out
    code, _, err = invoke(capsys, "export", str(artifacts["static-fx"]), "--to", "torchscript", "--out", str(target))
    assert code == 2 and "already exists" in error_line(err)


def test_compare_runs_exports_in_onnxruntime_beside_its_own_quantizer(mnist):
    from quantwise.compare import CompareOptions, compare

    report = compare(mnist, CompareOptions(recipes=("static-pt2e", "dynamic"), batches=(4,), compile=False, repeats=3,
                                           targets=("pytorch", "onnxruntime"), peers=True))
    rows = {r.name: r for r in report.rows}
    assert rows["onnxruntime float"].kind == "baseline" and rows["onnxruntime float"].latency[4].median_ms > 0
    for peer in ("onnxruntime static int8 (its own quantizer)", "onnxruntime dynamic int8 (its own quantizer)"):
        assert rows[peer].kind == "peer" and rows[peer].error is None, rows[peer].error
        assert rows[peer].metrics["agreement"] > 0.97 and rows[peer].size_ratio < 0.3
    exported = rows["static-pt2e -> onnxruntime"]
    assert exported.runtime == "onnxruntime" and exported.error is None
    assert exported.metrics["agreement"] > 0.97
    dynamic = rows["dynamic -> onnxruntime"]  # torchao int8 dynamic, translated to integer ONNX ops
    assert dynamic.error is None and dynamic.metrics["agreement"] > 0.97
    assert all("(its own quantizer)" not in name for name in report.best.values())  # peers are never quantwise's best


def test_compare_runs_exports_in_executorch(mnist):
    from quantwise.compare import CompareOptions, compare

    report = compare(mnist, CompareOptions(recipes=("static-xnnpack", "static-pt2e"), batches=(1,), compile=False, repeats=3,
                                           targets=("pytorch", "executorch"), peers=False))
    rows = {r.name: r for r in report.rows}
    exported = rows["static-xnnpack -> executorch"]
    assert exported.runtime == "executorch" and exported.error is None, exported.error
    assert exported.metrics["agreement"] > 0.97 and exported.latency[1].median_ms > 0
    refused = rows["static-pt2e -> executorch"]  # the x86 quantizer's uint8 graph: refused, with the recipe that works
    assert refused.error and "static:path=pt2e,backend=xnnpack" in refused.error and not refused.latency


def test_xnnpack_graph_is_not_sent_to_inductor(artifacts):
    from quantwise import api

    # Inductor's x86 int8 convolutions take uint8 activations; the XNNPACK graph's are int8
    assert api.load(artifacts["static-xnnpack"]).quantized.compiled is False
    assert api.load(artifacts["static-pt2e"]).quantized.compiled is True
