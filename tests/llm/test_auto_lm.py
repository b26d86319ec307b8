"""auto for SmolLM2: the naive w8a8 failure (ZOO.md: perplexity 22.6 -> 88.7 with legacy per-tensor
dynamic int8) against recipes that keep activations in bf16; real model, real text, small windows."""
from __future__ import annotations

import json

import pytest

from quantwise.config import parse_recipe
from quantwise.llm.auto import auto_lm, choose, write_outputs
from quantwise.llm.compare import LLMCompareOptions
from tests.helpers import error_line, invoke

SMALL = LLMCompareOptions(recipes=("int8-weight-only", "w8a8", "int4-rtn"), context=256, eval_tokens=2048, decode_tokens=8, repeats=1, compile=False)


@pytest.fixture(scope="module")
def report():
    return auto_lm("smollm2-135m", 1.0, "size", SMALL)


def test_auto_picks_a_recipe_within_the_budget_and_writes_it(report, tmp_path):
    rows = {r.method: r for r in report.compare.rows}
    assert rows["int4-rtn"].delta_pct > 1.0  # int4 RTN is out of a 1 % budget
    assert rows["int8-weight-only"].delta_pct <= 1.0
    # the smallest row within +1 %: int8 weight-only (w8a8 keeps its output layer float, so it is larger)
    assert report.chosen == "int8-weight-only" and "+1%" in report.reason
    kept = " ".join(report.kept_higher_precision)  # tied table = the int8 output layer's codes: neither stays float
    assert report.compare.tied_embeddings and "RMSNorm" in kept and "embedding" not in kept and "output layer: float" not in kept
    write_outputs(report, "smollm2-135m", tmp_path / "best.json", None, None)
    assert report.chosen_row == "int8-weight-only"
    assert parse_recipe(str(tmp_path / "best.json")) == parse_recipe("int8-weight-only")
    json.dumps(report.to_dict())


def test_an_impossible_budget_says_so_with_the_trade_offs(report):
    quantized = [r.delta_pct for r in report.compare.rows if r.method in SMALL.recipes]
    none = choose(report.compare, min(quantized) - 0.01, "size", SMALL.recipes)  # tighter than every candidate (int8 can land at or below float)
    assert none.chosen is None and "no candidate" in none.reason and len(none.tradeoffs) == 3


def test_a_negative_budget_is_one_line(capsys, tmp_path):
    code, _, err = invoke(capsys, "auto", "smollm2-135m", "--max-drop", "-1", "--recipe-out", str(tmp_path / "r.json"))
    assert code != 0 and "negative" in error_line(err) and not (tmp_path / "r.json").exists()


def test_an_unavailable_target_is_one_line(capsys, tmp_path):
    code, _, err = invoke(capsys, "auto", "smollm2-135m", "--target", "onnxruntime", "--recipe-out", str(tmp_path / "r.json"))
    assert code != 0 and "not available for language models" in error_line(err) and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("flags", [("--batch", "8"), ("--max-float", "3", "--proxy-samples", "64")])
def test_options_that_do_not_apply_to_a_language_model_are_refused(capsys, tmp_path, flags):
    code, _, err = invoke(capsys, "auto", "smollm2-135m", *flags, "--recipe-out", str(tmp_path / "r.json"))
    line = error_line(err)
    assert code != 0 and "not apply to a language model" in line and flags[0] in line and not (tmp_path / "r.json").exists()
