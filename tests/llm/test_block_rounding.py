"""SignRound per decoder block (``weight-only:algorithm=signround``): mechanics on a tiny random
Llama (random weights are fine here: shapes, grids, fallbacks and the pipeline, not accuracy;
the accuracy gains on SmolLM2's real blocks are pinned in test_algorithm_gains.py)."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from quantwise.config import WeightOnly, parse_recipe
from quantwise.errors import QuantwiseError
from quantwise.algorithms import GroupGrid, GroupQuant, rtn
from quantwise.llm.block_rounding import round_block
from quantwise.llm.model import LanguageModel, load_language_model
from quantwise.llm.quantize import quantize_lm
from quantwise.llm.runtime import materialize
from quantwise.llm.text import wiki_split

GRID = GroupGrid(4, 32)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_llama(vocab: int = 96, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def block_case(windows: int = 16, tokens: int = 24):
    """Block 0 of a tiny Llama, the keyword inputs it receives, random hidden states and its float outputs."""
    model = tiny_llama()
    block = model.model.layers[0]
    captured = {}

    def hook(module, args, kwargs):
        captured.update({k: v for k, v in kwargs.items() if k != "hidden_states"})

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        model(torch.randint(0, 96, (1, tokens)), use_cache=False)
    handle.remove()
    x = torch.randn(windows, tokens, 64)
    with torch.no_grad():
        y = block(x, **captured)
    linears = {n: m for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    return block, linears, captured, x, y


def block_mse(block, linears, kwargs, layers, x, y) -> float:
    saved = {n: m.weight.data for n, m in linears.items()}
    try:
        for n, m in linears.items():
            m.weight.data = layers[n].dequantize()
        with torch.no_grad():
            return float((block(x, **kwargs) - y).square().mean())
    finally:
        for n, m in linears.items():
            m.weight.data = saved[n]


def test_learned_codes_sit_on_an_int4_grid_and_beat_nearest_rounding():
    block, linears, kwargs, x, y = block_case()
    before = {n: m.weight.detach().clone() for n, m in linears.items()}
    result = round_block(block, linears, kwargs, x, y, GRID, iterations=60, seed=3)
    assert result.fallback is None
    assert all(torch.equal(before[n], m.weight) for n, m in linears.items())  # the block itself is untouched
    assert set(result.layers) == set(linears)
    for name, quant in result.layers.items():
        assert isinstance(quant, GroupQuant) and quant.qdata.dtype == torch.uint8 and quant.shape == linears[name].weight.shape
        assert int(quant.qdata.max()) <= 15 and bool((quant.scale > 0).all())
        assert torch.equal(quant.zero, quant.zero.round()) and 0 <= float(quant.zero.min()) and float(quant.zero.max()) <= 15
    rtn_layers = {n: rtn(m.weight.data, GRID) for n, m in linears.items()}
    rtn_mse = block_mse(block, linears, kwargs, rtn_layers, x, y)
    learned = block_mse(block, linears, kwargs, result.layers, x, y)
    assert result.rtn_mse == pytest.approx(rtn_mse, rel=1e-4)
    assert result.mse == pytest.approx(learned, rel=1e-4)  # the codes returned are the ones that were scored
    assert learned < 0.8 * rtn_mse
    again = round_block(block, linears, kwargs, x, y, GRID, iterations=60, seed=3)
    assert all(torch.equal(again.layers[n].qdata, result.layers[n].qdata) for n in linears)  # deterministic under a seed


def test_a_block_whose_loss_is_not_finite_keeps_nearest_rounding():
    block, linears, kwargs, x, y = block_case()
    y[0, 0, 0] = float("nan")
    result = round_block(block, linears, kwargs, x, y, GRID, iterations=5)
    assert result.fallback == "the reconstruction loss was not finite"
    for name, m in linears.items():
        assert torch.equal(result.layers[name].qdata, rtn(m.weight.data, GRID).qdata)


def test_block_inputs_that_differ_between_windows_are_refused():
    block, linears, kwargs, x, y = block_case()
    mask = torch.zeros(2, 1, x.shape[1], x.shape[1])
    mask[1, ..., 0] = -1e9
    with pytest.raises(QuantwiseError, match="differs between calibration windows"):
        round_block(block, linears, {**kwargs, "attention_mask": mask}, x, y, GRID, iterations=1)


def test_the_recipe_refuses_too_little_calibration_data_and_no_steps():
    assert parse_recipe("int4-signround") == WeightOnly(algorithm="signround")
    assert parse_recipe("int4-signround").needs_calibration
    with pytest.raises(QuantwiseError, match=r"calibration_samples >= 8 and samples x context >= 2048"):
        parse_recipe("weight-only:algorithm=signround,calibration_samples=4")
    with pytest.raises(QuantwiseError, match=r"8 calibration windows x 64 tokens are too few"):
        parse_recipe("weight-only:algorithm=signround,calibration_samples=8,calibration_context=64")
    with pytest.raises(QuantwiseError, match="iterations=0"):
        parse_recipe("weight-only:algorithm=signround,iterations=0")


def test_signround_runs_through_the_language_model_pipeline():
    tokenizer = load_language_model("smollm2-135m", defer_blocks=True).tokenizer
    lm = LanguageModel("tiny", tiny_llama(vocab=len(tokenizer), layers=2), tokenizer, wiki_split(), "tiny random Llama")
    seen = []

    def progress(stage, items, total):
        seen.append((stage, total))
        return items

    recipe = WeightOnly(algorithm="signround", group_size=32, iterations=8, calibration_samples=8, calibration_context=256)
    q = quantize_lm(lm, recipe, progress)
    assert ("quantizing blocks", 2) in seen
    names = {f"model.layers.{i}.{p}" for i in range(2) for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                                  "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    assert names | {"lm_head"} == set(q.layers)
    assert all(q.model.get_submodule(n).weight.numel() == 0 for n in names)  # float weights released
    model = materialize(q.model, q.layers, q.recipe)
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.shape == (1, 4, len(tokenizer)) and torch.isfinite(logits).all()
