"""What depends on the machine and the library versions is detected and said, not assumed."""
from __future__ import annotations

import json

import pytest

from quantwise.errors import QuantwiseError


def test_compare_does_not_time_emulated_bf16(mnist, monkeypatch):
    from quantwise import compare as compare_module
    from quantwise.compare import CompareOptions, compare

    monkeypatch.setattr(compare_module, "native_bf16", lambda: False)
    report = compare(mnist, CompareOptions(recipes=("dynamic",), batches=(1,), compile=False, repeats=2, peers=False))
    bf16 = next(r for r in report.rows if r.runtime == "bf16")
    assert bf16.error and "no native bfloat16" in bf16.error and not bf16.latency
    assert report.machine["native_bf16"] in ("True", "False") and report.machine["cpu_capability"]
    assert "bf16" not in report.best[1]


def test_auto_does_not_search_emulated_bf16(mnist, monkeypatch):
    from quantwise.mixed import auto

    monkeypatch.setattr(auto, "native_bf16", lambda: False)
    assert [type(r).__name__ for r in auto._workflows(mnist, ("bf16", "dynamic"))] == ["DynamicInt8"]


def test_an_artifact_from_other_torch_or_torchao_versions_is_refused(mnist, tmp_path):
    from quantwise import api

    path = api.save(api.quantize(mnist, "dynamic"), tmp_path / "art")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["versions"]["torchao"] = "0.1.0"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(QuantwiseError, match=r"torchao 0.1.0 \(this is .*pip install torchao==0.1.0"):
        api.load(path)
