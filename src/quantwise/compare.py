"""``compare``: float baselines and every applicable workflow, side by side, timed in one process.

Each recipe is quantized, evaluated and saved by a unit (``quantwise.fanout``: here, or on a Ray
worker that hands its artifact back); every row is then timed here, one at a time.

Baselines are the ones a user could pick instead of quantizing: float eager, float
under torch.compile and bf16 autocast. Every quantized row is judged against the
*best* of them at each batch size, and flagged when slower or less accurate than
the stated tolerance allows.
"""
from __future__ import annotations

import copy
import logging
import time
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from quantwise import api
from quantwise.config import QAT, Recipe, parse_recipe, preset_names, recipe_name
from quantwise.errors import QuantwiseError, first_line
from quantwise.evaluate.latency import Latency, batch_of, measure
from quantwise.evaluate.metrics import HIGHER_IS_BETTER, evaluate, outputs
from quantwise.evaluate.runtime import RUNTIMES
from quantwise.fanout import InProcess, Tasks, folder_files, in_order, write_files
from quantwise.findings import Finding, Kind, within_budget
from quantwise.progress import ProgressFn, no_progress
from quantwise.models.base import ModelBundle
from quantwise.versions import NO_NATIVE_BF16, machine, native_bf16, versions

log = logging.getLogger(__name__)
DEFAULT_RECIPES = preset_names("classic", compare=True)


@dataclass
class Row:
    name: str
    kind: str  # "baseline" or "quantized"
    runtime: str  # eager, compiled, bf16
    size_mb: float | None = None
    latency: dict[int, Latency] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    quantize_s: float | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    error: str | None = None
    speedup: dict[int, float] = field(default_factory=dict)
    size_ratio: float | None = None


@dataclass
class CompareReport:
    model: str
    description: str
    task: str
    primary: str
    tolerance: float
    calibration: str
    evaluation: str
    batches: tuple[int, ...]
    threads: int
    rows: list[Row]
    best: dict[int, str]
    versions: dict[str, str]
    machine: dict[str, str]
    ran: str = "in process"  # where the recipes were quantized and evaluated (quantwise.fanout); timing is always here

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for row in data["rows"]:
            row["latency"] = {str(b): lat for b, lat in row["latency"].items()}
            row["speedup"] = {str(b): s for b, s in row["speedup"].items()}
        data["best"] = {str(b): v for b, v in self.best.items()}
        return data


@dataclass
class CompareOptions:
    recipes: tuple[str, ...] = DEFAULT_RECIPES
    batches: tuple[int, ...] = (1, 32)
    compile: bool = True
    repeats: int = 20
    max_seconds: float = 10.0
    batch_size: int = 32
    progress: ProgressFn = no_progress
    targets: tuple[str, ...] = ("pytorch",)  # "onnxruntime" / "executorch": also export each recipe there and time it there
    peers: bool = False  # ONNX Runtime float and its own static/dynamic quantizers as rows


def _time(row: Row, fn: Any, example: tuple[torch.Tensor, ...], opts: CompareOptions) -> None:
    for b in opts.batches:
        row.latency[b] = measure(fn, batch_of(example, b), warmup=3, repeats=opts.repeats, max_seconds=opts.max_seconds)


