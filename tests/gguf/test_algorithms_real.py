"""Each GGUF algorithm beats llama.cpp's reference rule on real SmolLM2 layers, measured on
held-out text (evaluation articles), by a stated margin; calibration uses other articles."""
import pytest
import torch

from quantwise.gguf.formats import FORMATS
from quantwise.gguf.quant import quantize_weight
from quantwise.algorithms import HessianAccumulator

pytestmark = pytest.mark.slow
LAYERS = ("model.layers.2.self_attn.q_proj", "model.layers.2.mlp.down_proj", "model.layers.20.mlp.down_proj")


@pytest.fixture(scope="module")
def real_layers():
    from quantwise.llm.model import load_language_model
    from quantwise.llm.perplexity import token_ids, windows

    lm = load_language_model("smollm2-135m")
    model = lm.model
    cal = windows(token_ids(lm.tokenizer, lm.text.calibration, 32 * 512), 512, 32 * 512)
    held = windows(token_ids(lm.tokenizer, lm.text.evaluation, 4 * 512), 512, 4 * 512)
    found = {}
    for name in LAYERS:
        module = model.get_submodule(name)
        found[name] = {"w": module.weight.data.clone(), "h": HessianAccumulator(module.in_features), "x": []}
    phase = {"cal": True}

    def hook(name):
        def f(mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            if phase["cal"]:
                found[name]["h"].add(x)
            else:
                found[name]["x"].append(x)
        return f

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in LAYERS]
    with torch.no_grad():
        for i in range(0, len(cal), 4):
            model(cal[i : i + 4], use_cache=False)
        phase["cal"] = False
        model(held, use_cache=False)
    for h in handles:
        h.remove()
    return {n: (v["w"], v["h"].hessian(), torch.cat(v["x"])) for n, v in found.items()}


def _held_out_error(w, quant, x):
    ref = x @ w.T
    return float(((x @ quant.dequantize().T - ref) ** 2).sum() / (ref**2).sum())


# Symmetric formats only: SmolLM2's weights were stored as Q4_1 (affine 4-bit, blocks of 32), so the affine
# formats with 32-weight sub-blocks (Q4_1, Q5_1, Q4_K, Q5_K) recover that source grid whatever the rule, and
# comparing rules there measures the source file, not the rule (on layer 20's down projection Q4_K's
# reference and searched rules tie and GPTQ's compensation is 5 % worse). The affine rules are compared
# on other weights in test_formats.py.
@pytest.mark.parametrize("type_name", ["Q4_0", "Q5_0", "Q8_0", "Q6_K"])
def test_searched_and_gptq_beat_llama_cpps_reference_rule_on_held_out_text(real_layers, type_name):
    fmt = FORMATS[type_name]
    for name, (w, h, x) in real_layers.items():
        if not fmt.fits(w.shape[1]):
            continue
        errors = {alg: _held_out_error(w, quantize_weight(w, fmt, alg, None if alg == "reference" else h), x)
                  for alg in ("reference", "searched", "gptq")}
        # measured: gptq 0.29-0.63x the reference's error, searched 0.53-0.75x
        assert errors["gptq"] < 0.8 * errors["reference"], (name, errors)
        assert errors["searched"] < 0.97 * errors["reference"], (name, errors)
        assert errors["gptq"] < errors["searched"], (name, errors)
