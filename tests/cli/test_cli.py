"""The CLI driven in-process: real commands on the real MNIST model, and bad input that must end
in one readable line, a non-zero exit, no traceback and nothing written."""
from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import error_line, invoke

SMALL = ["--n-calibration", "64", "--n-evaluation", "256"]


def test_help_lists_commands_with_examples(capsys):
    code, out, _ = invoke(capsys, "--help")
    assert code == 0
    for command in ("quantize", "eval", "compare", "zoo", "recipes"):
        assert command in out
    code, out, _ = invoke(capsys, "quantize", "--help")
    assert code == 0 and "Examples" in out


def test_zoo_lists_the_real_models(capsys):
    code, out, _ = invoke(capsys, "zoo")
    assert code == 0
    for name in ("mnist-cnn", "efficientnet-lite0", "minilm-l6", "resemblyzer-lstm"):
        assert name in out


def test_quantize_then_eval_artifact(capsys, tmp_path):
    out_dir = tmp_path / "mnist-int8"
    code, out, err = invoke(capsys, "-q", "quantize", "mnist-cnn", "--recipe", "static-fx", "--out", str(out_dir), *SMALL)
    assert code == 0, err
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["recipe"]["kind"] == "static" and manifest["model"] == "mnist-cnn"
    assert manifest["metrics"]["top1"] > 0.97
    assert manifest["versions"]["torch"].startswith("2.13.0")
    code, out, err = invoke(capsys, "-q", "eval", str(out_dir), "--n-evaluation", "256")
    assert code == 0, err
    assert "top1" in out
    # the output exists now: refusing to overwrite is the default
    code, _, err = invoke(capsys, "-q", "quantize", "mnist-cnn", "--out", str(out_dir), *SMALL)
    assert code == 2 and "already exists" in error_line(err) and "--force" in error_line(err)


def test_compare_writes_json_and_flags_rows(capsys, tmp_path):
    path = tmp_path / "report.json"
    code, out, err = invoke(capsys, "-q", "compare", "mnist-cnn", "--recipes", "dynamic,static-fx", "--batches", "1,8",
                            "--no-compile", "--repeats", "5", "--json", str(path), "--no-peers", *SMALL)
    assert code == 0, err
    report = json.loads(path.read_text())
    names = [r["name"] for r in report["rows"]]
    assert names == ["float", "bf16 autocast", "dynamic", "static-fx"]
    for row in report["rows"]:
        assert row["latency"]["1"]["median_ms"] > 0 and row["size_mb"] > 0
        if row["kind"] == "quantized":
            assert row["size_ratio"] < 0.3
            slower = [b for b, s in row["speedup"].items() if s < 1.0]
            for b in slower:  # every slower row says so
                assert any(w["kind"] == "speed" and f"at batch {b}" in w["text"] for w in row["warnings"])
    assert "static-fx" in out


@pytest.mark.parametrize(
    "args, words",
    [
        (["quantize", "no-such-model", "--out", "{tmp}/o"], "unknown model 'no-such-model'"),
        (["quantize", "{tmp}/missing.py:build", "--out", "{tmp}/o"], "does not exist"),
        (["quantize", "mnist-cnn", "--recipe", "static:observer=nope", "--out", "{tmp}/o"], "unknown observer"),
        (["quantize", "{tmp}/model.py:build", "--data", "{tmp}/evil.pt", "--out", "{tmp}/o"], "pickled Python objects"),
        (["quantize", "{tmp}/model.py:build", "--data", "{tmp}/wrong.pt", "--out", "{tmp}/o"], "does not fit model"),
        (["quantize", "{tmp}/model.py:build", "--out", "{tmp}/o"], "comes without data"),
        (["quantize", "{tmp}/model.py:conv_only", "--data", "{tmp}/images.pt", "--recipe", "dynamic", "--out", "{tmp}/o"], "no Linear, LSTM, GRU or Embedding"),
        (["eval", "{tmp}/corrupt"], "corrupt"),
        (["eval", "{tmp}/future"], "newer than this quantwise reads"),
        (["compare", "mnist-cnn", "--batches", "one"], "--batches"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, args, words):
    (tmp_path / "model.py").write_text(
        "import torch\n"
        "def build():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))\n"
        "def conv_only():\n    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())\n"
    )
    torch.save({"inputs": torch.randn(20, 3, 3)}, tmp_path / "wrong.pt")
    torch.save({"inputs": torch.randn(20, 1, 4, 4)}, tmp_path / "images.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"inputs": Evil()}, f)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "manifest.json").write_text('{"format": "quantwise-artifact", "format_version": 1, "model": "mnist-cnn", "recipe": {}, "inputs": []}')
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage")
    future = tmp_path / "future"
    future.mkdir()
    (future / "manifest.json").write_text('{"format": "quantwise-artifact", "format_version": 99}')
    (future / "model.safetensors").write_bytes(b"")

    before = set(p.name for p in tmp_path.iterdir())
    code, out, err = invoke(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2
    assert words in error_line(err)
    assert "pwned" not in out + err
    assert set(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp left behind


@pytest.mark.parametrize("args, words", [
    (["quantize", "mnist-cnn"], "Missing option '--out'"),
    (["quantize", "mnist-cnn", "--out", "o", "--bogus"], "No such option: --bogus"),
])
def test_usage_errors_are_click_usage_not_unexpected(capsys, args, words):
    """typer 0.29 raises its own copy of click's exceptions (typer._click): they were reported as
    'unexpected MissingParameter' with exit 1; they are usage errors (exit 2, click's message)."""
    code, out, err = invoke(capsys, *args)
    assert code == 2
    assert words in err and "unexpected" not in err and "Traceback" not in err
