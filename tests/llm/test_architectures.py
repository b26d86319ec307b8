"""Causal LMs beyond Llama through the same pipeline: load from a directory, decode (compiled,
one compilation for every token), perplexity, quantize, save, reload and export to ONNX.

Tiny random configs (shape tests, not accuracy): grouped-query attention everywhere, tied and
untied token tables, sliding-window attention (Mistral) and a hybrid sliding/global cache
(Gemma 2), q/k norms (Qwen 3). The word-level tokenizer and the text are made up here.
"""
from __future__ import annotations

import random

import pytest
import torch

from quantwise.config import parse_recipe
from quantwise.errors import QuantwiseError
from quantwise.llm import artifact
from quantwise.llm.decode import Decoder
from quantwise.llm.model import load_language_model
from quantwise.llm.perplexity import perplexity, token_ids, windows
from quantwise.llm.quantize import quantize_lm
from quantwise.llm.runtime import materialize

VOCAB = 384
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _configs():
    import transformers as t

    return {
        "llama-tied": t.LlamaConfig(**COMMON, tie_word_embeddings=True),
        "qwen2-untied": t.Qwen2Config(**COMMON, tie_word_embeddings=False),
        "mistral-sliding": t.MistralConfig(**COMMON, sliding_window=16),
        "gemma2-hybrid": t.Gemma2Config(**COMMON, head_dim=16, sliding_window=16),
        "qwen3-qknorm": t.Qwen3Config(**COMMON, head_dim=16),
    }


ARCHS = ("llama-tied", "qwen2-untied", "mistral-sliding", "gemma2-hybrid", "qwen3-qknorm")


def _save_model(name: str, folder):
    """A directory as save_pretrained writes it: random weights, a byte-level BPE tokenizer trained on a made-up text, and that text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_configs()[name]).eval().save_pretrained(folder, safe_serialization=True)
    rng = random.Random(0)
    words = [" ".join(f"w{rng.randrange(4, 400)}" for _ in range(60)) for _ in range(180)]
    core = Tokenizer(models.BPE(unk_token=None))  # byte-level BPE, as the families' own tokenizers are
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(words, trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>").save_pretrained(folder)
    text = folder / "text"
    text.mkdir()
    for doc in range(6):  # separate documents: the split is by document
        (text / f"doc{doc}.txt").write_text("\n\n".join(words[doc * 30 : (doc + 1) * 30]))
    return folder


@pytest.fixture(scope="module", params=ARCHS)
def arch(request, tmp_path_factory):
    return request.param, _save_model(request.param, tmp_path_factory.mktemp(request.param))


def test_decode_compiles_once_for_every_token_and_matches_eager(arch, monkeypatch):
    name, folder = arch
    lm = load_language_model(str(folder), str(folder / "text"))
    compilations = []

    def counting_backend(gm, example_inputs):  # a graph handed to the compiler: counts (re)compilations
        compilations.append(len(gm.graph.nodes))
        return gm.forward

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, backend=counting_backend, **kw))
    torch._dynamo.reset()
    prompt = torch.tensor([1, 17, 42, 99, 7, 33, 120, 5, 300, 12])
    eager = list(Decoder(lm.model, 48).tokens(prompt, 24))
    compiled = Decoder(lm.model, 48, compiled=True)
    first = list(compiled.tokens(prompt, 24))  # past the sliding window of 16 tokens
    settled = len(compilations)
    again = list(compiled.tokens(prompt, 24))
    assert first == eager and again == eager, name
    sliding = bool(getattr(lm.model.config, "sliding_window", None))
    assert 1 <= settled <= (3 if sliding else 1), f"{name}: {settled} compilations for 24 tokens"
    assert len(compilations) == settled, f"{name}: recompiled while decoding again"


def test_perplexity_quantize_save_reload_and_onnx_export(arch, tmp_path):
    from quantwise.export.lm_export import export_language_model

    name, folder = arch
    lm = load_language_model(str(folder), str(folder / "text"))
    ids = windows(token_ids(lm.tokenizer, lm.text.evaluation, 256), 64, 256)
    float_ppl = perplexity(lm.model, ids).perplexity
    assert 100 < float_ppl < 2 * VOCAB  # random weights: about the vocabulary size
    q = quantize_lm(load_language_model(str(folder), str(folder / "text"), defer_blocks=True), parse_recipe("int4-rtn"))
    model = materialize(q.model, q.layers, q.recipe)
    assert abs(perplexity(model, ids).perplexity / float_ppl - 1) < 0.2
    path = artifact.save(q, lm.tokenizer, str(folder), tmp_path / "art")  # reloads and requires identical logits
    if len(set(getattr(lm.model.config, "layer_types", None) or ())) > 1:  # hybrid sliding / full attention
        with pytest.raises(QuantwiseError, match="hybrid cache"):
            export_language_model(path, "onnx", windows=2, context=64, text=str(folder / "text"))
        assert not (path / "model.onnx").exists()
        return
    exported = export_language_model(path, "onnx", windows=2, context=64, text=str(folder / "text"))
    assert exported.parity.passed, (name, exported.parity.to_dict())


@pytest.mark.parametrize("recipe", ["weight-only:bits=4,group_size=32,algorithm=awq-gptq,calibration_samples=4,calibration_context=32",
                                    "weight-only:bits=4,group_size=32,algorithm=awq-signround,iterations=3,calibration_samples=8,calibration_context=256"],
                         ids=["awq-gptq", "awq-signround"])
@pytest.mark.parametrize("name", ["llama-tied", "qwen2-untied"])
def test_calibrated_quantization_with_deferred_blocks_and_the_token_table_set_aside_gives_the_same_codes(name, recipe, tmp_path):
    """Deferred loading (blocks read one at a time, the token table out of memory during the block
    loop) changes memory, not results: codes and the restored float tensors equal the eager run's."""
    folder = _save_model(name, tmp_path)
    torch.manual_seed(0)
    eager = quantize_lm(load_language_model(str(folder), str(folder / "text")), parse_recipe(recipe))
    torch.manual_seed(0)
    deferred = quantize_lm(load_language_model(str(folder), str(folder / "text"), defer_blocks=True), parse_recipe(recipe))
    assert eager.layers.keys() == deferred.layers.keys()
    assert all(torch.equal(getattr(eager.layers[k], f), getattr(deferred.layers[k], f)) for k in eager.layers for f in ("qdata", "scale", "zero"))
    a, b = eager.model.state_dict(), deferred.model.state_dict()  # AWQ's scales folded into the norms alike
    assert all(torch.equal(a[k], b[k]) for k in a if "norm" in k)
    a, b = eager.model.get_input_embeddings().weight, deferred.model.get_input_embeddings().weight
    assert b.numel() > 0 and torch.equal(a, b)
