"""Language-model branches of the CLI commands (quantize, eval, compare, generate)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from quantwise.cli.common import out, progress
from quantwise.errors import QuantwiseError


def _recipe(recipe: str):
    from quantwise.config import check_language_recipe, parse_recipe

    parsed = parse_recipe(recipe)
    check_language_recipe(parsed, recipe)
    return parsed


def quantize(model: str, recipe: str, *, output: Path, text: Optional[str], force: bool, evaluate: bool, eval_tokens: int, context: int) -> None:
    from quantwise.llm import artifact
    from quantwise.llm.model import load_language_model
    from quantwise.llm.perplexity import perplexity, token_ids, windows
    from quantwise.llm.quantize import check_recipe_fits, quantize_lm
    from quantwise.llm.runtime import materialize

    parsed = _recipe(recipe)
    from quantwise.artifact.store import check_replaceable

    check_replaceable(output, force)
    lm = load_language_model(model, text, defer_blocks=not evaluate)  # blocks read as quantization reaches them
    lm.check_context(context)
    check_recipe_fits(lm.model, parsed)  # before any slow work
    metrics: dict[str, Any] = {}
    ids = windows(token_ids(lm.tokenizer, lm.text.evaluation, eval_tokens), context, eval_tokens) if evaluate else None
    if ids is not None:
        metrics["float_perplexity"] = perplexity(lm.model, ids, progress=progress).perplexity
    q = quantize_lm(lm, parsed, progress)
    model_q = materialize(q.model, q.layers, q.recipe)
    if ids is not None:
        result = perplexity(model_q, ids, progress=progress)
        metrics.update(perplexity=result.perplexity, perplexity_setting=result.setting)
    path = artifact.save(q, lm.tokenizer, model, output, metrics=metrics, overwrite=force)
    for note in q.notes:
        out.print(f"[dim]{note}[/]")
    if metrics:
        delta = 100 * (metrics["perplexity"] / metrics["float_perplexity"] - 1)
        out.print(f"perplexity {metrics['perplexity']:.3f} (float {metrics['float_perplexity']:.3f}, {delta:+.2f}%) on {metrics['perplexity_setting']}")
    out.print(f"wrote {path} in {q.seconds:.1f} s of quantization")




def evaluate(target: str, *, text: Optional[str], eval_tokens: int, context: int) -> None:
    """Perplexity of a language-model artifact, or of a language model in float (a .gguf file,
    a Hugging Face directory or a zoo name), on the evaluation articles."""
    from quantwise.llm import artifact
    from quantwise.llm.model import load_language_model
    from quantwise.llm.perplexity import perplexity, token_ids, windows
    from quantwise.llm.text import text_split

    if artifact.is_language_model_artifact(target):
        loaded = artifact.load(target)
        model, tokenizer, label = loaded.model, loaded.tokenizer, target
    else:
        lm = load_language_model(target, text)
        lm.check_context(context)
        model, tokenizer, label = lm.model, lm.tokenizer, f"{target} float"
    split = text_split(text)
    ids = windows(token_ids(tokenizer, split.evaluation, eval_tokens), context, eval_tokens)
    result = perplexity(model, ids, progress=progress)
    out.print(f"{label}: perplexity {result.perplexity:.3f} on {result.setting} of {split.description}")


def compare(model: str, *, recipes: str, json_path: Optional[Path], html_path: Optional[Path], text: Optional[str], eval_tokens: int, context: int,
            compile_: bool, repeats: int, target: str = "pytorch") -> None:
    from quantwise.config import LLM_COMPARE_DEFAULTS
    from quantwise.llm.compare import LLMCompareOptions, compare_lm
    from quantwise.cli.outputs import write_outputs
    from quantwise.report.llm_html import llm_compare_document
    from quantwise.report.llm_table import print_llm_compare

    from quantwise.config import GGUF_PRESETS
    from quantwise.llm.compare_llamacpp import RUNTIME

    if target not in ("pytorch", RUNTIME):
        raise QuantwiseError(f"--target {target} does not run language models", f"use --target pytorch, or {RUNTIME} (GGUF files timed in llama.cpp)")
    names = tuple(r.strip() for r in recipes.split(",") if r.strip()) if recipes else (GGUF_PRESETS if target == RUNTIME else LLM_COMPARE_DEFAULTS)
    for name in names:
        _recipe(name)
    if eval_tokens < context:
        raise QuantwiseError(f"--eval-tokens {eval_tokens} is less than one window of {context}", "use --eval-tokens >= --context (20000+ for a stable perplexity)")
    opts = LLMCompareOptions(recipes=names, context=context, eval_tokens=eval_tokens, compile=compile_, repeats=repeats, text=text, progress=progress, target=target)
    report = compare_lm(model, opts)
    print_llm_compare(report, out)
    write_outputs(report.to_dict(), lambda: llm_compare_document(report), json_path, html_path, out)


def generate(target: str, *, prompt: str, max_new_tokens: int, compile_: bool, chat: bool) -> None:
    import torch

    from quantwise.llm import artifact
    from quantwise.llm.decode import Decoder

    if not prompt.strip():
        raise QuantwiseError("the prompt is empty", "give some text to continue, e.g. \"The capital of France is\"")
    if max_new_tokens < 1:
        raise QuantwiseError("--max-new-tokens must be at least 1", "e.g. --max-new-tokens 64")
    loaded = artifact.load(target)
    tok = loaded.tokenizer
    if chat and getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        ids = torch.as_tensor(ids).view(-1)
    else:
        ids = torch.tensor(tok(prompt)["input_ids"])
    limit = int(getattr(loaded.model.config, "max_position_embeddings", 2048))
    if ids.numel() + max_new_tokens > limit:
        raise QuantwiseError(f"prompt ({ids.numel()} tokens) + {max_new_tokens} new tokens exceed the model's context ({limit})", "shorten the prompt or lower --max-new-tokens")
    decoder = Decoder(loaded.model, ids.numel() + max_new_tokens, compiled=compile_)
    produced: list[int] = []
    printed = ""
    for token in decoder.tokens(ids, max_new_tokens, eos=tok.eos_token_id):
        produced.append(token)
        text = tok.decode(produced, skip_special_tokens=True)
        sys.stdout.write(text[len(printed):])
        sys.stdout.flush()
        printed = text
    sys.stdout.write("\n")


def auto(model: str, *, max_drop: Optional[float], objective: str, out_dir: Optional[Path], recipe_out: Optional[Path], candidates: Optional[str],
         compile_: bool, text: Optional[str], json_path: Optional[Path], html_path: Optional[Path], force: bool) -> None:
    from quantwise.cli.outputs import auto_outputs, write_outputs
    from quantwise.llm.auto import DEFAULT_CANDIDATES, auto_lm, write_outputs as write_winner
    from quantwise.llm.compare import LLMCompareOptions
    from quantwise.report.llm_html import llm_compare_document
    from quantwise.report.llm_table import print_llm_auto

    names = tuple(r.strip() for r in candidates.split(",") if r.strip()) if candidates else DEFAULT_CANDIDATES
    for name in names:
        _recipe(name)
    recipe_path = auto_outputs(model, out_dir, recipe_out, force)
    report = auto_lm(model, 2.0 if max_drop is None else max_drop, objective, LLMCompareOptions(recipes=names, compile=compile_, text=text, progress=progress))
    write_winner(report, model, recipe_path, out_dir, text, overwrite=force)
    print_llm_auto(report, out)
    write_outputs(report.to_dict(), lambda: llm_compare_document(report.compare), json_path, html_path, out)
