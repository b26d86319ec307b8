"""keep_float on real models: the kept layers really stay float, the others are int8, the
output moves towards float, artifacts reload bit for bit, and a bad pattern is one error line."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from quantwise import api
from quantwise.config import DynamicInt8, StaticInt8, parse_recipe, recipe_from_dict, recipe_name, recipe_to_dict
from quantwise.errors import QuantwiseError
from quantwise.evaluate.metrics import outputs, sqnr_db
from tests.helpers import error_line, invoke, run


def test_recipe_field_round_trips_and_old_recipes_still_load(tmp_path):
    inline = parse_recipe("static:path=pt2e,keep_float=_fc|_blocks.0.*")
    assert inline.keep_float == ("_fc", "_blocks.0.*")
    data = recipe_to_dict(inline)
    assert data["keep_float"] == ["_fc", "_blocks.0.*"]
    assert recipe_from_dict(json.loads(json.dumps(data))) == inline
    assert parse_recipe(recipe_name(inline)) == inline  # the printed name is itself a recipe
    old = {k: v for k, v in recipe_to_dict(DynamicInt8()).items() if k != "keep_float"}
    assert recipe_from_dict(old) == DynamicInt8()
    path = tmp_path / "r.yaml"
    path.write_text("kind: dynamic\nkeep_float: [classifier.2]\n")
    assert parse_recipe(str(path)).keep_float == ("classifier.2",)
    with pytest.raises(QuantwiseError, match="keep_float"):
        StaticInt8(keep_float=("a", ""))


def _is_quantized_module(module: nn.Module) -> bool:
    return ".quantized" in type(module).__module__  # torch.ao.nn.quantized, torch.ao.nn.intrinsic.quantized


def test_fx_kept_layers_stay_float_and_reload_exactly(mnist, mnist_reference, tmp_path):
    recipe = StaticInt8(keep_float=("features.0", "classifier.2"))
    result = api.quantize(mnist, recipe)
    q = result.quantized.module
    # fx fuses conv+relu; the kept one is the float fused module with a float Conv2d inside
    assert not _is_quantized_module(q.get_submodule("features.0")) and q.get_submodule("features.0")[0].weight.dtype == torch.float32
    assert type(q.get_submodule("classifier.2")) is nn.Linear
    assert _is_quantized_module(q.get_submodule("features.3")) and _is_quantized_module(q.get_submodule("classifier.0"))
    naive = outputs(api.quantize(mnist, StaticInt8()).quantized.module, mnist.evaluation)
    # two float layers remove part of the quantization noise (measured: 37.5 -> 45.7 dB)
    assert sqnr_db(mnist_reference, outputs(q, mnist.evaluation)) > sqnr_db(mnist_reference, naive) + 3
    loaded = api.load(api.save(result, tmp_path / "a"))
    probe = mnist.evaluation.example(64)
    assert torch.equal(run(q, probe), run(loaded.module, probe)) and loaded.recipe == recipe
    assert result.quantized.built.kept_float == loaded.quantized.built.kept_float == ("features.0", "classifier.2")
    assert loaded.artifact.built == {"family": "fx", "compiled": False, "kept_float": ["features.0", "classifier.2"]}


def _linear_weight_sources(graph_module: torch.fx.GraphModule) -> dict[str, str]:
    """aten.linear/conv node -> 'float' when its weight is a plain attribute, 'int8' when dequantized."""
    found = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and node.target in (torch.ops.aten.linear.default, torch.ops.aten.conv2d.default):
            fqn = list(node.meta["nn_module_stack"].values())[-1][0]
            found[fqn] = "float" if node.args[1].op == "get_attr" else "int8"
    return found


def test_pt2e_kept_layers_have_float_weights_in_the_graph(tmp_path):
    bundle = api.load_model("efficientnet-lite0", n_calibration=8, n_evaluation=16)
    recipe = StaticInt8(path="pt2e", calibration_batches=1, keep_float=("_conv_stem", "_blocks.0.*", "_fc"))
    result = api.quantize(bundle, recipe)
    sources = _linear_weight_sources(result.quantized.module)
    kept = {"_conv_stem", "_blocks.0._depthwise_conv", "_blocks.0._project_conv", "_fc"}
    assert {k for k, v in sources.items() if v == "float"} == kept
    assert sum(v == "int8" for v in sources.values()) == 46
    loaded = api.load(api.save(result, tmp_path / "a"))  # save() itself requires identical outputs
    assert _linear_weight_sources(loaded.module) == sources


def test_dynamic_kept_lstm_stays_float_and_recovers_the_embedding(speaker, tmp_path):
    reference = outputs(speaker.model, speaker.evaluation)
    naive = api.quantize(speaker, "dynamic").quantized.module
    result = api.quantize(speaker, DynamicInt8(keep_float=("lstm",)))
    q = result.quantized.module
    assert type(q.lstm) is nn.LSTM and q.lstm.weight_ih_l0.dtype == torch.float32
    assert type(q.linear.weight) is not torch.Tensor and type(q.linear.weight) is not nn.Parameter  # torchao int8 tensor

    def cosine(module: nn.Module) -> float:
        return torch.nn.functional.cosine_similarity(reference, outputs(module, speaker.evaluation)).mean().item()

    # ZOO.md: the int8 LSTM drops cosine to ~0.7; with it float, only the last Linear is int8
    assert cosine(naive) < 0.8 and cosine(q) > 0.99
    loaded = api.load(api.save(result, tmp_path / "a"))
    probe = speaker.evaluation.example(8)
    assert torch.equal(run(q, probe), run(loaded.module, probe)) and type(loaded.module.lstm) is nn.LSTM


def test_dynamic_and_qat_on_mnist_keep_the_named_layer(mnist):
    q = api.quantize(mnist, "dynamic:keep_float=classifier.2").quantized.module
    assert type(q.classifier[2].weight) is nn.Parameter and type(q.classifier[0].weight) is not nn.Parameter
    qat = api.quantize(mnist, "qat:steps=5,keep_float=features.0").quantized.module
    assert not _is_quantized_module(qat.get_submodule("features.0")) and _is_quantized_module(qat.get_submodule("features.3"))


def test_bad_pattern_is_one_error_line_and_writes_nothing(capsys, tmp_path):
    out = tmp_path / "never"
    code, _, err = invoke(capsys, "quantize", "mnist-cnn", "--n-calibration", "32", "--n-evaluation", "64",
                          "--recipe", "static:keep_float=fc9", "--out", str(out))
    line = error_line(err)
    assert code == 2 and "'fc9'" in line and "features.0" in line
    assert not out.exists() and not list(tmp_path.iterdir())
