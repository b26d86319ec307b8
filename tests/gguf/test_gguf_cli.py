"""quantize a language model on a GGUF grid, export it for llama.cpp, prove it; bad input refused."""
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import error_line, invoke

pytestmark = pytest.mark.slow
HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "quantwise", *args], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def q4_0(tmp_path_factory):
    """smollm2-135m with llama.cpp's own Q4_0 rule (no data), exported to GGUF."""
    out = tmp_path_factory.mktemp("gguf") / "smol-q4_0"
    _cli("quantize", "smollm2-135m", "--recipe", "gguf:type=Q4_0,algorithm=reference", "--no-eval", "--out", str(out))
    return out, _cli("export", str(out), "--to", "gguf", "--samples", "2")


def test_the_exported_file_holds_quantwises_codes_bit_for_bit_and_llama_cpp_agrees(q4_0):
    from gguf import GGMLQuantizationType, GGUFReader

    out, text = q4_0
    record = json.loads((out / "manifest.json").read_text())["exports"]["gguf"]
    parity = record["parity"]
    assert parity["passed"] and parity["bytes_equal"] and parity["weights_equal"]
    assert parity["tensors"] == 272 and parity["quantized_tensors"] == 211
    reader = GGUFReader(str(out / "model.gguf"))
    kinds = [GGMLQuantizationType(t.tensor_type).name for t in reader.tensors]
    assert kinds.count("Q4_0") == 210 and kinds.count("Q8_0") == 1 and kinds.count("F32") == 61  # token table: Q8_0 (576 fits no Q6_K)
    fields = reader.fields
    assert str(fields["general.architecture"].contents()) == "llama"
    assert fields["general.file_type"].contents() == 2  # LLAMA_FTYPE_MOSTLY_Q4_0
    assert "tokenizer.chat_template" in fields and len(fields["tokenizer.ggml.tokens"].contents()) == 49152
    assert "bit for bit" in text
    if HAS_LLAMA_CPP:
        assert parity["llamacpp"] and abs(parity["delta_pct"]) <= 0.5
        assert parity["top1_agreement"] > 0.9


@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed (pip install 'quantwise[llamacpp]')")
def test_the_reference_rule_is_llama_quantizes_file_byte_for_byte(q4_0, tmp_path):
    """llama.cpp's own quantizer, run on the same float model written as F32, writes the same tensors."""
    import ctypes

    import llama_cpp
    from gguf import GGUFReader

    from quantwise.gguf.tensors import model_tensors
    from quantwise.gguf.writer import write
    from quantwise.llm.model import load_language_model

    lm = load_language_model("smollm2-135m")
    f32, theirs = tmp_path / "f32.gguf", tmp_path / "q4_0.gguf"
    write(f32, lm.gguf_path, model_tensors(lm.model, {}, "llama"), 0)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.nthread = 2
    assert llama_cpp.llama_model_quantize(str(f32).encode(), str(theirs).encode(), ctypes.byref(params)) == 0
    ours = {t.name: np.asarray(t.data) for t in GGUFReader(str(q4_0[0] / "model.gguf")).tensors}
    for t in GGUFReader(str(theirs)).tensors:
        assert np.array_equal(np.asarray(t.data), ours[t.name]), t.name

    # and quantwise gives every tensor the block type llama.cpp's Q4_K_M mixture gives it (fallbacks included)
    from gguf import GGMLQuantizationType

    from quantwise.config import GGUFWeights
    from quantwise.gguf.writer import gguf_names
    from quantwise.llm.gguf_types import gguf_types

    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    mixed = tmp_path / "q4_k_m.gguf"
    assert llama_cpp.llama_model_quantize(str(f32).encode(), str(mixed).encode(), ctypes.byref(params)) == 0
    names = gguf_names([f"{n}.weight" for n in gguf_types(lm.model, GGUFWeights(type="Q4_K_M"))], "llama", 30)
    chosen = {names[f"{n}.weight"]: t.chosen for n, t in gguf_types(lm.model, GGUFWeights(type="Q4_K_M")).items()}
    theirs_types = {t.name: GGMLQuantizationType(t.tensor_type).name for t in GGUFReader(str(mixed)).tensors if t.name in chosen}
    assert theirs_types == chosen


