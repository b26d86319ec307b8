"""``compare`` for language models: perplexity, size, decode and prefill speed, cost to quantize.

Baselines a user could pick instead of quantizing: float32 eager, float32 compiled, bf16
eager and bf16 compiled. Every quantized row runs the kernels its recipe targets (torchao
tensors, under torch.compile where ``compile`` is on) and is judged against the best
baseline's decode speed and the float perplexity. Decode speed is a property of the
kernel, not of the algorithm that chose the codes: rows sharing a kernel (int4 RTN, HQQ,
GPTQ, AWQ) are timed once and say so.
"""
from __future__ import annotations

import gc
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from quantwise.config import LLM_COMPARE_DEFAULTS, LLM_PRESETS, DynamicActivation, GGUFWeights, WeightOnly, check_language_recipe, parse_recipe, recipe_name
from quantwise.errors import QuantwiseError, first_line
from quantwise.fanout import InProcess, Tasks, folder_files, in_order, write_files
from quantwise.findings import Finding, Kind
from quantwise.llm import artifact
from quantwise.llm.decode import Speed, measure_speed
from quantwise.llm.memory import release_free_memory, track_peak_rss
from quantwise.llm.model import load_language_model
from quantwise.llm.perplexity import PerplexityResult, perplexity, token_ids, windows
from quantwise.llm.quantize import check_recipe_fits, quantize_lm
from quantwise.llm.runtime import materialize, run_dtype
from quantwise.progress import ProgressFn, no_progress
from quantwise.versions import NO_NATIVE_BF16, machine, native_bf16, versions

log = logging.getLogger(__name__)
PROMPT_TOKENS = 32
BASELINES = ("float32", "bf16")  # methods of the rows a user could pick instead of quantizing


@dataclass(frozen=True)
class LLMCompareOptions:
    recipes: tuple[str, ...] = LLM_COMPARE_DEFAULTS
    context: int = 512
    eval_tokens: int = 24576
    decode_tokens: int = 64
    repeats: int = 5
    compile: bool = True
    tolerance_pct: float = 2.0  # perplexity increase beyond which a row is flagged
    text: str | None = None
    target: str = "pytorch"  # "llama.cpp": also the float model in llama.cpp (gguf recipes always run there)
    progress: ProgressFn = no_progress


@dataclass
class LLMRow:
    method: str
    runtime: str
    bits: str
    group: str
    size_mb: float | None = None
    perplexity: float | None = None
    delta_pct: float | None = None
    decode_tokens_per_s: float | None = None
    prefill_tokens_per_s: float | None = None
    quantize_s: float | None = None
    peak_quantize_mb: float | None = None
    block_input_mb: float | None = None  # calibrated recipes: one block's input hidden states for all windows
    compile_s: float | None = None
    activations: str | None = None  # the dtype the recipe's kernels compute in (PyTorch rows)
    notes: list[str] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    error: str | None = None


