"""type=auto: Fisher-estimated losses, the budgeted allocation (against brute force), the recipe."""
from __future__ import annotations

import itertools
import random

import pytest
import torch

from quantwise.config import GGUFWeights, parse_recipe
from quantwise.errors import QuantwiseError
from quantwise.gguf.allocate import TypeCost, allocate, estimated_losses, tensor_bytes


def _problem(rng: random.Random) -> tuple[dict[str, list[TypeCost]], int]:
    costs = {}
    for i in range(rng.randint(2, 6)):
        scale = rng.choice([1, 2, 3])  # tensors of different sizes
        costs[f"t{i}"] = [TypeCost(t, b * scale * 10, rng.random() * scale / (b - 8) ** rng.uniform(0.5, 3))
                          for t, b in [("A", 9), ("B", 10), ("C", 11), ("D", 13), ("E", 17)]]  # losses need not fall with bytes
    lo = sum(min(c.bytes for c in o) for o in costs.values())
    hi = sum(max(c.bytes for c in o) for o in costs.values())
    return costs, rng.randint(lo, hi)


def test_the_allocation_is_the_brute_force_optimum_within_the_budget():
    rng = random.Random(0)
    for _ in range(200):
        costs, budget = _problem(rng)
        got = allocate(costs, budget)
        assert sum(c.bytes for c in got.values()) <= budget
        best = min(sum(c.loss for c in combo) for combo in itertools.product(*costs.values()) if sum(c.bytes for c in combo) <= budget)
        assert sum(c.loss for c in got.values()) == pytest.approx(best, rel=1e-9)


def test_a_coarse_budget_grid_always_fits_even_at_the_smallest_file():
    rng = random.Random(1)
    for trial in range(300):
        costs, budget = _problem(rng)
        floor = sum(min(c.bytes for c in o) for o in costs.values())
        budget = (floor, floor + 1, floor + 7, budget)[trial % 4]  # near the cheapest file: where rounding up bites
        got = allocate(costs, budget, states=16)  # upgrades counted in units of (budget - floor) / 16, rounded up
        assert sum(c.bytes for c in got.values()) <= budget
        if budget == floor:
            assert all(c.bytes == min(o.bytes for o in costs[n]) for n, c in got.items())


def test_a_budget_below_the_cheapest_types_is_refused():
    costs = {"a": [TypeCost("Q4_0", 100, 1.0), TypeCost("Q8_0", 200, 0.1)]}
    with pytest.raises(ValueError, match="below the smallest file"):
        allocate(costs, 99)
    assert allocate(costs, 100)["a"].type == "Q4_0" and allocate(costs, 10**6)["a"].type == "Q8_0"


def test_estimated_losses_weight_the_error_by_the_fisher_information():
    torch.manual_seed(0)
    w = torch.randn(8, 256)
    ones = torch.ones(8, 8)
    costs = {c.type: c for c in estimated_losses(w, ones)}
    assert set(costs) == {"Q4_0", "Q4_K", "Q4_1", "Q5_0", "Q5_K", "Q5_1", "Q6_K", "Q8_0"}  # 256 columns fit every type
    assert costs["Q8_0"].loss < costs["Q6_K"].loss < costs["Q5_K"].loss < costs["Q4_K"].loss
    assert costs["Q8_0"].bytes == tensor_bytes("Q8_0", 8, 256) == 8 * 8 * 34
    half = {c.type: c.loss for c in estimated_losses(w, torch.cat([ones[:, :4], torch.zeros(8, 4)], 1))}
    assert 0 < half["Q4_0"] < costs["Q4_0"].loss  # columns the loss does not feel cost nothing
    assert [c.type for c in estimated_losses(torch.randn(4, 96), torch.ones(4, 3))] == ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
    with pytest.raises(ValueError, match="fisher must be"):
        estimated_losses(w, torch.ones(8, 4))


def test_fisher_blocks_are_the_mean_squared_gradient_per_32_columns():
    from transformers import LlamaConfig, LlamaForCausalLM

    from quantwise.llm.fisher import fisher_blocks

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    batches = torch.randint(0, 96, (3, 16))
    names = {"model.layers.0.mlp.down_proj": model.model.layers[0].mlp.down_proj.weight, "model.embed_tokens": model.model.embed_tokens.weight}
    got = fisher_blocks(model, names, batches)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())  # the model is left as it was
    expected = {n: torch.zeros(p.shape[0], p.shape[1] // 32) for n, p in names.items()}
    for i in range(3):
        model.zero_grad()
        ids = batches[i : i + 1]
        model(ids, labels=ids).loss.backward()
        for n, p in names.items():  # the tied table's gradient holds both its uses
            expected[n] += p.grad.pow(2).reshape(p.shape[0], -1, 32).mean(-1) / 3
    for n in names:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-5, atol=1e-12)


def test_the_auto_recipe_parses_and_refuses_what_cannot_work():
    r = parse_recipe("gguf:type=auto,budget=q4_k_m,types=Q4_K|Q5_0|q6_k|Q8_0")
    assert isinstance(r, GGUFWeights) and r.type == "AUTO" and r.budget == "Q4_K_M" and r.types == ("Q4_K", "Q5_0", "Q6_K", "Q8_0")
    assert r.file_type == "Q4_K_M" and r.needs_calibration
    assert parse_recipe("gguf:type=auto,bpw=5,algorithm=reference").bpw == 5.0
    for bad, words in [("gguf:type=auto,types=Q3_K", "Q3_K"), ("gguf:type=Q4_0,types=Q4_0", "only to type=auto"),
                       ("gguf:type=auto,bpw=3", "bits per weight"), ("gguf:type=auto,budget=auto", "budget")]:
        with pytest.raises(QuantwiseError, match=words):
            parse_recipe(bad)
