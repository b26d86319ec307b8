"""``auto``: the fastest (or smallest) recipe whose measured metric loss stays within a budget.

The search runs in stages and measures every candidate for real (the recipe applied, the
primary metric on the whole evaluation split):

1. workflows: bf16 autocast, dynamic, static fx, static pt2e (those that apply);
2. observers and granularity for each static path that misses the budget but could
   still win (it is faster, or smaller, than the float baselines);
3. per-layer float fallback on the most accurate variant of each such path: the layers
   are ranked by ``sensitivity`` and the k most sensitive kept float, k = 1, 2, 4, ...
   until the budget is met, then the smallest k that meets it is found by bisection.

Latency is timed (warm-up, median) only for candidates within the budget and for the
stage-1 workflows (to show the trade-offs); quantized models that need torch.compile to
be fast are compiled first. The winner is re-created from its recipe as written to disk,
and saved as an artifact when asked.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantwise import api
from quantwise.config import BF16, DynamicInt8, Recipe, StaticInt8, parse_recipe, preset_names, recipe_from_dict, recipe_name, recipe_to_dict
from quantwise.errors import QuantwiseError, choice_error, first_line
from quantwise.evaluate.latency import batch_of, measure
from quantwise.evaluate.metrics import HIGHER_IS_BETTER, outputs
from quantwise.evaluate.runtime import RUNTIMES
from quantwise.fanout import InProcess, Tasks
from quantwise.progress import ProgressFn, no_progress
from quantwise.methods.layers import quantizable_layers
from quantwise.mixed.sensitivity import SensitivityOptions, SensitivityReport, analyse, cached_report, primary_metric
from quantwise.models.base import ModelBundle
from quantwise.versions import machine, native_bf16

log = logging.getLogger(__name__)
OBJECTIVES = ("latency", "size")
TARGETS = ("pytorch", "onnxruntime")
FRACTION_METRICS = ("top1", "agreement", "cosine", "cosine_min")
OBSERVER_VARIANTS = ("mse", "percentile", "minmax")
WORKFLOWS = preset_names("classic", auto=True)
STAGE_LABELS = {"workflow": "auto: workflows", "observer": "auto: observers and granularity", "fallback": "auto: float fallback"}


@dataclass
class Candidate:
    name: str
    stage: str  # baseline, workflow, observer, fallback
    recipe: dict[str, Any] | None  # None for the float baselines
    runtime: str = "eager"
    size_mb: float | None = None
    latency_ms: float | None = None
    metric: float | None = None
    drop: float | None = None
    within_budget: bool = False
    kept_float: list[str] = field(default_factory=list)
    quantize_s: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class AutoReport:
    model: str
    primary: str
    higher_is_better: bool
    float_metric: float
    max_drop: float
    objective: str
    batch: int
    threads: int
    evaluation: str
    candidates: list[Candidate]
    chosen: str | None
    tradeoffs: list[str]
    why_float: dict[str, str]
    sensitivity: list[dict[str, Any]]  # the SensitivityReport(s) the fallback used, as dicts
    recipe_path: str | None = None
    artifact_path: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)
    target: str = "pytorch"  # where candidates were timed
    ran: str = "in process"  # where the candidates' units ran (quantwise.fanout)

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AutoOptions:
    max_drop: float | None = None  # default: the model's tolerance
    objective: str = "latency"
    batch: int = 1
    compile: bool = True
    repeats: int = 10
    max_seconds: float = 5.0
    max_float: int | None = None  # most layers kept float (default: half of them)
    proxy_samples: int = 32
    batch_size: int = 32
    workflows: tuple[str, ...] = WORKFLOWS  # recipes to start from (presets or kind:key=value)
    target: str = "pytorch"  # "onnxruntime": each candidate is exported to ONNX (parity-checked) and timed there
    progress: ProgressFn = no_progress


def check_options(opts: AutoOptions, bundle: ModelBundle | None = None) -> float | None:
    """Validate the budget and objective; returns the budget (the model's tolerance by default)."""
    if opts.objective not in OBJECTIVES:
        raise choice_error("objective", opts.objective, OBJECTIVES)
    if opts.target not in TARGETS:
        raise choice_error("target", opts.target, TARGETS)
    if opts.batch < 1:
        raise QuantwiseError(f"batch {opts.batch} is not a batch size", "use --batch 1 or more")
    if opts.max_float is not None and opts.max_float < 0:
        raise QuantwiseError(f"--max-float {opts.max_float} is negative", "give how many layers may stay float, e.g. 8")
    if opts.proxy_samples < 1:
        raise QuantwiseError("--proxy-samples must be at least 1", "e.g. --proxy-samples 16")
    if not opts.workflows:
        raise QuantwiseError("no workflow to search", "e.g. --workflows bf16,dynamic,static-pt2e")
    for name in opts.workflows:
        if not isinstance(parse_recipe(name), (BF16, DynamicInt8, StaticInt8)):
            raise QuantwiseError(f"workflow {name!r} cannot be searched by auto", "use bf16, dynamic or static recipes (QAT needs one fine-tuning per candidate)")
    if opts.max_drop is not None and (opts.max_drop < 0 or not math.isfinite(opts.max_drop)):
        raise QuantwiseError(f"--max-drop {opts.max_drop} is negative or not finite", "give the largest acceptable loss of the metric, e.g. 0.01")
    if bundle is None:
        return opts.max_drop
    budget = bundle.tolerance if opts.max_drop is None else opts.max_drop
    if bundle.primary in FRACTION_METRICS and budget >= 1:
        raise QuantwiseError(
            f"--max-drop {budget:g} is out of range for {bundle.primary}, a fraction in [0, 1]",
            f"write the drop in the same unit, e.g. --max-drop {budget / 100:g} for {budget:g} points",
        )
    return budget


@dataclass
class _Measured:
    """What one candidate's unit measured (everything but latency, which is timed in the driving process)."""

    name: str
    metric: float | None = None
    quantize_s: float | None = None
    size_mb: float | None = None
    compiled: bool = False
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class _AutoInputs:
    """What a candidate's unit reads (shared once)."""

    bundle: ModelBundle
    reference: torch.Tensor
    batch_size: int
    keep_result: bool  # in process: hand the quantized model back, so timing it needs no second quantization


def _accuracy_unit(inp: _AutoInputs, recipe: Recipe) -> tuple[_Measured, Any]:
    """Quantize with ``recipe`` and measure the primary metric and the stored size. A candidate that
    fails becomes a row with the reason: one broken candidate must not end the search."""
    m = _Measured(recipe_name(recipe))
    log.info("auto: %s", m.name)
    try:
        result = api.quantize(inp.bundle, recipe, batch_size=inp.batch_size)
        q = result.quantized
        m.quantize_s = result.seconds
        m.metric = primary_metric(q.module, inp.bundle, inp.reference, inp.batch_size)
    except QuantwiseError as err:
        m.error = str(err)
        return m, None
    except Exception as err:
        log.debug("auto candidate %s failed", m.name, exc_info=True)
        m.error = f"failed: {type(err).__name__}: {first_line(err)}"
        return m, None
    m.size_mb, m.compiled, m.notes = _bytes(q.tensors), bool(q.compiled), list(q.notes)
    return m, (result if inp.keep_result else None)


def _lost_candidate(recipe: Recipe, why: str) -> tuple[_Measured, Any]:
    """A candidate whose worker died on every try: a row that says so, and the search goes on."""
    return _Measured(recipe_name(recipe), error=f"failed: {why}"), None


class _Search:
    def __init__(self, bundle: ModelBundle, opts: AutoOptions, budget: float, workdir: Path, tasks: Tasks) -> None:
        self.bundle, self.opts, self.budget, self.workdir, self.tasks = bundle, opts, budget, workdir, tasks
        self.higher = HIGHER_IS_BETTER.get(bundle.primary, True)
        self.reference = outputs(bundle.model, bundle.evaluation, opts.batch_size)
        self.float_metric = primary_metric(bundle.model, bundle, self.reference, opts.batch_size)
        self.candidates: list[Candidate] = []
        self.results: dict[str, Any] = {}  # name -> QuantizeResult, for candidates within budget
        self.example = batch_of(bundle.example_inputs(1), opts.batch)
        self.shared = tasks.share(_AutoInputs(bundle, self.reference, opts.batch_size, keep_result=isinstance(tasks, InProcess)))

    def drop(self, metric: float) -> float:
        return (self.float_metric - metric) if self.higher else (metric - self.float_metric)

    def time(self, module: nn.Module | Any, runtime: str) -> float:
        if runtime == "compiled":
            torch._dynamo.reset()  # the same forward code compiled for many models hits dynamo's recompile limit
        fn = RUNTIMES[runtime](module) if isinstance(module, nn.Module) else module
        return measure(fn, self.example, warmup=3, repeats=self.opts.repeats, max_seconds=self.opts.max_seconds).median_ms

    def baselines(self) -> None:
        if self.opts.target == "onnxruntime":
            return self._onnxruntime_baseline()
        size = _bytes(self.bundle.model.state_dict())
        rows = [("float", "eager"), ("float compiled", "compiled")] if self.opts.compile else [("float", "eager")]
        for name, runtime in rows:
            c = Candidate(name, "baseline", None, runtime, size_mb=size, metric=self.float_metric, drop=0.0, within_budget=True)
            c.latency_ms = self.time(self.bundle.model, runtime)
            c.notes.append("float reference: not a quantized result")
            self.candidates.append(c)

    def _onnxruntime_baseline(self) -> None:
        from quantwise.export.onnx_target import load
        from quantwise.peers.onnxruntime import export_float

        c = Candidate("onnxruntime float", "baseline", None, "onnxruntime", metric=self.float_metric, drop=0.0, within_budget=True)
        path = export_float(self.bundle, self.workdir / "float.onnx")
        c.size_mb = path.stat().st_size / 1e6
        c.latency_ms = self.time(load(path, torch.get_num_threads()), "onnxruntime")
        c.notes.append("float model exported to ONNX and run in ONNX Runtime: the baseline to beat there")
        self.candidates.append(c)

    def run(self, recipe: Recipe, stage: str, timed: bool = False, time_within: bool = True) -> Candidate:
        return self.run_many([recipe], stage, timed, time_within)[0]

    def run_many(self, recipes: list[Recipe], stage: str, timed: bool = False, time_within: bool = True) -> list[Candidate]:
        """Quantize each recipe and measure its metric and size (the units, run by ``tasks``); then,
        in this process and with no unit running, time those ``timed``, or within budget and ``time_within``."""
        fresh = list({recipe_name(r): r for r in recipes if not any(c.name == recipe_name(r) for c in self.candidates)}.values())
        measured = self.tasks.map(_accuracy_unit, fresh, self.shared, progress=self.opts.progress, label=STAGE_LABELS[stage],
                                  on_lost=_lost_candidate) if fresh else []
        kept: dict[str, Any] = {}
        for recipe, (m, result) in zip(fresh, measured):
            c = Candidate(m.name, stage, recipe_to_dict(recipe), kept_float=list(getattr(recipe, "keep_float", ())))
            self.candidates.append(c)
            c.quantize_s, c.error = m.quantize_s, m.error
            if m.error is not None:
                continue
            c.metric, c.drop = m.metric, self.drop(m.metric)
            c.within_budget = c.drop <= self.budget
            log.info("auto: %s: %s %.4g (drop %.3g, %s budget)", c.name, self.bundle.primary, c.metric, c.drop, "within" if c.within_budget else "over")
            c.size_mb, c.notes = m.size_mb, list(m.notes)
            c.runtime = "compiled" if m.compiled and self.opts.compile else "eager"
            will_time = timed or (c.within_budget and time_within)
            if result is not None and (will_time or c.within_budget):
                kept[c.name] = result
                if c.within_budget:
                    self.results[c.name] = result
        del measured  # results neither timed nor within budget are let go here
        to_time = [c for c in (self.candidate(recipe_name(r)) for r in fresh) if c.error is None and (timed or (c.within_budget and time_within))]
        for c in self.opts.progress(f"{STAGE_LABELS[stage]}: timing", to_time, len(to_time)) if to_time else []:
            self.time_candidate(c, kept.pop(c.name, None))
        return [self.candidate(recipe_name(r)) for r in recipes]

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    def result_of(self, c: Candidate) -> Any:
        """The candidate's QuantizeResult: kept from its unit in process, else quantized again here
        (quantization is deterministic: the same recipe gives the same model)."""
        if c.name in self.results:
            return self.results[c.name]
        result = api.quantize(self.bundle, recipe_from_dict(c.recipe or {}), batch_size=self.opts.batch_size)
        if c.within_budget:  # a candidate that can win is kept; the others are timed and let go
            self.results[c.name] = result
        return result

    def time_candidate(self, c: Candidate, result: Any = None) -> None:
        try:
            result = result if result is not None else self.result_of(c)
            if self.opts.target == "onnxruntime":
                self._time_in_onnxruntime(c, result)
            else:
                c.latency_ms = self.time(result.quantized.module, c.runtime)
        except Exception as err:  # a compile or export failure leaves the candidate untimed, not the search dead
            c.notes.append(f"not timed: {err}" if isinstance(err, QuantwiseError) else f"not timed: {type(err).__name__}: {first_line(err)}")

    def _time_in_onnxruntime(self, c: Candidate, result: Any) -> None:
        """Save, export to ONNX with the parity check, time in ONNX Runtime; size = the .onnx file."""
        from quantwise.export import export_artifact
        from quantwise.export.onnx_target import load

        artifact = api.save(result, self.workdir / f"candidate-{len(self.candidates)}-{abs(hash(c.name))}")
        exported = export_artifact(artifact, "onnx", bundle=self.bundle, samples=min(256, len(self.bundle.evaluation)))
        q = exported.parity.vs_quantized
        c.runtime, c.size_mb = "onnxruntime", exported.path.stat().st_size / 1e6
        c.notes.append(f"exported to ONNX; parity with the PyTorch model: cosine {q.cosine:.5f}" + ("" if q.agreement is None else f", top-1 agreement {q.agreement:.4f}"))
        c.latency_ms = self.time(load(exported.path, torch.get_num_threads()), "onnxruntime")

    def fastest_float(self) -> float:
        key = "latency_ms" if self.opts.objective == "latency" else "size_mb"
        return min(getattr(c, key) for c in self.candidates if c.stage == "baseline" and getattr(c, key) is not None)

    def promising(self, c: Candidate) -> bool:
        """Could this workflow, made more accurate, still beat float on the objective?"""
        if c.error or c.metric is None:
            return False
        value = c.latency_ms if self.opts.objective == "latency" else c.size_mb
        # 25 % slack: latency on a shared machine is noisy, and pruning a real winner costs more than a try
        return value is not None and value < 1.25 * self.fastest_float()


def _bytes(tensors: dict[str, Any]) -> float:
    return sum(t.numel() * t.element_size() for t in tensors.values() if isinstance(t, torch.Tensor)) / 1e6


def _workflows(bundle: ModelBundle, names: tuple[str, ...]) -> list[Recipe]:
    """The starting recipes that apply to this model (a recipe that quantizes no layer is skipped)."""
    recipes = [parse_recipe(n) for n in names]
    if not native_bf16():  # emulated bf16 is many times slower than float32: minutes to time, never the answer
        skipped = [r for r in recipes if isinstance(r, BF16)]
        if skipped:
            log.warning("auto: bf16 not searched: this CPU has no native bfloat16 (AVX-512 BF16 or AMX)")
        recipes = [r for r in recipes if not isinstance(r, BF16)]
    return [r for r in recipes if isinstance(r, BF16) or quantizable_layers(bundle.model, r)]


def _variants(recipe: StaticInt8) -> list[StaticInt8]:
    out = [dataclasses.replace(recipe, observer=o) for o in OBSERVER_VARIANTS if o != recipe.observer]
    if recipe.path == "fx":
        out.append(dataclasses.replace(recipe, granularity="per-tensor"))
    return out


def _fallback(search: _Search, base: Recipe, sens: SensitivityReport, max_float: int) -> None:
    """Keep the k most sensitive layers float: k = 1, 2, 4, ... until within budget, then bisect."""
    ranking = sens.ranking()[:max_float]

    def attempt(k: int) -> Candidate:
        # untimed: more float layers never run faster, so only the smallest k that fits is timed
        return search.run(dataclasses.replace(base, keep_float=tuple(ranking[:k])), "fallback", time_within=False)

    passed, failed, k = None, 0, 1
    while k <= len(ranking):
        c = attempt(k)
        if c.within_budget:
            passed = k
            break
        if c.error:
            return
        failed, k = k, (k * 2 if k * 2 <= len(ranking) or k == len(ranking) else len(ranking))
        if failed == len(ranking):
            break
    if passed is None:
        return
    lo, hi = failed, passed
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if attempt(mid).within_budget:
            hi = mid
        else:
            lo = mid
    search.time_candidate(attempt(hi))


def _why(sens: SensitivityReport, name: str) -> str:
    l = sens.layer(name)
    text = f"proxy rank {l.proxy_rank}/{len(sens.layers)}: output SQNR +{l.proxy_gain:.2f} dB when kept float alone"
    if l.metric_float is not None:
        text += f"; {sens.primary} {l.metric_float:.4g} with it float vs {sens.quantized_metric:.4g} all int8 (real rank {l.full_rank})"
    return text


def _pareto(cands: list[Candidate], objective: str) -> list[str]:
    key = "latency_ms" if objective == "latency" else "size_mb"
    pts = [c for c in cands if c.drop is not None and getattr(c, key) is not None and c.stage != "baseline"]
    front = [c for c in pts if not any(o is not c and o.drop <= c.drop and getattr(o, key) <= getattr(c, key)
                                       and (o.drop < c.drop or getattr(o, key) < getattr(c, key)) for o in pts)]
    return [c.name for c in sorted(front, key=lambda c: c.drop)]


def search(bundle: ModelBundle, opts: AutoOptions | None = None, tasks: Tasks | None = None) -> tuple[AutoReport, Any]:
    """Run the search; returns the report and the winner's QuantizeResult (None when nothing fits).
    ``tasks``: where the candidates' units run (default: in this process; see ``quantwise.fanout``)."""
    opts = opts or AutoOptions()
    tasks = tasks or InProcess()
    budget = check_options(opts, bundle)
    assert budget is not None
    clock = {"start": time.perf_counter()}
    with tempfile.TemporaryDirectory(prefix="quantwise-auto-") as workdir:
        return _search(bundle, opts, budget, clock, Path(workdir), tasks)


def _search(bundle: ModelBundle, opts: AutoOptions, budget: float, clock: dict[str, float], workdir: Path, tasks: Tasks) -> tuple[AutoReport, Any]:
    s = _Search(bundle, opts, budget, workdir, tasks)
    s.baselines()
    stage1 = s.run_many(_workflows(bundle, opts.workflows), "workflow", timed=True)
    clock["workflows"] = time.perf_counter()
    # stage 2: observers / granularity for static paths that miss the budget but could win (all variants as one batch)
    searched = [(c, recipe_from_dict(c.recipe)) for c in stage1 if c.recipe and not c.within_budget and s.promising(c)]
    searched = [(c, r) for c, r in searched if not isinstance(r, BF16)]
    variants = {c.name: _variants(r) if isinstance(r, StaticInt8) else [] for c, r in searched}
    s.run_many([v for vs in variants.values() for v in vs], "observer")
    bases: list[tuple[Recipe, Candidate]] = []
    for c, _ in searched:
        best = c
        for v in (s.candidate(recipe_name(r)) for r in variants[c.name]):
            if v.metric is not None and (best.metric is None or s.drop(v.metric) < s.drop(best.metric)):
                best = v
        if not best.within_budget:
            bases.append((recipe_from_dict(best.recipe), best))
    clock["observers"] = time.perf_counter()
    # stage 3: per-layer float fallback, guided by sensitivity
    sens_reports: list[SensitivityReport] = []
    why: dict[str, str] = {}
    for recipe, _ in bases:
        layers = quantizable_layers(bundle.model, recipe)
        max_float = opts.max_float if opts.max_float is not None else max(1, len(layers) // 2)
        if max_float == 0:
            continue
        # a full report from 'quantwise sensitivity' with the same proxy size is reused; else the proxy alone
        sens = cached_report(bundle, recipe, SensitivityOptions(proxy_samples=opts.proxy_samples)) or analyse(bundle, recipe, SensitivityOptions(
            proxy_samples=opts.proxy_samples, top_k=1, controls=0, batch_size=opts.batch_size, progress=opts.progress, confirm=False), tasks)
        sens_reports.append(sens)
        _fallback(s, recipe, sens, min(max_float, len(layers)))
        for name in sens.ranking()[:max_float]:
            why.setdefault(name, _why(sens, name))
    clock["fallback"] = time.perf_counter()
    key = "latency_ms" if opts.objective == "latency" else "size_mb"
    winners = [c for c in s.candidates if c.within_budget and c.stage != "baseline" and getattr(c, key) is not None]
    chosen = min(winners, key=lambda c: getattr(c, key)) if winners else None
    notes = []
    if chosen is not None:
        fastest = min((c for c in s.candidates if c.stage == "baseline"), key=lambda c: getattr(c, key))
        if getattr(fastest, key) < getattr(chosen, key):
            notes.append(f"the {fastest.name} baseline is {'faster' if key == 'latency_ms' else 'smaller'} than every candidate within budget "
                         f"({getattr(fastest, key):.4g} vs {getattr(chosen, key):.4g}); keeping the model float is a valid answer")
    if not isinstance(tasks, InProcess):
        notes.append(f"candidates quantized and measured on a {tasks.description}; every latency timed in this process on this machine, "
                     "one at a time, while no candidate ran")
    if opts.objective == "size":
        notes.append("size = bytes of the stored tensors; bf16 autocast keeps float32 weights, so it never wins on size")
    report = AutoReport(
        model=bundle.name, primary=bundle.primary, higher_is_better=s.higher, float_metric=s.float_metric, max_drop=budget,
        objective=opts.objective, batch=opts.batch, threads=torch.get_num_threads(), evaluation=bundle.evaluation.description,
        candidates=s.candidates, chosen=chosen.name if chosen else None, tradeoffs=[] if chosen else _pareto(s.candidates, opts.objective),
        why_float={n: why[n] for n in (chosen.kept_float if chosen else []) if n in why},
        sensitivity=[r.to_dict() for r in sens_reports], notes=notes, machine=machine(), target=opts.target, ran=tasks.description,
    )
    t = clock["start"]
    for stage in ("workflows", "observers", "fallback"):
        report.seconds[stage] = clock[stage] - t
        t = clock[stage]
    report.seconds["total"] = time.perf_counter() - clock["start"]
    return report, (s.result_of(chosen) if chosen else None)


def write_outputs(report: AutoReport, bundle: ModelBundle, result: Any, recipe_path: Path, out: Path | None, overwrite: bool = False) -> None:
    """Write the winner's recipe file, re-create the model from that file and, with ``out``,
    save it as an artifact. The re-created model must match the searched one exactly."""
    from quantwise.config import write_recipe

    if report.chosen is None:
        return
    chosen = report.candidate(report.chosen)
    recipe = recipe_from_dict(chosen.recipe or {})
    path = write_recipe(recipe, recipe_path)
    report.recipe_path = str(path)
    if out is None:
        return
    again = api.quantize(bundle, parse_recipe(str(path)))
    probe = bundle.evaluation.example(4)
    with torch.no_grad():
        if not torch.equal(result.quantized.module(*probe), again.quantized.module(*probe)):
            raise QuantwiseError("the recipe file does not reproduce the chosen model exactly; nothing was saved", "report this as a bug")
    metrics = {bundle.primary: chosen.metric, "float_" + bundle.primary: report.float_metric}
    report.artifact_path = str(api.save(again, out, metrics=metrics, overwrite=overwrite))