@dataclass
class LLMCompareReport:
    model: str
    description: str
    text: str
    perplexity_setting: str
    decode_setting: str
    threads: int
    float_mb: float
    rows: list[LLMRow]
    best: str
    machine: dict[str, Any]
    versions: dict[str, str]
    best_index: int | None = None  # the row named by ``best``; None when no row qualifies
    tied_embeddings: bool = False  # the model's token table is its output layer
    ran: str = "in process"  # where the recipes were quantized and scored (quantwise.fanout); speeds are timed here

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_lm(spec: str, opts: LLMCompareOptions, tasks: Tasks | None = None) -> LLMCompareReport:
    """``tasks``: where each PyTorch recipe is loaded, quantized and scored (default: in this process;
    ``quantwise.fanout`` for Ray); every speed is timed here, one row at a time."""
    from quantwise.llm import compare_llamacpp as cpp

    tasks = tasks or InProcess()
    recipes = [(name, parse_recipe(name)) for name in opts.recipes]
    for name, recipe in recipes:
        check_language_recipe(recipe, name)
    in_llamacpp = opts.target == cpp.RUNTIME or any(isinstance(r, GGUFWeights) for _, r in recipes)
    source, arch = cpp.check_available(spec) if in_llamacpp else (None, None)
    lm = load_language_model(spec, opts.text, progress=opts.progress)
    lm.check_context(opts.context)
    ids = token_ids(lm.tokenizer, lm.text.evaluation, max(opts.eval_tokens, opts.context + PROMPT_TOKENS))
    eval_windows = windows(ids, opts.context, opts.eval_tokens)
    prompt, prefill = ids[:PROMPT_TOKENS], ids[: opts.context]
    float_mb = lm.float_bytes() / 1e6
    for _, recipe in recipes:
        check_recipe_fits(lm.model, recipe)  # refuse an impossible recipe before any slow work

    def ppl(model: torch.nn.Module) -> PerplexityResult:
        return perplexity(model, eval_windows, progress=opts.progress)

    def speed(model: torch.nn.Module, compiled: bool, label: str) -> Speed:
        torch._dynamo.reset()
        return measure_speed(model, prompt, prefill, compiled, opts.decode_tokens, opts.repeats, opts.progress, label)

    rows: list[LLMRow] = []
    reference = ppl(lm.model)
    runtimes = [("eager", False)] + ([("compiled", True)] if opts.compile else [])
    for label, compiled in runtimes:
        s = speed(lm.model, compiled, f"float32 {label}")
        rows.append(LLMRow("float32", label, "32", "-", float_mb, reference.perplexity, 0.0, s.decode_tokens_per_s, s.prefill_tokens_per_s, compile_s=s.compile_s if compiled else None))
    llama_float = None
    if in_llamacpp:  # before the bf16 rows convert the model
        try:
            llama_float = _llamacpp_float_row(lm.model, source, arch, eval_windows, prompt, prefill, opts, reference)
        except Exception as err:  # a llama.cpp that cannot run must not lose the PyTorch rows
            log.debug("llama.cpp float row failed", exc_info=True)
            llama_float = LLMRow("float32", "llama.cpp", "32", "-", error=f"{type(err).__name__}: {first_line(err)}")
        rows.append(llama_float)
    if native_bf16():
        lm.model.to(torch.bfloat16)
        bf16 = ppl(lm.model)
        for label, compiled in runtimes:
            s = speed(lm.model, compiled, f"bf16 {label}")
            rows.append(LLMRow("bf16", label, "16", "-", float_mb / 2, bf16.perplexity, _delta(bf16.perplexity, reference.perplexity), s.decode_tokens_per_s, s.prefill_tokens_per_s, compile_s=s.compile_s if compiled else None))
    else:  # emulated bf16 takes minutes to measure and cannot be the fastest baseline
        rows.append(LLMRow("bf16", "eager", "16", "-", float_mb / 2, error=NO_NATIVE_BF16))
    description, text = lm.description, lm.text.description
    tied = bool(getattr(lm.model.config, "tie_word_embeddings", False))
    del lm
    gc.collect()
    scored = _scored(spec, [(n, r) for n, r in recipes if not isinstance(r, GGUFWeights)], eval_windows, reference.perplexity, opts, tasks)

    timed: dict[tuple, LLMRow] = {}
    for name, recipe in recipes:
        # the unit catches its recipe's own failures; what escapes it (the cluster failing) ends the run, not just this row
        made = None if isinstance(recipe, GGUFWeights) else next(scored)
        try:
            if made is None:
                rows.append(_llamacpp_row(spec, name, recipe, opts, source, arch, eval_windows, prompt, prefill, llama_float))
            else:
                rows.append(_timed_row(*made, recipe, opts, speed, timed))
        except QuantwiseError:
            raise
        except Exception as err:  # one recipe failing must not lose the others' results
            log.exception("recipe %s failed", name)
            rows.append(LLMRow(name, "-", "-", "-", error=f"{type(err).__name__}: {first_line(err)}"))
        gc.collect()
    best, best_index = _judge(rows, opts.tolerance_pct)
    return LLMCompareReport(
        model=spec, description=description, text=text, perplexity_setting=reference.setting,
        decode_setting=f"batch 1, greedy, {opts.decode_tokens - 1} tokens after a {PROMPT_TOKENS}-token prompt, static KV cache, median of {opts.repeats}; prefill: one {opts.context}-token forward",
        threads=torch.get_num_threads(), float_mb=float_mb, rows=rows, best=best, machine=machine(), versions=versions(), best_index=best_index,
        tied_embeddings=tied, ran=tasks.description,
    )


