"""One API for every language-model preset: ``api.quantize`` runs each (its calibration shortened to
fit a tiny random model: a shape test, not accuracy), ``api.save`` writes it and ``api.load`` gives
back the same model; a classic recipe on a language model is refused in one line."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from quantwise import api
from quantwise.artifact.store import read_manifest
from quantwise.config import PRESET_TABLE, preset_names
from quantwise.errors import QuantwiseError
from tests.llm.test_architectures import COMMON, _save_model

# wide enough for every block format (llama.cpp's k-quants take rows of 256)
WIDE = {**COMMON, "hidden_size": 256, "intermediate_size": 512, "head_dim": 64}
SHORT = {"calibration_samples": 8, "calibration_context": 256, "iterations": 4}


def wide_tiny_llama(root):
    """A tiny random Llama (tied table, rows of 256) saved as a Hugging Face folder with its text."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    folder = _save_model("llama-tied", root)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(LlamaConfig(**WIDE, tie_word_embeddings=True)).eval().save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return wide_tiny_llama(tmp_path_factory.mktemp("tiny"))


def _short(recipe):
    fields = {f.name for f in dataclasses.fields(recipe)}
    return dataclasses.replace(recipe, **{k: v for k, v in SHORT.items() if k in fields})


@pytest.mark.parametrize("name", preset_names("language") + preset_names("gguf"))
def test_every_language_preset_quantizes_saves_and_loads_through_the_api(name, folder, tmp_path):
    lm = api.load_model(str(folder), text=str(folder / "text"))
    assert lm.kind == "language"
    result = api.quantize(lm, _short(PRESET_TABLE[name].recipe))
    ids = torch.randint(3, 384, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = result.quantized.model(ids).logits
    assert torch.isfinite(logits).all()
    path = api.save(result, tmp_path / name)  # verifies the reload itself
    loaded = api.load(path)
    with torch.no_grad():
        assert torch.equal(loaded.module(ids).logits, logits)
    assert api.model_kind_of(path) == api.model_kind_of(str(folder)) == "language"
    assert api.artifact_kind(read_manifest(path)) == "language"  # as the recipe's method records it: export reads this
    assert api.bundle_for_artifact(read_manifest(path), None) is None  # rebuilt from the artifact itself
    with pytest.raises(QuantwiseError, match="--data does not apply to a language-model artifact"):
        api.bundle_for_artifact(read_manifest(path), None, data="x.pt")


def test_a_classic_recipe_on_a_language_model_is_refused(folder):
    lm = api.load_model(str(folder), text=str(folder / "text"))
    with pytest.raises(QuantwiseError, match="is not for language models"):
        api.quantize(lm, "static-fx")
