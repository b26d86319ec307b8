"""The commands for language models (a zoo LLM, a .gguf file or a Hugging Face directory, and
their artifacts): the same functions as ``cli/classic.py``, plus ``generate``."""
from __future__ import annotations

import sys
from typing import Any

from quantwise.cli.common import out, progress
from quantwise.cli.requests import AutoRequest, CompareRequest, DebugRequest, EvalRequest, QuantizeRequest, SensitivityRequest
from quantwise.errors import QuantwiseError
from quantwise.fanout import ClusterOptions, open_tasks


def _recipe(recipe: str):
    from quantwise.config import parse_recipe
    from quantwise.methods import method_for

    parsed = parse_recipe(recipe)
    method_for(parsed, "language")  # a classic recipe fails before the model loads, naming the ones that fit
    return parsed


def _refuse(**given: Any) -> None:
    """Options of classic models that a language model has no use for: named, with the fix."""
    used = [f"--{name.replace('_', '-')}" for name, value in given.items() if value is not None]
    if used:
        raise QuantwiseError(f"{', '.join(used)} {'does' if len(used) == 1 else 'do'} not apply to a language model",
                             "drop it: a language model calibrates and evaluates on text (--text FILE.txt or a folder gives another text)")


def quantize(r: QuantizeRequest) -> None:
    from quantwise import api
    from quantwise.artifact.store import check_replaceable
    from quantwise.llm.model import load_language_model
    from quantwise.llm.perplexity import perplexity
    from quantwise.llm.quantize import check_recipe_fits

    _refuse(data=r.data, n_calibration=r.n_calibration, n_evaluation=r.n_evaluation)
    parsed = _recipe(r.recipe)
    check_replaceable(r.output, r.force)
    lm = load_language_model(r.model, r.text, defer_blocks=not r.evaluate, progress=progress)  # blocks read as quantization reaches them
    lm.check_context(r.context)
    check_recipe_fits(lm.model, parsed)  # before any slow work
    metrics: dict[str, Any] = {}
    ids = lm.evaluation_windows(r.context, r.eval_tokens) if r.evaluate else None
    if ids is not None:
        metrics["float_perplexity"] = perplexity(lm.model, ids, progress=progress).perplexity
    result = api.quantize(lm, parsed, progress=progress)  # in place: the float weights are released block by block
    if ids is not None:
        scored = perplexity(result.quantized.model, ids, progress=progress)
        metrics.update(perplexity=scored.perplexity, perplexity_setting=scored.setting)
    path = api.save(result, r.output, metrics=metrics, overwrite=r.force)
    for note in result.quantized.notes:
        out.print(f"[dim]{note}[/]")
    if metrics:
        delta = 100 * (metrics["perplexity"] / metrics["float_perplexity"] - 1)
        out.print(f"perplexity {metrics['perplexity']:.3f} (float {metrics['float_perplexity']:.3f}, {delta:+.2f}%) on {metrics['perplexity_setting']}")
    out.print(f"wrote {path} in {result.quantized.seconds:.1f} s of quantization")


def evaluate(r: EvalRequest) -> None:
    """Perplexity of a language-model artifact, or of a language model in float (a .gguf file,
    a Hugging Face directory or a zoo name), on the evaluation articles."""
    from quantwise.llm import artifact
    from quantwise.llm.model import load_language_model
    from quantwise.llm.perplexity import perplexity, text_windows
    from quantwise.llm.text import text_split

    _refuse(model=r.model, data=r.data, n_evaluation=r.n_evaluation)
    if artifact.is_language_model_artifact(r.target):
        loaded = artifact.load(r.target)
        model, tokenizer, label = loaded.model, loaded.tokenizer, r.target
    else:
        lm = load_language_model(r.target, r.text, progress=progress)
        lm.check_context(r.context)
        model, tokenizer, label = lm.model, lm.tokenizer, f"{r.target} float"
    split = text_split(r.text)
    ids = text_windows(tokenizer, split.evaluation, r.context, r.eval_tokens)
    result = perplexity(model, ids, progress=progress)
    out.print(f"{label}: perplexity {result.perplexity:.3f} on {result.setting} of {split.description}")


DEFAULT_REPEATS = 5  # decode runs per measurement


