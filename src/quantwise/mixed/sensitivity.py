"""Per-layer sensitivity: which layers a recipe hurts, cheap proxy first, real metric second.

Phase 1 (proxy, every layer): on a small subset of the evaluation split, the output SQNR
against float when only that layer is quantized, and when only that layer is kept float
(everything else quantized), through ``simulate`` (exact swaps for dynamic recipes,
fake quantization for static ones). Layers are ranked by the proxy *gain* of keeping
them float (dB above the all-quantized SQNR), which is the decision ``auto`` takes.

Phase 2 (confirmation, ``top_k`` best-ranked layers plus ``controls`` layers spread over
the rest of the ranking): the model's primary metric on the whole evaluation split, with
the recipe really applied (``keep_float``), again both ways. The controls make the
reported agreement between the proxy's top 5 and the real metric's top 5 a measurement
rather than a tautology.

The real ranking orders the confirmed layers by a continuous metric over the whole split:
the primary metric itself when it is continuous (cosine, perplexity), and for classifiers
judged by a count (top-1 agreement or accuracy) the KL divergence of the output
distribution from float's. A count cannot rank layers whose effect is a few samples: on
efficientnet-lite0's 256 crops one layer kept float moves agreement by -3..+3 crops, as
much as moving the input pixels by half a grey level does (benchmarks/RESULTS.md), while
KL and output SQNR over the same split give one consistent order. The primary metric is
still measured and reported for every confirmed layer.

Reports are cached on disk (``cache_dir()/sensitivity``) keyed by the model, the recipe
and the data sizes, so a second run (or ``auto``) does not pay again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from quantwise.config import Recipe, recipe_name, recipe_to_dict
from quantwise.data.base import TensorSet
from quantwise.data.cache import cache_dir
from quantwise.errors import QuantwiseError
from quantwise.fanout import InProcess, Tasks
from quantwise.files import atomic_write_text
from quantwise.evaluate.metrics import HIGHER_IS_BETTER, fidelity, outputs, sqnr_db
from quantwise.progress import ProgressFn, no_progress
from quantwise.mixed.simulate import simulator
from quantwise.models.base import ModelBundle
from quantwise.versions import versions

log = logging.getLogger(__name__)
CACHE_VERSION = 3
COUNT_METRICS = frozenset({"agreement", "top1"})  # move in steps of one sample
PROXY = "output SQNR (dB) against float"


@dataclass
class LayerSensitivity:
    """One layer. ``proxy_*`` are SQNRs in dB; ``metric_*`` the primary metric (confirmed layers only).

    ``alone``: only this layer quantized; ``float``: everything but this layer quantized.
    """

    name: str
    kind: str
    proxy_alone: float
    proxy_float: float
    proxy_gain: float
    proxy_rank: int
    metric_alone: float | None = None
    metric_float: float | None = None
    full_rank: int | None = None
    control: bool = False
    sqnr_float: float | None = None  # output SQNR (dB) over the whole evaluation split, this layer float, real recipe
    ranked_float: float | None = None  # the ranking metric (SensitivityReport.ranking_metric) over the whole split, this layer float


@dataclass
class SensitivityReport:
    model: str
    recipe: dict[str, Any]
    recipe_name: str
    primary: str
    higher_is_better: bool
    proxy: str
    proxy_samples: int
    proxy_exact: bool  # True when the proxy model is the real quantized layers (dynamic)
    evaluation: str
    n_evaluation: int
    float_metric: float
    quantized_metric: float  # every layer quantized, real recipe
    proxy_all: float  # SQNR with every layer quantized, in the proxy
    layers: list[LayerSensitivity]  # by proxy rank
    confirmed: list[str]
    top5_agreement: float | None
    rank_correlation: float | None
    seconds: dict[str, float]
    cached: bool = False
    quantized_sqnr: float | None = None  # every layer quantized, output SQNR over the whole evaluation split
    tied: int = 0  # confirmed layers whose ranking-metric gain equals another's (then ordered by the full-split SQNR)
    ranking_metric: str = ""  # what the real ranking orders by (see the module docstring)
    quantized_ranked: float | None = None  # the ranking metric with every layer quantized
    ran: str = "in process"  # where the per-layer units ran (quantwise.fanout)

    def improvement(self, layer: LayerSensitivity) -> float | None:
        """Gain of the primary metric (in its better direction) from keeping ``layer`` float."""
        if layer.metric_float is None:
            return None
        sign = 1.0 if self.higher_is_better else -1.0
        return sign * (layer.metric_float - self.quantized_metric)

    def ranked_gain(self, layer: LayerSensitivity) -> float | None:
        """Gain of the ranking metric (in its better direction) from keeping ``layer`` float."""
        if layer.ranked_float is None or self.quantized_ranked is None:
            return None
        sign = 1.0 if HIGHER_IS_BETTER.get(self.ranking_metric, True) else -1.0
        return sign * (layer.ranked_float - self.quantized_ranked)

    def drop_alone(self, layer: LayerSensitivity) -> float | None:
        """Loss of the primary metric against float when only ``layer`` is quantized."""
        if layer.metric_alone is None:
            return None
        sign = 1.0 if self.higher_is_better else -1.0
        return sign * (self.float_metric - layer.metric_alone)

    def ranking(self) -> list[str]:
        """Layers most worth keeping float first: confirmed ones by the real metric, then the proxy order."""
        confirmed = sorted((l for l in self.layers if l.full_rank is not None), key=lambda l: l.full_rank)
        return [l.name for l in confirmed] + [l.name for l in self.layers if l.full_rank is None]

    def layer(self, name: str) -> LayerSensitivity:
        return next(l for l in self.layers if l.name == name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SensitivityReport:
        data = dict(data)
        data["layers"] = [LayerSensitivity(**l) for l in data["layers"]]
        return cls(**data)


@dataclass
class SensitivityOptions:
    proxy_samples: int = 32
    top_k: int = 5
    controls: int = 3
    batch_size: int = 32
    use_cache: bool = True
    confirm: bool = True  # False: proxy only (what auto needs when no full report is cached)
    # also confirm "only this layer int8" with the real metric; None: only where that is cheap
    # (dynamic recipes, whose proxy is exact); static recipes then confirm the ranking direction only
    confirm_alone: bool | None = None
    progress: ProgressFn = no_progress


def primary_metric(module: nn.Module, bundle: ModelBundle, reference: torch.Tensor, batch_size: int = 32) -> float:
    """The bundle's primary metric on the whole evaluation split (fidelity metrics without the downstream tasks when possible)."""
    return _measured(module, bundle, reference, batch_size)[0]