def _scored(spec: str, recipes: list[tuple[str, Any]], eval_windows: list[torch.Tensor], reference: float, opts: LLMCompareOptions, tasks: Tasks):
    """The PyTorch recipes' units, in order. In process each runs when its row is reached (one
    quantized model in memory at a time); on Ray all are submitted at once and run in parallel."""
    from quantwise.llm.runtime import for_this_machine

    here = isinstance(tasks, InProcess)
    if not here:  # a worker finds a local model or text by the absolute path
        spec = str(Path(spec).resolve()) if Path(spec).exists() else spec
    text = str(Path(opts.text).resolve()) if opts.text and Path(opts.text).exists() else opts.text
    shared = tasks.share(_LMInputs(spec, text, eval_windows, reference, keep_model=here, progress=opts.progress if here else no_progress))
    # the activation dtype is chosen for the machine that times the rows (this one), not for a worker's CPU
    items = [(name, recipe, *for_this_machine(recipe)) for name, recipe in recipes]
    yield from in_order(tasks, _quantize_unit, items, shared, progress=opts.progress, label="quantize and score each recipe")


def _kernel(recipe: WeightOnly | DynamicActivation) -> tuple:
    if isinstance(recipe, WeightOnly):
        return ("weight-only", recipe.bits, recipe.group_size, recipe.lm_head_bits, recipe.activations)
    return ("dynamic-activation", recipe.weight_bits, recipe.group_size)


def _bits(recipe: WeightOnly | DynamicActivation) -> tuple[str, str]:
    if isinstance(recipe, WeightOnly):
        return f"w{recipe.bits}", str(recipe.group_size or "row")
    return f"w{recipe.weight_bits}a8", str(recipe.group_size or "row")


@dataclass
class _LMInputs:
    """What a recipe's unit reads (shared once): where the model comes from and the scored windows."""

    spec: str
    text: str | None
    eval_windows: list[torch.Tensor]
    reference: float  # float32 perplexity
    keep_model: bool  # in process: hand the quantized model back for timing; on a worker: its artifact's files
    progress: ProgressFn = no_progress


def _quantize_unit(inp: _LMInputs, item: tuple[str, Any, Any, str | None]) -> tuple[LLMRow, Any]:
    """Load, quantize, save (verified) and score one recipe. Returns the row (not timed) and the
    quantized model (in process) or its artifact's files (on a worker), None when it failed.
    A recipe that fails for its own reasons is a row with the reason; a QuantwiseError ends the run."""
    name, recipe, resolved, machine_note = item  # resolved: activations=auto made concrete where the rows are timed
    try:
        return _quantize_and_score(inp, name, recipe, resolved, machine_note)
    except QuantwiseError:
        raise
    except Exception as err:  # one recipe failing must not lose the others' results
        log.exception("recipe %s failed", name)
        return LLMRow(name, "-", "-", "-", error=f"{type(err).__name__}: {first_line(err)}"), None