def _float_size_mb(model: torch.nn.Module, dtype: torch.dtype | None = None) -> float:
    from safetensors.torch import save_file

    state = {k: (v.to(dtype) if dtype and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    # tied weights share storage; safetensors refuses shared tensors, so clone them apart
    state = {k: v.clone() for k, v in state.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "float.safetensors"
        save_file(state, str(path))
        return path.stat().st_size / 1e6


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def _baselines(bundle: ModelBundle, reference: torch.Tensor, opts: CompareOptions) -> list[Row]:
    example = bundle.example_inputs(1)
    size = _float_size_mb(bundle.model)
    rows = [Row("float", "baseline", "eager", size_mb=size)]
    if opts.compile:
        rows.append(Row("float compiled", "baseline", "compiled", size_mb=size))
    bf16 = Row("bf16 autocast", "baseline", "bf16", size_mb=_float_size_mb(bundle.model, torch.bfloat16))
    if not native_bf16():
        bf16.error = NO_NATIVE_BF16  # timing an emulated bf16 model takes minutes and cannot win
    rows.append(bf16)
    for row in (r for r in rows if not r.error):
        log.info("measuring %s", row.name)
        fn = RUNTIMES[row.runtime](bundle.model)
        if row.runtime == "compiled":
            row.metrics = dict(rows[0].metrics)
            row.notes.append("same weights as float; accuracy not re-measured")
        else:
            row.metrics = _metrics(fn, bundle, reference, opts)
        _time(row, fn, example, opts)
    return rows


def _metrics(fn: Any, bundle: ModelBundle, reference: torch.Tensor, opts: CompareOptions) -> dict[str, float]:
    class _Wrap(torch.nn.Module):  # evaluate() takes a module
        def forward(self, *x: torch.Tensor) -> torch.Tensor:
            return fn(*x)

    return evaluate(_Wrap(), bundle, reference, opts.batch_size)


def _runtime_row(row: Row, fn: Any, path: Path, bundle: ModelBundle, reference: torch.Tensor, opts: CompareOptions) -> Row:
    row.size_mb = path.stat().st_size / 1e6
    row.metrics = _metrics(fn, bundle, reference, opts)
    log.info("timing %s", row.name)
    _time(row, fn, bundle.example_inputs(1), opts)
    return row


def _failed(row: Row, err: Exception) -> Row:
    if not isinstance(err, QuantwiseError):
        log.exception("%s failed", row.name)
    row.error = str(err) if isinstance(err, QuantwiseError) else f"failed: {type(err).__name__}: {first_line(err)}"
    return row


def _peer_rows(bundle: ModelBundle, reference: torch.Tensor, workdir: Path, opts: CompareOptions) -> list[Row]:
    """ONNX Runtime float (a baseline a user could deploy instead) and its own quantizers (peers)."""

    from quantwise.export.onnx_target import load
    from quantwise.peers import onnxruntime as ort_peer

    rows = []
    try:
        float_path = ort_peer.export_float(bundle, workdir / "float.onnx")
    except Exception as err:
        return [_failed(Row("onnxruntime float", "baseline", "onnxruntime"), err)]
    for name, kind, make in ort_peer.PEERS:
        row = Row(name, kind, "onnxruntime")
        log.info("measuring %s", name)
        try:
            start = time.perf_counter()
            path = make(bundle, float_path, workdir)
            if kind == "peer":
                row.quantize_s = time.perf_counter() - start
                row.notes.append("peer: ONNX Runtime's quantizer, not quantwise's (quant_pre_process, then quantize_static QDQ per-channel / quantize_dynamic)")
            rows.append(_runtime_row(row, load(path, torch.get_num_threads()), path, bundle, reference, opts))
        except Exception as err:
            rows.append(_failed(row, err))
    return rows


RUNTIME_TARGETS = {"onnxruntime": "onnx", "executorch": "executorch"}  # --target runtime -> export target


def _exported_row(name: str, artifact: Path, bundle: ModelBundle, reference: torch.Tensor, opts: CompareOptions, runtime: str = "onnxruntime") -> Row:
    """The recipe's own model exported for ``runtime`` (parity-checked) and run there."""
    from quantwise.export import export_artifact
    from quantwise.export.formats import target_for

    row = Row(f"{name} -> {runtime}", "quantized", runtime)
    target = target_for(RUNTIME_TARGETS[runtime])
    try:
        result = export_artifact(artifact, target.name, bundle=bundle, samples=min(256, len(bundle.evaluation)))
    except Exception as err:
        return _failed(row, err)
    q = result.parity.vs_quantized
    row.notes = [*result.notes, f"parity with the PyTorch int8 model: max |diff| {q.max_abs:.3g}, cosine {q.cosine:.5f}" + ("" if q.agreement is None else f", top-1 agreement {q.agreement:.4f}")]
    if runtime == "executorch":
        row.notes.append("the .pte takes one sample per call (as on a phone): batch B is timed as B calls")
    return _runtime_row(row, target.load(result.path, torch.get_num_threads()), result.path, bundle, reference, opts)


@dataclass
class _RowInputs:
    """What a recipe's unit reads (shared once)."""

    bundle: ModelBundle
    reference: torch.Tensor
    batch_size: int
    workdir: str | None  # in process: save the artifact here; on a worker: into a temporary folder, handed back as bytes
    progress: ProgressFn = no_progress


def _measure_unit(inp: _RowInputs, recipe: Recipe) -> tuple[Row, dict[str, bytes] | Path | None, Any]:
    """Quantize with ``recipe``, evaluate on the whole split and save the artifact. Returns the row
    (not timed), the artifact (its path here, or its files from a worker) and, here, the result."""
    name = recipe_name(recipe)
    row = Row(name, "quantized", "eager")
    log.info("quantizing with %s", name)
    try:
        result = api.quantize(inp.bundle, recipe, progress=inp.progress, batch_size=inp.batch_size)
    except Exception as err:  # not applicable, or broken on this model: say why, keep the other rows
        return _failed(row, err), None, None
    q = result.quantized
    row.quantize_s = result.seconds
    row.notes = list(q.notes)
    row.metrics = evaluate(q.module, inp.bundle, inp.reference, inp.batch_size)
    row.runtime = "compiled" if q.compiled else "eager"
    folder = _artifact_name(name)
    if inp.workdir is not None:
        path = api.save(result, Path(inp.workdir) / folder, metrics=row.metrics)
        row.size_mb = _dir_mb(path)
        return row, path, result
    with tempfile.TemporaryDirectory(prefix="quantwise-unit-") as tmp:
        path = api.save(result, Path(tmp) / folder, metrics=row.metrics)
        row.size_mb = _dir_mb(path)
        return row, folder_files(path), None


def _artifact_name(name: str) -> str:
    return name.replace(":", "_").replace(",", "_")


def _timed_row(bundle: ModelBundle, row: Row, artifact: dict[str, bytes] | Path | None, result: Any, workdir: Path, opts: CompareOptions) -> tuple[Row, Path | None]:
    """Time a measured row in this process (its model as quantized here, or restored from the
    artifact a worker made); returns the row and the artifact's path here."""
    if artifact is None:
        return row, None
    path = write_files(artifact, workdir / _artifact_name(row.name)) if isinstance(artifact, dict) else artifact
    compiled = row.runtime == "compiled"
    row.runtime = "compiled" if (compiled and opts.compile) else "eager"
    if compiled and not opts.compile:
        row.notes.append("needs torch.compile to be fast; timed in eager mode because compilation was turned off")
    log.info("timing %s (%s)", row.name, row.runtime)
    try:
        arch = bundle.build_arch() if bundle.build_arch else copy.deepcopy(bundle.model)  # a user's model: its own architecture
        module = result.quantized.module if result is not None else api.load(path, arch).module
        _time(row, RUNTIMES[row.runtime](module), bundle.example_inputs(1), opts)
    except Exception as err:  # e.g. a graph this runtime cannot compile: keep the other rows
        row.latency.clear()
        return _failed(row, err), path
    return row, path


def _judge(report_rows: list[Row], bundle: ModelBundle, opts: CompareOptions) -> dict[int, str]:
    baselines = [r for r in report_rows if r.kind == "baseline" and r.latency]
    float_row = report_rows[0]
    best: dict[int, str] = {}
    primary = bundle.primary
    higher = HIGHER_IS_BETTER.get(primary, True)
    ref_value = float_row.metrics.get(primary)
    for row in report_rows:
        if row.size_mb is not None and float_row.size_mb:
            row.size_ratio = row.size_mb / float_row.size_mb
        if row.error:
            continue
        value = row.metrics.get(primary)
        if ref_value is not None and value is not None and row is not float_row:
            drop = (ref_value - value) if higher else (value - ref_value)
            if drop > bundle.tolerance:
                row.warnings.append(Finding(Kind.ACCURACY, f"{primary} drops {drop:.4g} vs float (tolerance {bundle.tolerance:g})"))
    for b in opts.batches:
        fastest = min(baselines, key=lambda r: r.latency[b].median_ms)
        for row in report_rows:
            if b not in row.latency:
                continue
            row.speedup[b] = fastest.latency[b].median_ms / row.latency[b].median_ms
            if row.kind == "quantized" and row.speedup[b] < 1.0:
                row.warnings.append(Finding(Kind.SPEED, f"slower than the best float baseline ({fastest.name}) at batch {b}"))
        winners = [r for r in report_rows if r.kind == "quantized" and b in r.speedup and r.speedup[b] >= 1.0 and within_budget(r.warnings)]
        best[b] = max(winners, key=lambda r: r.speedup[b]).name if winners else f"none: no quantized model beats {fastest.name} within tolerance"
    return best


def compare(bundle: ModelBundle, opts: CompareOptions | None = None, tasks: Tasks | None = None) -> CompareReport:
    """Every row measured and timed (see the module docstring). ``tasks``: where each recipe is
    quantized and evaluated (default: in this process; ``quantwise.fanout`` for Ray); timing
    always happens here, one row at a time, with no unit running."""
    opts = opts or CompareOptions()
    tasks = tasks or InProcess()
    recipes = [parse_recipe(r) for r in opts.recipes]
    log.info("float reference outputs on %d evaluation samples", len(bundle.evaluation))
    reference = outputs(bundle.model, bundle.evaluation, opts.batch_size)
    rows = _baselines(bundle, reference, opts)
    with tempfile.TemporaryDirectory(prefix="quantwise-compare-") as tmp:
        if opts.peers:
            rows += _peer_rows(bundle, reference, Path(tmp), opts)
        skipped = {id(r) for r in recipes if isinstance(r, QAT) and bundle.train is None and opts.recipes == DEFAULT_RECIPES}
        runnable = [r for r in recipes if id(r) not in skipped]
        here = isinstance(tasks, InProcess)
        shared = tasks.share(_RowInputs(bundle, reference, opts.batch_size, tmp if here else None, opts.progress if here else no_progress))
        measured = in_order(tasks, _measure_unit, runnable, shared, progress=opts.progress, label="compare: quantize and evaluate each recipe")
        for recipe in recipes:  # timed here, one at a time, with no unit running
            if id(recipe) in skipped:
                rows.append(Row(recipe_name(recipe), "quantized", "eager", error="skipped by default: this model has no training split (name --recipes qat to distil the float model)"))
                continue
            row, artifact = _timed_row(bundle, *next(measured), Path(tmp), opts)
            rows.append(row)
            for runtime in (t for t in opts.targets if t in RUNTIME_TARGETS):
                rows.append(_exported_row(row.name, artifact, bundle, reference, opts, runtime) if artifact
                            else Row(f"{row.name} -> {runtime}", "quantized", runtime, error="not exported: the recipe did not run"))
    best = _judge(rows, bundle, opts)
    return CompareReport(
        model=bundle.name,
        description=bundle.description,
        task=bundle.task,
        primary=bundle.primary,
        tolerance=bundle.tolerance,
        calibration=bundle.calibration.description,
        evaluation=bundle.evaluation.description,
        batches=opts.batches,
        threads=torch.get_num_threads(),
        rows=rows,
        best=best,
        versions=versions(),
        machine=machine(),
        ran=tasks.description,
    )
