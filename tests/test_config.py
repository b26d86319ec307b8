import json

import pytest

from quantwise.config import PRESETS, QAT, DynamicInt8, StaticInt8, parse_recipe, recipe_from_dict, recipe_name, recipe_to_dict
from quantwise.errors import QuantwiseError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_dicts(name):
    recipe = PRESETS[name]
    assert recipe_from_dict(json.loads(json.dumps(recipe_to_dict(recipe)))) == recipe
    assert recipe_name(recipe) == name


def test_inline_recipe_parses_types():
    r = parse_recipe("static:observer=mse,granularity=per-tensor,percentile=99.9,weight_bits=4")
    assert r == StaticInt8(observer="mse", granularity="per-tensor", percentile=99.9, weight_bits=4)
    assert parse_recipe("dynamic:embedding=false") == DynamicInt8(embedding=False)
    assert recipe_name(parse_recipe("qat:steps=10")) == "qat:steps=10"


@pytest.mark.parametrize(
    "spec, words",
    [
        ("static:observer=minmx", "unknown observer 'minmx'"),
        ("static:colour=red", "unknown key(s) colour"),
        ("static:path=pt2e,backend=xnnpack,weight_bits=4", "implemented for backend x86, not xnnpack"),
        ("static:path=pt2e,backend=qnnpack", "no qnnpack quantizer"),
        ("static:weight_bits=3", "weight_bits=3 is not supported"),
        ("qat:steps=0", "qat needs steps >= 1"),
        ("int3", "unknown recipe 'int3'"),
        ("static:observer", "has no value"),
        ("weight-only:bits=8,group_size=None,activations=fp16", "unknown activations 'fp16'"),
        ("missing.json", "does not exist"),
    ],
)
def test_bad_recipes_name_the_problem(spec, words):
    with pytest.raises(QuantwiseError) as err:
        parse_recipe(spec)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_recipe_files(tmp_path):
    (tmp_path / "r.yaml").write_text("kind: qat\nweight_bits: 4\nsteps: 50\n")
    assert parse_recipe(str(tmp_path / "r.yaml")) == QAT(weight_bits=4, steps=50)
    (tmp_path / "r.json").write_text(json.dumps({"kind": "static", "observer": "percentile"}))
    assert parse_recipe(str(tmp_path / "r.json")) == StaticInt8(observer="percentile")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(QuantwiseError, match="cannot parse recipe file"):
        parse_recipe(str(tmp_path / "bad.json"))
    (tmp_path / "v.json").write_text(json.dumps({"kind": "static", "version": 99}))
    with pytest.raises(QuantwiseError, match="recipe version 99"):
        parse_recipe(str(tmp_path / "v.json"))


def test_one_preset_table_drives_names_defaults_and_refusals():
    from quantwise.compare import DEFAULT_RECIPES
    from quantwise.config import GGUF_PRESETS, LLM_PRESETS, LLM_RECIPE_KINDS, PRESET_TABLE, PRESETS, GGUFWeights, check_language_recipe
    from quantwise.llm.auto import DEFAULT_CANDIDATES
    from quantwise.mixed.auto import WORKFLOWS

    for name, preset in PRESET_TABLE.items():
        assert parse_recipe(name) == preset.recipe == PRESETS[name] and preset.about
        assert (preset.recipe.kind in LLM_RECIPE_KINDS) == (preset.models != "classic")
        assert isinstance(preset.recipe, GGUFWeights) == (preset.models == "gguf")
    assert DEFAULT_RECIPES == ("dynamic", "static-fx", "static-pt2e", "qat")
    assert WORKFLOWS == ("bf16", "dynamic", "static-fx", "static-pt2e")
    assert set(DEFAULT_CANDIDATES) <= set(LLM_PRESETS) and "int4-awq-gptq" in DEFAULT_CANDIDATES
    assert GGUF_PRESETS == ("gguf-q8_0", "gguf-q4_0", "gguf-q4_k_m")
    with pytest.raises(QuantwiseError) as refused:
        check_language_recipe(parse_recipe("static-fx"), "static-fx")
    assert all(name in str(refused.value) for name in LLM_PRESETS + GGUF_PRESETS)
