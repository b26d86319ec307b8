"""``auto`` for language models: the fastest (or smallest) LLM recipe within a perplexity budget.

Every candidate is quantized, its perplexity measured on the evaluation articles and its decode
speed timed on this machine (``compare_lm``); the winner is the fastest candidate within the
budget that decodes faster than the fastest float baseline (bf16 or float32, eager or compiled),
or with ``objective="size"`` the smallest within the budget. The budget is a perplexity increase
in percent. The naive recipe (ZOO.md: dynamic int8 on every Linear, 22.6 -> 88.7) is the legacy
per-tensor one; the candidates here quantize activations per token, smooth them, or leave them
in bf16 and quantize only the weights.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantwise.config import LLM_PRESETS, WeightOnly, parse_recipe, preset_names, recipe_name, recipe_to_dict, write_recipe
from quantwise.errors import QuantwiseError
from quantwise.fanout import Tasks
from quantwise.llm.compare import BASELINES, LLMCompareOptions, LLMCompareReport, LLMRow, compare_lm

DEFAULT_CANDIDATES = preset_names("language", auto=True)
OBJECTIVES = ("latency", "size")


@dataclass
class LLMAutoReport:
    compare: LLMCompareReport
    max_drop_pct: float
    objective: str
    chosen: str | None  # the recipe as the user gave it (a preset name or kind:key=value)
    reason: str
    chosen_row: str | None = None  # the comparison row's label for it
    kept_higher_precision: list[str] = field(default_factory=list)
    tradeoffs: list[str] = field(default_factory=list)  # when nothing fits: the best found, by perplexity
    recipe: dict[str, Any] | None = None
    recipe_path: str | None = None
    artifact_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def auto_lm(spec: str, max_drop_pct: float, objective: str, opts: LLMCompareOptions, tasks: Tasks | None = None) -> LLMAutoReport:
    """``tasks``: where the candidates are quantized and scored (see ``compare_lm``)."""
    if max_drop_pct < 0:
        raise QuantwiseError(f"--max-drop {max_drop_pct} is negative", "give the largest acceptable perplexity increase in percent, e.g. --max-drop 2")
    if objective not in OBJECTIVES:
        raise QuantwiseError(f"unknown objective {objective!r}", f"use one of: {', '.join(OBJECTIVES)}")
    from quantwise.config import GGUFWeights

    for name in opts.recipes:
        if isinstance(parse_recipe(name), GGUFWeights):
            raise QuantwiseError(f"candidate {name} is a llama.cpp file type, which auto does not weigh against PyTorch recipes",
                                 "compare GGUF types with: quantwise compare MODEL --target llama.cpp (type=auto picks the types within a size)")
    report = compare_lm(spec, dataclasses.replace(opts, tolerance_pct=max_drop_pct), tasks)
    return choose(report, max_drop_pct, objective, opts.recipes)


def choose(report: LLMCompareReport, max_drop_pct: float, objective: str, recipes: tuple[str, ...]) -> LLMAutoReport:
    """The decision alone, on a finished comparison (``recipes``: the candidate names as given)."""
    quantized = [r for r in report.rows if r.method not in BASELINES and not r.error]
    within = [r for r in quantized if r.delta_pct is not None and r.delta_pct <= max_drop_pct]
    fastest = max((r for r in report.rows if r.method in BASELINES and r.decode_tokens_per_s), key=lambda r: r.decode_tokens_per_s)
    if objective == "latency":
        fits = [r for r in within if (r.decode_tokens_per_s or 0) > fastest.decode_tokens_per_s]
        pick = max(fits, key=lambda r: r.decode_tokens_per_s or 0) if fits else None
    else:
        fits = within
        pick = min(fits, key=lambda r: r.size_mb or float("inf")) if fits else None
    budget = f"perplexity within +{max_drop_pct:g}% of float32 ({report.rows[0].perplexity:.3f})"
    if pick is None:
        why = budget + ("" if objective == "size" else f" and faster than {fastest.method} {fastest.runtime} ({fastest.decode_tokens_per_s:.1f} tokens/s)")
        ranked = sorted(quantized, key=lambda r: r.delta_pct if r.delta_pct is not None else float("inf"))
        return LLMAutoReport(report, max_drop_pct, objective, None, f"no candidate has {why}",
                             tradeoffs=[_describe(r) for r in ranked])
    reason = (f"{_describe(pick)}: the {'fastest' if objective == 'latency' else 'smallest'} of {len(fits)} candidate(s) with {budget}"
              + (f", against {fastest.method} {fastest.runtime} at {fastest.decode_tokens_per_s:.1f} tokens/s, the fastest float baseline" if objective == "latency" else ""))
    names = {(n if n in LLM_PRESETS else recipe_name(parse_recipe(n))): n for n in recipes}  # row label -> what the user gave
    chosen = names.get(pick.method, pick.method)
    recipe = parse_recipe(chosen)
    return LLMAutoReport(report, max_drop_pct, objective, chosen, reason, pick.method, _kept(recipe, pick, report.tied_embeddings), recipe=recipe_to_dict(recipe))


def _describe(row: LLMRow) -> str:
    speed = f", {row.decode_tokens_per_s:.1f} tokens/s" if row.decode_tokens_per_s else ""
    return f"{row.method} (perplexity {row.delta_pct:+.2f}%{speed}, {row.size_mb:.0f} MB)"


def _kept(recipe: Any, row: LLMRow, tied: bool) -> list[str]:
    """What the chosen recipe leaves above its own precision, and why (from the recipe and the model's config)."""
    from quantwise.llm.runtime import run_dtype

    dtype = str(run_dtype(recipe)).removeprefix("torch.")
    head_int8 = isinstance(recipe, WeightOnly) and recipe.lm_head_bits == 8
    kept = [] if head_int8 and tied else [f"token embedding table: {dtype} (a lookup, no matmul to speed up)"]
    kept.append(f"RMSNorm weights: {dtype} (a few KB)")
    if head_int8:
        if recipe.bits == 4:
            kept.append("output layer: int8 per row, not int4 (it scores every token of the vocabulary; int4 there costs the most perplexity per byte)"
                        + ("; the token table tied to it reads the same int8 codes" if tied else ""))
    else:
        kept.append("output layer: float (this recipe quantizes the decoder blocks' Linear layers only)")
    if row.activations:
        kept.append(f"activations: {row.activations}")
    return kept


def write_outputs(report: LLMAutoReport, spec: str, recipe_path: Path, out: Path | None, text: str | None, overwrite: bool = False) -> None:
    """The winner's recipe file and, with ``out``, its artifact quantized from that file."""
    if report.chosen is None:
        return
    path = write_recipe(parse_recipe(report.chosen), recipe_path)
    report.recipe_path = str(path)
    if out is None:
        return
    from quantwise.llm import artifact
    from quantwise.llm.model import load_language_model
    from quantwise.llm.quantize import quantize_lm

    lm = load_language_model(spec, text, defer_blocks=True)
    q = quantize_lm(lm, parse_recipe(str(path)))
    row = next(r for r in report.compare.rows if r.method == report.chosen_row)
    report.artifact_path = str(artifact.save(q, lm.tokenizer, spec, out, metrics={"perplexity": row.perplexity}, overwrite=overwrite))
