"""ONNX export of language models: MatMulNBits layout (exact, random weights: a shape test) and
SmolLM2-135M int4-hqq end to end (real weights, real evaluation articles, ONNX Runtime)."""
from __future__ import annotations

import json

import pytest
import torch

from quantwise.config import parse_recipe
from quantwise.errors import QuantwiseError
from quantwise.export import export_artifact
from quantwise.export.onnx_llm import check, layout, unpack
from quantwise.llm import artifact
from quantwise.algorithms import GroupGrid, GroupQuant
from quantwise.algorithms.grid import qparams_minmax, quantize_with
from quantwise.llm.model import load_language_model
from quantwise.llm.quantize import quantize_lm
from tests.helpers import error_line, invoke


@pytest.mark.parametrize("bits,group,symmetric,float_zero", [
    (4, 64, False, False), (4, 32, False, True), (4, 128, True, False), (8, None, True, False), (8, 64, False, False),
])
def test_matmulnbits_layout_dequantizes_to_the_same_weight(bits, group, symmetric, float_zero):
    torch.manual_seed(0)
    w = torch.randn(48, 1536 if group == 128 else 576)  # 576 = SmolLM2's hidden size: per-row int8 is not a power of two
    grid = GroupGrid(bits, group, symmetric)
    scale, zero = qparams_minmax(w, grid)
    if float_zero:  # HQQ's zero-points are not integers
        zero = zero + torch.rand_like(zero)
    quant = GroupQuant(quantize_with(w, scale, zero, grid), scale, zero, grid)
    packed, scales, zeros, block, offset = layout(quant)
    assert packed.dtype == torch.uint8 and block in (16, 32, 64, 128)
    assert packed.shape == (48, w.shape[1] // block, block * bits // 8)
    # integer zero-points always (ONNX Runtime's fast kernels); a fractional rest goes to the offset
    assert zeros.dtype == torch.uint8 and (offset is None) == (not float_zero)
    if not float_zero:
        assert torch.equal(unpack(packed, scales, zeros, w.shape[1], bits, block), quant.dequantize())
    else:
        assert offset.shape == (w.shape[1] // block, 48)
        weight = unpack(packed, scales, zeros, w.shape[1], bits, block) - offset.t().repeat_interleave(block, dim=1)
        torch.testing.assert_close(weight, quant.dequantize(), rtol=0, atol=1e-6)


def test_the_exported_linear_computes_the_dequantized_linear_with_its_bias():
    from quantwise.export.onnx_llm import NBitsLinear

    torch.manual_seed(0)
    w, bias, x = torch.randn(32, 128), torch.randn(32), torch.randn(3, 5, 128)
    grid = GroupGrid(4, 32)
    scale, zero = qparams_minmax(w, grid)
    quant = GroupQuant(quantize_with(w, scale, zero, grid), scale, zero, grid)
    torch.testing.assert_close(NBitsLinear(quant, bias)(x), torch.nn.functional.linear(x, quant.dequantize(), bias))
    fractional = GroupQuant(quant.qdata, scale, zero + torch.rand_like(zero), grid)  # HQQ's zero-points
    torch.testing.assert_close(NBitsLinear(fractional, bias)(x), torch.nn.functional.linear(x, fractional.dequantize(), bias))


def test_recipes_with_quantized_activations_are_refused():
    with pytest.raises(QuantwiseError, match="activations are quantized"):
        check(parse_recipe("w8a8"))
    check(parse_recipe("int4-awq-gptq"))


@pytest.fixture(scope="module")
def smol_int4(tmp_path_factory):
    lm = load_language_model("smollm2-135m", defer_blocks=True)
    q = quantize_lm(lm, parse_recipe("int4-hqq"))
    return artifact.save(q, lm.tokenizer, "smollm2-135m", tmp_path_factory.mktemp("lm") / "smol-int4", verify=False)


@pytest.fixture(scope="module")
def exported(smol_int4):
    return export_artifact(smol_int4, "onnx", samples=2)


def test_int4_export_runs_in_onnx_runtime_with_perplexity_parity(exported, smol_int4):
    import onnx

    p = exported.parity
    assert p.passed and abs(p.delta_pct) <= 0.5 and p.windows == 2 and p.context == 512
    # the export is as far from float as the int4 model is (HQQ g64 costs ~10-20 % perplexity here)
    assert p.perplexity_float < p.perplexity_export and abs(p.perplexity_export / p.perplexity_float - p.perplexity_quantized / p.perplexity_float) < 0.01
    assert p.top1_agreement > 0.95 and p.logits_cosine > 0.99
    # the KV cache: tokens fed one at a time give the one-pass logits; greedy generation follows the PyTorch model
    assert p.cache_cosine_min >= 0.999 and p.generated_tokens == 32 and p.generated_equal >= 8
    graph = onnx.load(str(exported.path), load_external_data=False).graph
    assert [i.name for i in graph.input][:3] == ["input_ids", "past_key_0", "past_value_0"] and len(graph.input) == 1 + 2 * 30
    assert [o.name for o in graph.output][:2] == ["logits", "present_key_0"]
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    layers = json.loads((smol_int4 / "manifest.json").read_text())["meta"]["layers"]
    assert len(nbits) == len(layers) == 30 * 7 + 1  # every block Linear in int4 and the output layer in int8
    # the tied token table is the output layer's int8 codes (a Gather + scale; with a bf16 table the file was
    # 161.4 MB); float model 538 MB. HQQ's fractional zero-points add a float32 correction per block and
    # output (export/onnx_llm.layout), as large as the scales
    assert exported.size_mb < 0.27 * 538
    inits = {i.name: i for i in graph.initializer}
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits and inits[n.input[0]].dims[0] == 49152]
    assert gathers and all(inits[n.input[0]].data_type == onnx.TensorProto.INT8 for n in gathers)
    manifest = json.loads((smol_int4 / "manifest.json").read_text())
    assert manifest["exports"]["onnx"]["parity"]["passed"] is True


def test_language_model_bad_exports_are_one_line(smol_int4, exported, capsys, tmp_path):
    code, _, err = invoke(capsys, "export", str(smol_int4), "--to", "pt2", "--out", str(tmp_path / "m.pt2"))
    assert code != 0 and "ONNX (MatMulNBits) and GGUF (llama.cpp)" in error_line(err) and not (tmp_path / "m.pt2").exists()
    code, _, err = invoke(capsys, "export", str(smol_int4), "--to", "onnx")
    assert code != 0 and "already exists" in error_line(err)
    code, _, err = invoke(capsys, "export", str(smol_int4), "--to", "onnx", "--data", "x.pt", "--out", str(tmp_path / "m.onnx"))
    assert code != 0 and "--data does not apply" in error_line(err) and not (tmp_path / "m.onnx").exists()


def test_generation_through_the_cache_equals_scoring_the_whole_sequence(exported):
    from quantwise.export.onnx_lm_runtime import OnnxLM

    lm = OnnxLM(exported.path, 2)
    prompt = torch.tensor([1, 504, 3458, 282, 4649, 314, 253, 3218])
    generated = list(lm.tokens(prompt, 6))
    whole = lm(torch.cat([prompt, torch.tensor(generated[:-1])]).view(1, -1))[0]
    # each generated token is the argmax the one-pass graph gives at its position (batch 2: the batch dimension is dynamic)
    assert whole[len(prompt) - 1 :].argmax(-1).tolist() == generated
    two = lm(torch.stack([prompt, prompt.flip(0)]))
    assert two.shape[0] == 2 and torch.allclose(two[0], lm(prompt.view(1, -1))[0], atol=1e-3)
