"""4-bit convolution and Linear weights with int8 activations on the PT2E path (``weight_bits=4``),
round-to-nearest and learned (AdaRound): the codes lie on a 16-level grid, are exactly what the
converted model, the artifact and the ONNX export hold, and on mnist-cnn's 10k test digits learned
rounding keeps top-1 accuracy within 0.3 points of float and beats nearest rounding's fidelity.
efficientnet-lite0 at 4 bits is measured by benchmarks/conv_w4_rounding.py (minutes, not a test)."""
from __future__ import annotations

import pytest
import torch

from quantwise.config import StaticInt8, parse_recipe
from quantwise.errors import QuantwiseError
from quantwise.methods import static_pt2e
from tests.methods.test_static_adaround import onnx_weight_codes

NEAREST = "static:path=pt2e,weight_bits=4"
LEARNED = "static-w4-adaround"


@pytest.fixture(scope="module")
def digits():
    """mnist-cnn with the official 10k test digits as its evaluation split, and float's outputs on them."""
    from quantwise import api
    from quantwise.evaluate.metrics import outputs

    bundle = api.load_model("mnist-cnn", n_calibration=512, n_evaluation=10000)
    return bundle, outputs(bundle.model, bundle.evaluation)


@pytest.fixture(scope="module")
def quantized(digits):
    from quantwise import api

    bundle, _ = digits
    return {name: api.quantize(bundle, spec) for name, spec in (("nearest", NEAREST), ("learned", LEARNED))}


def _weight_codes(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if k.endswith(static_pt2e.WEIGHT_SUFFIX)}


def test_the_preset_is_4_bit_adaround_on_pt2e():
    assert parse_recipe(LEARNED) == StaticInt8(path="pt2e", weight_bits=4, rounding="adaround")


def test_codes_are_4_bit_and_on_one_grid(quantized):
    nearest, learned = (quantized[k].quantized for k in ("nearest", "learned"))
    n_codes, l_codes = _weight_codes(nearest.tensors), _weight_codes(learned.tensors)
    assert set(n_codes) == set(l_codes) and len(n_codes) == 4
    for key in n_codes:
        for codes in (n_codes[key], l_codes[key]):
            assert codes.dtype == torch.int8 and int(codes.min()) >= -8 and int(codes.max()) <= 7
        # nearest uses the top of the grid somewhere; learned codes are one step from nearest's at most
        assert int(n_codes[key].abs().max()) >= 7
        assert int((n_codes[key].int() - l_codes[key].int()).abs().max()) <= 1
    # same scales (the grid) for both: only the codes differ
    grid = {k: v for k, v in nearest.tensors.items() if k not in n_codes}
    assert all(torch.equal(v, learned.tensors[k]) for k, v in grid.items())
    assert "4-bit weights" in " ".join(learned.notes)
    assert learned.meta["rounding"]["layers"] == 4


def test_learned_rounding_keeps_mnist_within_0_3_points_and_beats_nearest(digits, quantized):
    from quantwise.evaluate.metrics import fidelity, outputs

    bundle, reference = digits
    assert len(bundle.evaluation) == 10000
    float_top1 = fidelity("classification", reference, reference, bundle.evaluation.targets)["top1"]
    scores = {name: fidelity("classification", reference, outputs(r.quantized.module, bundle.evaluation), bundle.evaluation.targets)
              for name, r in quantized.items()}
    # measured: float 0.9905, nearest 0.9902 (KL 0.0071), learned 0.9900 (KL 0.0031)
    assert scores["learned"]["top1"] >= float_top1 - 0.003
    assert scores["learned"]["kl"] < 0.6 * scores["nearest"]["kl"]
    assert scores["learned"]["sqnr_db"] > scores["nearest"]["sqnr_db"] + 2.0


def test_4_bit_codes_survive_save_load_and_the_onnx_export(digits, quantized, tmp_path):
    pytest.importorskip("onnxruntime")
    from quantwise import api
    from quantwise.export import export_artifact

    bundle, _ = digits
    result = quantized["learned"]
    codes = _weight_codes(result.quantized.tensors)
    path = api.save(result, tmp_path / "w4")  # verifies a bit-identical reload
    loaded = api.load(path, arch=api.architecture(bundle))
    assert all(torch.equal(loaded.quantized.tensors[k], v) for k, v in codes.items())
    exported = export_artifact(path, "onnx", bundle=bundle, samples=256)
    assert exported.parity.passed
    weights = onnx_weight_codes(exported.path)
    assert len(weights) == 4
    for key, c in codes.items():  # exactly the learned 4-bit codes, in int8 containers
        assert any(w.shape == c.shape and torch.equal(w, c.long()) for w in weights), key
    assert all(int(w.min()) >= -8 and int(w.max()) <= 7 for w in weights)


def test_4_bit_weights_need_the_x86_backend_on_pt2e():
    with pytest.raises(QuantwiseError, match="implemented for backend x86, not xnnpack") as err:
        parse_recipe("static:path=pt2e,backend=xnnpack,weight_bits=4")
    assert "\n" not in str(err.value)


def test_keep_int8_keeps_the_named_layers_at_8_bits():
    import copy

    from quantwise.config import recipe_from_dict, recipe_to_dict
    from quantwise.methods.base import QuantData
    from tests.methods.test_static_adaround import _tiny

    model, data = _tiny()
    recipe = parse_recipe("static:path=pt2e,weight_bits=4,keep_int8=dw|fc")
    assert recipe.keep_int8 == ("dw", "fc") and recipe_from_dict(recipe_to_dict(recipe)) == recipe
    q = static_pt2e.quantize(copy.deepcopy(model), recipe, QuantData(data))
    codes = _weight_codes(q.tensors)
    wide = {k for k, v in codes.items() if int(v.abs().max()) > 8}
    assert wide == {"dw.weight.int8", "fc.weight.int8"}
    assert all(int(codes[k].min()) >= -8 and int(codes[k].max()) <= 7 for k in ("stem.weight.int8", "pw.weight.int8"))
    assert "8-bit weights kept (2): dw, fc" in q.notes


@pytest.mark.parametrize("spec, words", [
    ("static:path=pt2e,keep_int8=fc", "keep_int8 names layers that keep 8-bit weights in a 4-bit pt2e recipe"),
    ("static:path=fx,weight_bits=4,keep_int8=fc", "keep_int8 names layers that keep 8-bit weights in a 4-bit pt2e recipe"),
    ("static:path=pt2e,weight_bits=4,keep_int8=fc||dw", "keep_int8 holds an empty pattern"),
])
def test_keep_int8_refusals_are_one_line(spec, words):
    with pytest.raises(QuantwiseError, match=words) as err:
        parse_recipe(spec)
    assert "\n" not in str(err.value)


def test_a_keep_int8_pattern_that_matches_nothing_lists_the_layers():
    import copy

    from quantwise.methods.base import QuantData
    from tests.methods.test_static_adaround import _tiny

    model, data = _tiny()
    with pytest.raises(QuantwiseError, match="keep_int8 pattern 'head' matches no layer .* use module names such as stem, dw, pw, fc"):
        static_pt2e.quantize(copy.deepcopy(model), parse_recipe("static:path=pt2e,weight_bits=4,keep_int8=head"), QuantData(data))