def _quantize_and_score(inp: _LMInputs, name: str, recipe: WeightOnly | DynamicActivation, resolved: WeightOnly | DynamicActivation,
                        machine_note: str | None) -> tuple[LLMRow, Any]:
    release_free_memory()
    with track_peak_rss() as mem:  # loading the float model + quantizing it, as `quantwise quantize` does
        lm = load_language_model(inp.spec, inp.text, defer_blocks=True)
        q = quantize_lm(lm, resolved, inp.progress)
    model = materialize(q.model, q.layers, q.recipe)
    bits, group = _bits(recipe)
    notes = ([machine_note] if machine_note else []) + list(q.notes)
    row = LLMRow(name if name in LLM_PRESETS else recipe_name(recipe), "-", bits, group, quantize_s=q.seconds, peak_quantize_mb=mem.growth / 1e6, notes=notes)
    if recipe.needs_calibration:
        hidden = q.model.config.hidden_size
        row.block_input_mb = 4 * recipe.calibration_samples * recipe.calibration_context * hidden / 1e6
    workdir = Path(tempfile.mkdtemp(prefix="quantwise-llm-"))
    try:
        path = artifact.save(q, lm.tokenizer, inp.spec, workdir / "artifact")  # verifies an identical reload
        row.size_mb = (path / "model.safetensors").stat().st_size / 1e6
        files = None if inp.keep_model else folder_files(path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = perplexity(model, inp.eval_windows, progress=inp.progress)
    row.perplexity, row.delta_pct = result.perplexity, _delta(result.perplexity, inp.reference)
    row.activations = str(run_dtype(resolved)).removeprefix("torch.")
    row.notes.append(f"runs with {row.activations} activations")
    if run_dtype(resolved) == torch.bfloat16 and not native_bf16():
        row.warnings.append(Finding(Kind.PLATFORM, "this CPU has no native bfloat16: the bf16 activations this recipe's kernels need are emulated, and slow here"))
    return row, (model if inp.keep_model else files)


def _timed_row(row: LLMRow, made: Any, recipe: WeightOnly | DynamicActivation, opts: LLMCompareOptions, speed, timed: dict[tuple, LLMRow]) -> LLMRow:
    """Time a scored row here (one at a time, nothing else running): its model as quantized in this
    process, or restored from the artifact a worker made. Rows sharing a kernel are timed once."""
    if made is None:
        return row
    row.runtime = "compiled" if opts.compile else "eager"
    key = _kernel(recipe)
    if key in timed:
        source = timed[key]
        row.decode_tokens_per_s, row.prefill_tokens_per_s = source.decode_tokens_per_s, source.prefill_tokens_per_s
        row.notes.insert(len(row.notes) - 1, f"speed: same kernel and shapes as {source.method}, timed once there")
        return row
    if isinstance(made, dict):
        with tempfile.TemporaryDirectory(prefix="quantwise-llm-") as tmp:
            made = artifact.load(write_files(made, Path(tmp))).model
    s = speed(made, opts.compile, row.method)
    row.decode_tokens_per_s, row.prefill_tokens_per_s, row.compile_s = s.decode_tokens_per_s, s.prefill_tokens_per_s, s.compile_s
    timed[key] = row
    return row


def _llamacpp_float_row(model, source, arch, eval_windows, prompt, prefill, opts: LLMCompareOptions, reference: PerplexityResult) -> LLMRow:
    from quantwise.llm import compare_llamacpp as cpp

    with cpp.workdir() as work:
        path = work / "float32.gguf"
        cpp.write_float(model, source, arch, path)
        ran = cpp.measure(path, eval_windows, prompt, prefill, opts.decode_tokens, opts.repeats, work)
        size = path.stat().st_size / 1e6
    return LLMRow("float32", cpp.RUNTIME, "32", "-", size, ran["perplexity"], _delta(ran["perplexity"], reference.perplexity),
                  ran["decode_tok_s"], ran["prefill_tok_s"],
                  notes=[f"the float model as an F32 GGUF, run by llama.cpp (llama-cpp-python {ran['version']}); Δ perplexity against PyTorch's float32"])


def _llamacpp_row(spec, name, recipe: GGUFWeights, opts: LLMCompareOptions, source, arch, eval_windows, prompt, prefill, llama_float: LLMRow) -> LLMRow:
    """Quantize, write the GGUF (checked bit for bit), and measure it in llama.cpp."""
    from quantwise.llm import compare_llamacpp as cpp

    release_free_memory()
    with track_peak_rss() as mem:
        lm = load_language_model(spec, opts.text, defer_blocks=True)
        q = quantize_lm(lm, recipe, opts.progress)
    model = materialize(q.model, q.layers, q.recipe)
    bits = f"auto <= {recipe.budget if not recipe.bpw else f'{recipe.bpw:g} bpw'}" if recipe.type == "AUTO" else recipe.type
    group = "32" if recipe.type in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0") else "32/256"
    row = LLMRow(cpp.label(name, recipe), cpp.RUNTIME, bits, group, quantize_s=q.seconds, peak_quantize_mb=mem.growth / 1e6, notes=list(q.notes))
    with cpp.workdir() as work:
        path = work / "model.gguf"
        cpp.write_quantized(model, q.layers, recipe, source, arch, path)
        del model, q, lm  # the float32 weights: not needed while llama.cpp runs the file
        gc.collect()
        row.size_mb = path.stat().st_size / 1e6
        try:
            ran = cpp.measure(path, eval_windows, prompt, prefill, opts.decode_tokens, opts.repeats, work)
        except QuantwiseError as err:  # this llama.cpp cannot run the file: a row that says so, not the end of the comparison
            row.error = first_line(err)
            return row
    base = llama_float.perplexity if llama_float is not None and llama_float.perplexity else None
    row.perplexity = ran["perplexity"]
    row.delta_pct = _delta(ran["perplexity"], base) if base else None
    row.decode_tokens_per_s, row.prefill_tokens_per_s = ran["decode_tok_s"], ran["prefill_tok_s"]
    row.notes.append("perplexity and speed measured in llama.cpp on the same windows; Δ perplexity against llama.cpp's F32 file")
    return row


def _delta(value: float, reference: float) -> float:
    return 100.0 * (value - reference) / reference


def _judge(rows: list[LLMRow], tolerance_pct: float) -> tuple[str, int | None]:
    """The verdict line and the index of the best row (None: no quantized row qualifies). A row is
    judged against the fastest float baseline of its own runtime (llama.cpp rows: the F32 file in
    llama.cpp, whose kernels they share; PyTorch rows: float32 / bf16, eager or compiled)."""
    baselines = [r for r in rows if r.method in BASELINES and r.decode_tokens_per_s]
    pytorch = [r for r in baselines if r.runtime != "llama.cpp"]
    fastest = max(pytorch, key=lambda r: r.decode_tokens_per_s)
    candidates = []
    for row in rows:
        if row.error or row in baselines or row.method in BASELINES:
            continue
        own = fastest if row.runtime != "llama.cpp" else next((r for r in baselines if r.runtime == "llama.cpp"), fastest)
        if row.decode_tokens_per_s and row.decode_tokens_per_s < own.decode_tokens_per_s:
            row.warnings.append(Finding(Kind.SPEED, f"decodes slower than {own.method} {own.runtime} ({row.decode_tokens_per_s:.1f} vs {own.decode_tokens_per_s:.1f} tokens/s)"))
        if row.delta_pct is not None and row.delta_pct > tolerance_pct:
            row.warnings.append(Finding(Kind.ACCURACY, f"perplexity {row.delta_pct:+.1f}% vs float (tolerance {tolerance_pct:g}%)"))
        if not row.warnings:
            candidates.append(row)
    if not candidates:
        return f"none: no quantized model decodes faster than {fastest.method} {fastest.runtime} within {tolerance_pct:g}% perplexity", None
    best = max(candidates, key=lambda r: r.decode_tokens_per_s or 0)
    verdict = f"{best.method} ({best.decode_tokens_per_s:.1f} tokens/s, perplexity {best.delta_pct:+.2f}%, {best.size_mb:.0f} MB)"
    return verdict, next(i for i, r in enumerate(rows) if r is best)
