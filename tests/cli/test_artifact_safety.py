"""An artifact is data: loading, evaluating or exporting one never runs code its manifest names;
a user model's architecture is given by the user; --force replaces only artifacts and loses nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import error_line, invoke
from quantwise.errors import QuantwiseError

USER_MODEL = '''
import torch
from torch import nn
from quantwise.data.base import TensorSet
from quantwise.models.base import ModelBundle


class Net(nn.Module):  # a conv front end and a BiLSTM, as a user's own model might be
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 3, padding=1)
        self.lstm = nn.LSTM(16, 16, batch_first=True, bidirectional=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        h = torch.relu(self.conv(x)).transpose(1, 2)
        return self.head(self.lstm(h)[0][:, -1])


def build():
    torch.manual_seed(0)
    model = Net().eval()
    data = torch.randn(48, 8, 20, generator=torch.Generator().manual_seed(1))
    return ModelBundle("my-model", model, TensorSet((data[:16],), description="calibration"),
                       TensorSet((data[16:],), description="evaluation"), task="embedding", primary="cosine", tolerance=0.05)
'''


@pytest.fixture()
def user_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_model.py").write_text(USER_MODEL)
    return "my_model.py:build"


def _hostile(artifact: Path, tmp_path: Path, spec: str) -> Path:
    """Point the artifact's manifest at ``spec``; a payload beside it would leave ``marker`` if run."""
    marker = tmp_path / "payload-ran"
    (tmp_path / "payload.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef f():\n    raise SystemExit(0)\n")
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["model"] = spec
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    return marker


@pytest.mark.parametrize("spec", ["payload.py:f", "payload:f"])
def test_a_manifest_naming_code_never_runs_it(capsys, tmp_path, monkeypatch, spec):
    from quantwise import api

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert invoke(capsys, "quantize", "mnist-cnn", "--recipe", "dynamic", "--out", "art", "--no-eval")[0] == 0
    marker = _hostile(tmp_path / "art", tmp_path, spec)
    with pytest.raises(QuantwiseError, match="never runs code"):
        api.load(tmp_path / "art")
    for command in (["eval", "art"], ["export", "art", "--to", "onnx"]):
        code, _, err = invoke(capsys, *command)
        assert code == 2 and "--model" in error_line(err)
    assert not marker.exists()
    assert not (tmp_path / "art" / "model.onnx").exists()


def test_a_user_model_artifact_evaluates_and_exports_with_model(capsys, user_model, tmp_path):
    code, out, err = invoke(capsys, "quantize", user_model, "--recipe", "dynamic:recurrent=false", "--out", "mine")
    assert code == 0, err
    manifest = json.loads((tmp_path / "mine" / "manifest.json").read_text())
    assert manifest["model"] == "my-model" and manifest["architecture"]["tensors"] > 0
    code, _, err = invoke(capsys, "eval", "mine")
    assert code == 2 and "--model file.py:factory" in error_line(err)
    code, out, err = invoke(capsys, "eval", "mine", "--model", user_model)
    assert code == 0, err
    assert "cosine" in out
    code, out, err = invoke(capsys, "export", "mine", "--to", "onnx", "--model", user_model)
    assert code == 0, err
    assert (tmp_path / "mine" / "model.onnx").is_file()


def test_a_different_architecture_is_refused(capsys, user_model, tmp_path):
    from quantwise import api

    assert invoke(capsys, "quantize", user_model, "--recipe", "dynamic:recurrent=false", "--out", "mine")[0] == 0
    (tmp_path / "other.py").write_text(USER_MODEL.replace("nn.Linear(32, 4)", "nn.Linear(32, 5)"))
    with pytest.raises(QuantwiseError, match="does not match the one artifact"):
        api.load(tmp_path / "mine", arch="other.py:build")
    # a factory that returns the bare module (no data) names the architecture as well
    (tmp_path / "plain.py").write_text(USER_MODEL + "\n\ndef net():\n    return build().model\n")
    assert api.load(tmp_path / "mine", arch="plain.py:net").module is not None


def test_force_refuses_a_directory_that_is_not_an_artifact(capsys, tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    code, _, err = invoke(capsys, "quantize", "mnist-cnn", "--recipe", "dynamic", "--out", str(folder), "--force", "--no-eval")
    assert code == 2 and "not a quantwise artifact" in error_line(err)
    assert (folder / "notes.txt").read_text() == "keep me" and sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    # an artifact with a user's file added is not replaced either
    assert invoke(capsys, "quantize", "mnist-cnn", "--recipe", "dynamic", "--out", str(tmp_path / "art"), "--no-eval")[0] == 0
    (tmp_path / "art" / "mine.txt").write_text("keep me")
    code, _, err = invoke(capsys, "quantize", "mnist-cnn", "--recipe", "dynamic", "--out", str(tmp_path / "art"), "--force", "--no-eval")
    assert code == 2 and (tmp_path / "art" / "mine.txt").exists()


def test_force_keeps_the_old_artifact_when_the_new_one_fails_verification(capsys, tmp_path, monkeypatch):
    from quantwise.methods import artifact as classic_artifact

    art = tmp_path / "art"
    assert invoke(capsys, "quantize", "mnist-cnn", "--recipe", "dynamic", "--out", str(art), "--no-eval")[0] == 0
    before = {p.name: p.read_bytes() for p in art.iterdir()}

    def broken(quantized, bundle, path):
        raise QuantwiseError("the saved artifact does not reproduce the quantized model's outputs exactly; nothing was written")

    monkeypatch.setattr(classic_artifact, "_verify", broken)
    code, _, err = invoke(capsys, "quantize", "mnist-cnn", "--recipe", "static-fx", "--out", str(art), "--force", "--no-eval")
    assert code == 2 and "does not reproduce" in error_line(err)
    assert {p.name: p.read_bytes() for p in art.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temporary directory left
    monkeypatch.undo()
    code, _, err = invoke(capsys, "quantize", "mnist-cnn", "--recipe", "static-fx", "--out", str(art), "--force", "--no-eval")
    assert code == 0, err
    assert json.loads((art / "manifest.json").read_text())["recipe"]["kind"] == "static"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
