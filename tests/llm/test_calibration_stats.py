"""The per-block calibration pass stops once AWQ's samples are full: the same samples as a full
pass, fewer forwards. Tiny random Llama (a shape and bookkeeping test, not accuracy)."""
from __future__ import annotations

import torch
from torch import nn

import quantwise.llm.quantize as Q


def _block_and_state(windows: int = 12, context: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(config).eval()
    state = Q._first_layer_inputs(model, torch.randint(0, 64, (windows, context)))
    block = model.model.layers[0]
    return block, {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}, state


def test_stats_stop_when_the_samples_are_full_and_keep_the_same_samples(monkeypatch):
    monkeypatch.setattr(Q, "MAX_SAMPLE_TOKENS", 3 * Q.CALIBRATION_BATCH * 64)  # every token of a batch is kept here: full after 3 of 6
    block, linears, state = _block_and_state()
    calls = []
    handle = block.register_forward_pre_hook(lambda *a: calls.append(1))
    full = Q._collect_stats(block, linears, state, hessian=False, samples=True)
    n_full = len(calls)
    early = Q._collect_stats(block, linears, state, hessian=False, samples=True, until_sampled=True)
    handle.remove()
    assert n_full == 1 + len(state) and len(calls) - n_full == 1 + 3  # the id probe, then 3 batches instead of 6
    for name in linears:
        assert early[name].kept == full[name].kept == Q.MAX_SAMPLE_TOKENS
        assert torch.equal(early[name].x(), full[name].x())


def test_a_pass_that_needs_every_token_does_not_stop(monkeypatch):
    monkeypatch.setattr(Q, "MAX_SAMPLE_TOKENS", 64)
    block, linears, state = _block_and_state()
    calls = []
    handle = block.register_forward_pre_hook(lambda *a: calls.append(1))
    Q._collect_stats(block, linears, state, hessian=True, samples=False)
    handle.remove()
    assert len(calls) == 1 + len(state)