def ranking_metric(bundle: ModelBundle) -> str:
    """The continuous metric that orders confirmed layers (see the module docstring)."""
    return "kl" if bundle.task == "classification" and bundle.primary in COUNT_METRICS else bundle.primary


def _measured(module: nn.Module, bundle: ModelBundle, reference: torch.Tensor, batch_size: int) -> tuple[float, float, float]:
    """(primary metric, output SQNR in dB against float, ranking metric), all on the whole evaluation split."""
    from quantwise.evaluate.metrics import evaluate

    out = outputs(module, bundle.evaluation, batch_size)
    sqnr = _finite(sqnr_db(reference, out))
    values = fidelity(bundle.task, reference, out, bundle.evaluation.targets)
    if bundle.primary not in values:
        values = {**values, **evaluate(module, bundle, reference, batch_size)}
    return values[bundle.primary], sqnr, values[ranking_metric(bundle)]


def content_digest(*tensors: torch.Tensor | None) -> str:
    """A hash of tensors' dtypes, shapes and bytes: what a cache entry computed from them depends on."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().contiguous().cpu()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _cache_key(bundle: ModelBundle, recipe: Recipe, opts: SensitivityOptions) -> str:
    """Keyed on content, not names: the model's weights, the calibration and evaluation data, the
    options and the library versions (a quantizer's numerics change between releases)."""
    state = bundle.model.state_dict()
    ident = {
        "v": CACHE_VERSION, "model": bundle.name, "recipe": recipe_to_dict(recipe),
        "weights": content_digest(*(state[k] for k in sorted(state))),
        "calibration": content_digest(*bundle.calibration.inputs, bundle.calibration.targets),
        "evaluation": content_digest(*bundle.evaluation.inputs, bundle.evaluation.targets),
        "versions": {k: v for k, v in versions().items() if k in ("torch", "torchao", "quantwise")},
        "proxy_samples": opts.proxy_samples, "top_k": opts.top_k, "controls": opts.controls, "confirm": opts.confirm,
        "confirm_alone": opts.confirm_alone,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def cached_report(bundle: ModelBundle, recipe: Recipe, opts: SensitivityOptions | None = None) -> SensitivityReport | None:
    """A full report computed earlier (default options unless given), or None."""
    recipe = dataclasses.replace(recipe, keep_float=()) if hasattr(recipe, "keep_float") else recipe
    return _read_cache(_cache_key(bundle, recipe, opts or SensitivityOptions()))


def _read_cache(key: str) -> SensitivityReport | None:
    path = cache_dir() / "sensitivity" / f"{key}.json"
    if not path.is_file():
        return None
    try:
        report = SensitivityReport.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as err:
        log.warning("ignoring unreadable sensitivity cache %s: %s", path, err)
        return None
    report.cached = True
    return report


def _write_cache(key: str, report: SensitivityReport) -> None:
    path = cache_dir() / "sensitivity" / f"{key}.json"
    try:
        atomic_write_text(path, json.dumps(report.to_dict(), allow_nan=True))
    except OSError as err:
        log.warning("could not write sensitivity cache %s: %s", path, err)


def _ranks(values: list[float]) -> torch.Tensor:
    """1-based ranks, ties sharing their mean rank."""
    v = torch.tensor(values, dtype=torch.float64)
    return torch.stack([(v < x).sum() + ((v == x).sum() + 1) / 2 for x in v]).double()


def _spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman rank correlation; None when either side is constant or too short."""
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def _finite(x: float) -> float:
    return min(x, 200.0)  # an exact layer gives inf dB; cap it so gains stay comparable


@dataclass
class _ProxyInputs:
    """What a proxy unit reads (shared once): the stand-in model and the evaluation subset."""

    sim: Any
    subset: TensorSet
    reference: torch.Tensor
    layers: list[str]
    batch_size: int


def _proxy_unit(inp: _ProxyInputs, name: str) -> tuple[float, float]:
    """One layer's proxy: (SQNR with only it quantized, SQNR with only it kept float)."""
    def proxy(quantized: list[str]) -> float:
        return _finite(sqnr_db(inp.reference, outputs(inp.sim.set_quantized(quantized), inp.subset, inp.batch_size)))

    return proxy([name]), proxy([m for m in inp.layers if m != name])


@dataclass
class _RealInputs:
    """What a confirmation unit reads (shared once): the model and data, the recipe, float's outputs."""

    bundle: ModelBundle
    recipe: Recipe
    sim: Any  # the exact stand-in (dynamic recipes), else None: the recipe is applied for real
    layers: list[str]
    reference: torch.Tensor
    batch_size: int


def _real_unit(inp: _RealInputs, keep: tuple[str, ...]) -> tuple[float, float, float]:
    """The recipe with ``keep`` left float, measured on the whole evaluation split (see ``_measured``)."""
    from quantwise import api

    if inp.sim is not None:  # the swapped model is the recipe's model with these layers float
        module = inp.sim.set_quantized([n for n in inp.layers if n not in keep])
    else:
        module = api.quantize(inp.bundle, dataclasses.replace(inp.recipe, keep_float=keep), batch_size=inp.batch_size).quantized.module
    return _measured(module, inp.bundle, inp.reference, inp.batch_size)


def analyse(bundle: ModelBundle, recipe: Recipe, opts: SensitivityOptions | None = None, tasks: Tasks | None = None) -> SensitivityReport:
    """Per-layer sensitivity of ``recipe`` on ``bundle`` (see the module docstring). ``tasks``: where
    the per-layer units run (default: in this process; ``quantwise.fanout`` for a Ray cluster)."""
    opts = opts or SensitivityOptions()
    tasks = tasks or InProcess()
    if opts.top_k < 1 or opts.controls < 0 or opts.proxy_samples < 1:
        raise QuantwiseError("sensitivity needs top_k >= 1, controls >= 0 and proxy_samples >= 1", "e.g. --top-k 5")
    recipe = dataclasses.replace(recipe, keep_float=()) if hasattr(recipe, "keep_float") else recipe
    key = _cache_key(bundle, recipe, opts)
    if opts.use_cache and (hit := _read_cache(key)) is not None:
        log.info("sensitivity: cache hit (%s)", key)
        return hit
    start = time.perf_counter()
    sim = simulator(bundle.model, recipe, bundle.calibration, opts.batch_size, opts.progress)
    layers = sim.layers
    if not layers:
        raise QuantwiseError(f"the {recipe.kind} recipe quantizes no layer of this model", "pick a recipe that applies (see 'quantwise compare')")
    subset: TensorSet = bundle.evaluation.take(opts.proxy_samples)
    ref_subset = outputs(bundle.model, subset, opts.batch_size)
    proxy_all = _finite(sqnr_db(ref_subset, outputs(sim.set_quantized(layers), subset, opts.batch_size)))
    pairs = tasks.map(_proxy_unit, layers, tasks.share(_ProxyInputs(sim, subset, ref_subset, layers, opts.batch_size)),
                      progress=opts.progress, label="proxy: each layer quantized alone, and kept float alone")
    alone = {n: a for n, (a, _) in zip(layers, pairs)}
    kept = {n: k for n, (_, k) in zip(layers, pairs)}
    order = sorted(layers, key=lambda n: (-(kept[n] - proxy_all), alone[n]))
    rows = [
        LayerSensitivity(n, type(bundle.model.get_submodule(n)).__name__, alone[n], kept[n], kept[n] - proxy_all, rank + 1)
        for rank, n in enumerate(order)
    ]
    proxy_seconds = time.perf_counter() - start
    log.info("sensitivity: proxy done in %.0f s (%d layers); most sensitive: %s", proxy_seconds, len(layers), ", ".join(order[:5]))

    start = time.perf_counter()
    reference = outputs(bundle.model, bundle.evaluation, opts.batch_size)
    float_metric = primary_metric(bundle.model, bundle, reference, opts.batch_size)
    top = order[: opts.top_k] if opts.confirm else []
    rest = order[opts.top_k:] if opts.confirm else []
    controls = [rest[round(i * (len(rest) - 1) / max(1, opts.controls - 1))] for i in range(opts.controls)] if rest and opts.controls else []
    confirmed = top + [c for c in dict.fromkeys(controls) if c not in top]
    both = sim.exact if opts.confirm_alone is None else opts.confirm_alone
    # the units: all quantized, then each confirmed layer kept float, then (both) each quantized alone
    units: list[tuple[str, ...]] = ([()] if opts.confirm else []) + [(n,) for n in confirmed]
    units += [tuple(m for m in layers if m != n) for n in confirmed] if both else []
    measured = tasks.map(_real_unit, units, tasks.share(_RealInputs(bundle, recipe, sim if sim.exact else None, layers, reference, opts.batch_size)),
                         progress=opts.progress, label="confirming with the real metric") if units else []
    quantized_metric, quantized_sqnr, quantized_ranked = measured[0] if opts.confirm else (math.nan, None, None)
    for i, n in enumerate(confirmed):
        row = next(r for r in rows if r.name == n)
        row.metric_float, row.sqnr_float, row.ranked_float = measured[1 + i]
        row.metric_alone = measured[1 + len(confirmed) + i][0] if both else None
        row.control = n not in top
    report = SensitivityReport(
        model=bundle.name, recipe=recipe_to_dict(recipe), recipe_name=recipe_name(recipe), primary=bundle.primary,
        higher_is_better=HIGHER_IS_BETTER.get(bundle.primary, True),
        proxy=f"{PROXY} on {len(subset)} evaluation samples" + (" (real quantized layers swapped in)" if sim.exact else " (fake-quantized weights and layer inputs)"),
        proxy_samples=len(subset), proxy_exact=sim.exact, evaluation=bundle.evaluation.description, n_evaluation=len(bundle.evaluation),
        float_metric=float_metric, quantized_metric=quantized_metric, proxy_all=proxy_all, layers=rows, confirmed=confirmed,
        top5_agreement=None, rank_correlation=None, seconds={}, quantized_sqnr=quantized_sqnr,
        ranking_metric=ranking_metric(bundle), quantized_ranked=quantized_ranked, ran=tasks.description,
    )
    _rank_confirmed(report)
    report.seconds = {"proxy": proxy_seconds, "confirm": time.perf_counter() - start}
    report.seconds["total"] = report.seconds["proxy"] + report.seconds["confirm"]
    if opts.use_cache:
        _write_cache(key, report)
    return report


def _rank_confirmed(report: SensitivityReport) -> None:
    """The real ranking: the ranking metric's gain over the whole split (the primary metric's when
    no ranking metric was measured), ties decided by the output SQNR over the whole split, then by
    the other direction. Never by the proxy rank: that would make agreement with it circular."""
    rows = [report.layer(n) for n in report.confirmed]

    def gain(r: LayerSensitivity) -> float:
        value = report.ranked_gain(r) if report.ranking_metric else report.improvement(r)
        return value or 0.0

    gains = [gain(r) for r in rows]
    report.tied = sum(1 for g in gains if gains.count(g) > 1)
    by_full = sorted(rows, key=lambda r: (-gain(r), -(r.sqnr_float if r.sqnr_float is not None else -math.inf),
                                          -(report.drop_alone(r) or 0.0), r.name))
    for rank, row in enumerate(by_full):
        row.full_rank = rank + 1
    if len(rows) > 5:
        proxy_top = {r.name for r in sorted(rows, key=lambda r: r.proxy_rank)[:5]}
        report.top5_agreement = len(proxy_top & {r.name for r in by_full[:5]}) / 5
    report.rank_correlation = _spearman([-r.proxy_rank for r in rows], gains)