def compare(r: CompareRequest) -> None:
    from quantwise.cli.outputs import write_outputs
    from quantwise.config import GGUF_PRESETS, LLM_COMPARE_DEFAULTS
    from quantwise.llm.compare import LLMCompareOptions, compare_lm
    from quantwise.llm.compare_llamacpp import RUNTIME
    from quantwise.report.llm_html import llm_compare_document
    from quantwise.report.llm_table import print_llm_compare

    _refuse(data=r.data, n_calibration=r.n_calibration, n_evaluation=r.n_evaluation)
    if r.target not in ("pytorch", RUNTIME):
        raise QuantwiseError(f"--target {r.target} does not run language models", f"use --target pytorch, or {RUNTIME} (GGUF files timed in llama.cpp)")
    names = tuple(x.strip() for x in r.recipes.split(",") if x.strip()) if r.recipes else (GGUF_PRESETS if r.target == RUNTIME else LLM_COMPARE_DEFAULTS)
    for name in names:
        _recipe(name)
    if r.eval_tokens < r.context:
        raise QuantwiseError(f"--eval-tokens {r.eval_tokens} is less than one window of {r.context}", "use --eval-tokens >= --context (20000+ for a stable perplexity)")
    opts = LLMCompareOptions(recipes=names, context=r.context, eval_tokens=r.eval_tokens, compile=r.compile, repeats=r.repeats or DEFAULT_REPEATS,
                             text=r.text, progress=progress, target=r.target)
    with open_tasks(ClusterOptions(r.workers, r.ray_address)) as tasks:
        report = compare_lm(r.model, opts, tasks)
    print_llm_compare(report, out)
    write_outputs(report.to_dict(), lambda: llm_compare_document(report), r.json_path, r.html_path, out)


def debug(r: DebugRequest) -> None:
    from quantwise.cli.outputs import write_outputs
    from quantwise.debug import DebugOptions
    from quantwise.debug.language_model import debug_language_model
    from quantwise.report.debug_html import debug_document
    from quantwise.report.debug_table import print_debug

    _refuse(data=r.data, n_calibration=r.n_calibration)
    options = DebugOptions(samples=r.samples or 2, batch_size=1, layer=r.layer)
    report = debug_language_model(r.model, r.recipe or "int4-rtn", options, r.context, r.text, progress)
    print_debug(report, out)
    write_outputs(report.to_dict(), lambda: debug_document(report), r.json_path, r.html_path, out)


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



def sensitivity(r: SensitivityRequest) -> None:
    raise QuantwiseError(f"sensitivity ranks the layers of classic models; {r.model} is a language model",
                         f"use 'quantwise debug {r.model} --recipe int4-rtn' for each layer's error, or 'quantwise auto {r.model}' to choose a recipe")


def auto(r: AutoRequest) -> None:
    from quantwise.cli.outputs import auto_outputs, write_outputs
    from quantwise.llm.auto import DEFAULT_CANDIDATES, auto_lm, write_outputs as write_winner
    from quantwise.llm.compare import LLMCompareOptions
    from quantwise.report.llm_html import llm_compare_document
    from quantwise.report.llm_table import print_llm_auto

    if r.target != "pytorch":
        raise QuantwiseError(f"--target {r.target} is not available for language models", "leave --target at pytorch (LLM candidates are timed in PyTorch)")
    given = [flag for flag, used in (("--batch", r.batch != 1), ("--max-float", r.max_float is not None), ("--proxy-samples", r.proxy_samples != 32),
                                     ("--n-calibration", r.n_calibration is not None), ("--n-evaluation", r.n_evaluation is not None)) if used]
    if given:
        raise QuantwiseError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to a language model",
                             "drop them: LLM auto scores each whole recipe's perplexity on the evaluation articles (--data FILE.txt gives another text) and times decode at batch 1")
    names = tuple(x.strip() for x in r.workflows.split(",") if x.strip()) if r.workflows else DEFAULT_CANDIDATES
    for name in names:
        _recipe(name)
    cluster = ClusterOptions(r.workers, r.ray_address)
    recipe_path = auto_outputs(r.model, r.out_dir, r.recipe_out, r.force)
    with open_tasks(cluster) as tasks:
        report = auto_lm(r.model, 2.0 if r.max_drop is None else r.max_drop, r.objective,
                         LLMCompareOptions(recipes=names, compile=r.compile, text=r.data, progress=progress), tasks)
    write_winner(report, r.model, recipe_path, r.out_dir, r.data, overwrite=r.force)
    print_llm_auto(report, out)
    write_outputs(report.to_dict(), lambda: llm_compare_document(report.compare), r.json_path, r.html_path, out)
