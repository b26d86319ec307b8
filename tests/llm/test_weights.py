"""Private-memory safetensors loading (quantwise.llm.weights): same model as from_pretrained,
no file mapping, clear refusals. Tiny random Llama models: this is about bytes, not accuracy."""
from __future__ import annotations

import pytest
import torch

from quantwise.llm.weights import load_private, read_header


def _tiny(tmp_path, tie: bool = True, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tie)
    model = LlamaForCausalLM(config).to(dtype).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model


@pytest.mark.parametrize("tie", [True, False])
def test_loads_the_same_model_as_from_pretrained(tmp_path, tie):
    from transformers import AutoModelForCausalLM

    _tiny(tmp_path, tie)
    ours, _ = load_private(tmp_path)
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, theirs(ids).logits)
    assert (ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()) == tie


def test_other_dtypes_are_converted(tmp_path):
    stored = _tiny(tmp_path, dtype=torch.bfloat16)
    ours, _ = load_private(tmp_path)
    assert ours.model.norm.weight.dtype == torch.float32
    torch.testing.assert_close(ours.model.layers[0].mlp.up_proj.weight, stored.model.layers[0].mlp.up_proj.weight.float())


def test_keys_that_do_not_match_fall_back_and_bad_files_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    _tiny(tmp_path)
    path = tmp_path / "model.safetensors"
    tensors = load_file(path)
    save_file({("renamed." + k): v for k, v in tensors.items()}, path, metadata={"format": "pt"})
    assert load_private(tmp_path) is None  # renamed keys: the caller uses from_pretrained
    save_file(tensors, path, metadata={"format": "pt"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="ends early|bytes stored"):
        load_private(tmp_path)
    path.write_bytes(b"\xff" * 8 + data[8:])
    with pytest.raises(ValueError, match="header length"):
        read_header(path)


def test_deferred_blocks_are_read_on_demand_and_guarded(tmp_path):
    stored = _tiny(tmp_path)
    model, deferred = load_private(tmp_path, defer_blocks=True)
    assert deferred.pending == [0, 1]
    assert model.model.layers[1].self_attn.q_proj.weight.numel() == 0
    assert torch.equal(model.model.embed_tokens.weight, stored.model.embed_tokens.weight)  # not deferred
    ids = torch.randint(0, 64, (1, 5))
    deferred.load(0)
    with pytest.raises(RuntimeError, match="block 1 ran before its weights were read"):
        model(ids)
    deferred.load_all()
    assert deferred.pending == []
    a, b = model.state_dict(), stored.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, stored(ids).logits)


def test_weight_only_activations_follow_the_cpu_unless_given(monkeypatch):
    """auto: bfloat16 where the CPU runs it natively, float32 where it would be emulated (AVX2-only
    x86); an explicit choice is kept; the choice is said in a note and recorded in the recipe."""
    from quantwise import versions
    from quantwise.config import WeightOnly
    from quantwise.llm.runtime import for_this_machine, run_dtype

    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(versions, "native_bf16", lambda native=native: native)
        resolved, note = for_this_machine(WeightOnly())
        assert resolved.activations == expected and note
        assert run_dtype(WeightOnly()) == getattr(torch, expected)
        kept, none = for_this_machine(WeightOnly(activations="bfloat16"))
        assert kept.activations == "bfloat16" and none is None


def test_int4_codes_run_with_float32_activations_as_computed():
    """The CPU int4 kernel takes float32 activations too (used where bf16 is not native)."""
    from quantwise.config import WeightOnly
    from quantwise.algorithms import GroupGrid, rtn
    from quantwise.llm.runtime import _tensor

    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=g) * 0.05
    quant = rtn(w, GroupGrid(4, 64))
    weight = _tensor(quant, WeightOnly(activations="float32"), torch.float32)
    x = torch.randn(8, 256, generator=g)
    y = torch.nn.functional.linear(x, weight)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, x @ quant.dequantize().T, rtol=1e-3, atol=1e-3)


def test_a_config_larger_than_its_weights_is_refused_before_anything_is_allocated(tmp_path):
    """An untrusted Hugging Face directory: the architecture is sized on the meta device first."""
    import json

    from transformers import LlamaConfig, LlamaForCausalLM

    from quantwise.errors import QuantwiseError
    from quantwise.llm.weights import check_config_fits

    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path, safe_serialization=True)
    check_config_fits(tmp_path)  # the honest config passes
    config = json.loads((tmp_path / "config.json").read_text())
    config["vocab_size"] = 10**12
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(QuantwiseError, match="config describes a model of"):
        check_config_fits(tmp_path)


@pytest.mark.parametrize("tie", [True, False])
def test_a_module_set_aside_is_released_guarded_and_read_back(tmp_path, tie):
    """The token table leaves memory during the block loop and comes back, bit for bit, with load_all."""
    stored = _tiny(tmp_path, tie)
    model, deferred = load_private(tmp_path, defer_blocks=True)
    table = model.model.embed_tokens
    released = deferred.set_aside(table)
    assert released == table.num_embeddings * table.embedding_dim * 4 and table.weight.numel() == 0
    assert (model.lm_head.weight.numel() == 0) == tie  # a tied output layer is the same tensor; an untied one stays
    with pytest.raises(RuntimeError, match="Embedding set aside ran before its weights were read"):
        model(torch.randint(0, 64, (1, 5)))
    with pytest.raises(RuntimeError, match="already set aside"):
        deferred.set_aside(model.model.norm)
    deferred.load_all()
    assert not deferred.aside and deferred.pending == []
    a, b = model.state_dict(), stored.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()) == tie
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, stored(ids).logits)