def test_a_recipe_off_the_gguf_grids_is_refused_in_one_line(q4_0, tmp_path, capsys):
    import shutil

    art = tmp_path / "relabelled"
    shutil.copytree(q4_0[0], art)
    (art / "model.gguf").unlink()
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["recipe"] = {"kind": "weight-only", "version": 1, "bits": 4, "group_size": 64}
    (art / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = invoke(capsys, "export", str(art), "--to", "gguf")
    assert code == 2 and "not on a GGUF block grid" in error_line(err) and "gguf-q4_k_m" in error_line(err)
    assert not (art / "model.gguf").exists()


def test_existing_output_is_kept_and_a_classic_model_is_refused(q4_0, tmp_path, capsys):
    out = q4_0[0]
    before = (out / "model.gguf").read_bytes()
    code, _, err = invoke(capsys, "export", str(out), "--to", "gguf")
    assert code == 2 and "already exists" in error_line(err)
    assert (out / "model.gguf").read_bytes() == before
    code, _, err = invoke(capsys, "quantize", "mnist-cnn", "--recipe", "dynamic", "--out", str(tmp_path / "m"), "--no-eval")
    assert code == 0, err
    code, _, err = invoke(capsys, "export", str(tmp_path / "m"), "--to", "gguf")
    assert code == 2 and "only language models export to GGUF" in error_line(err)
    assert not (tmp_path / "m" / "model.gguf").exists()


@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed")
def test_a_file_llama_cpp_cannot_run_is_one_readable_error(tmp_path):
    """llama.cpp runs in a child process: its failure (or a native crash) is one line, not a dead CLI."""
    import torch

    from quantwise.errors import QuantwiseError
    from quantwise.gguf.llamacpp import run_isolated

    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(QuantwiseError, match="this llama.cpp build cannot run the file"):
        run_isolated(bogus, torch.zeros(1, 8, dtype=torch.long), [1, 2], 2, 1, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]


def test_auto_types_fit_the_budget_and_llama_cpp_runs_the_mixed_file(tmp_path):
    """type=auto: every tensor's type from the Fisher estimate, the file no larger than llama.cpp's Q4_0
    file of the model, each choice recorded with its reason; the mixed file verifies and runs."""
    from gguf import GGMLQuantizationType, GGUFReader

    from quantwise.gguf.allocate import tensor_bytes

    out = tmp_path / "smol-auto"
    recipe = "gguf:type=auto,budget=Q4_0,types=Q4_0|Q5_0|Q8_0,algorithm=reference,calibration_samples=4,calibration_context=128"
    text = _cli("quantize", "smollm2-135m", "--recipe", recipe, "--no-eval", "--out", str(out))
    assert "block types chosen by measured sensitivity" in text
    _cli("export", str(out), "--to", "gguf", "--samples", "2")
    parity = json.loads((out / "manifest.json").read_text())["exports"]["gguf"]["parity"]
    assert parity["passed"] and parity["bytes_equal"] and parity["weights_equal"]
    reader = GGUFReader(str(out / "model.gguf"))
    quantized = [t for t in reader.tensors if GGMLQuantizationType(t.tensor_type).name != "F32"]
    kinds = {GGMLQuantizationType(t.tensor_type).name for t in quantized}
    assert kinds <= {"Q4_0", "Q5_0", "Q8_0"}  # within the allowed types
    rule = {t.name: "Q8_0" if t.name == "token_embd.weight" else "Q4_0" for t in quantized}
    moved = [t.name for t in quantized if GGMLQuantizationType(t.tensor_type).name != rule[t.name]]
    assert moved  # measured, not llama.cpp's rule: some tensors trade types within the same size
    rule_bytes = sum(  # llama.cpp's Q4_0 file: Q4_0 everywhere, the tied table Q8_0 (ggml shapes are [cols, rows])
        tensor_bytes("Q8_0" if t.name == "token_embd.weight" else "Q4_0", int(t.shape[1]), int(t.shape[0])) for t in quantized)
    assert sum(int(t.n_bytes) for t in quantized) <= rule_bytes
    if HAS_LLAMA_CPP:
        assert parity["llamacpp"] and abs(parity["delta_pct"]) <= 0.5


@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed")
def test_compares_llama_cpp_rows_score_the_file_as_the_export_check_did_and_time_it(q4_0, tmp_path):
    """compare --target llama.cpp measures each file with this: same windows, same perplexity as the export's check."""
    from transformers import AutoTokenizer

    from quantwise.llm.compare_llamacpp import measure
    from quantwise.llm.perplexity import token_ids, windows
    from quantwise.llm.text import text_split

    out, _ = q4_0
    parity = json.loads((out / "manifest.json").read_text())["exports"]["gguf"]["parity"]
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    ids = windows(token_ids(tokenizer, text_split(None).evaluation, 2 * 512), 512, 2 * 512)
    ran = measure(out / "model.gguf", ids, ids[0, :32], ids[0], 8, 1, tmp_path)
    assert ran["perplexity"] == pytest.approx(parity["perplexity_llamacpp"], rel=1e-6)
    assert ran["decode_tok_s"] > 0 and ran["prefill_tok_s"] > ran["decode_tok_s"]  # one batched forward beats token by token
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the request file is gone


def test_a_language_model_compare_refuses_a_runtime_it_does_not_have(capsys):
    code, _, err = invoke(capsys, "compare", "smollm2-135m", "--target", "onnxruntime")
    assert code == 2 and "--target onnxruntime does not run language models" in error_line(err) and "llama.cpp" in error_line(err)
