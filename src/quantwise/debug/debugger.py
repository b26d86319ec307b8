"""Layer-by-layer debugging of a quantized classic model against its float original.

For every quantized layer: the error of its own output when fed the float model's input
(isolated) and when fed the quantized model's own activations (propagated), weight and
input-range statistics; at the model output the task's fidelity metrics; a one-line
diagnosis; and raw values of one layer for histograms. Definitions: debug/stats.py.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from quantwise.config import QAT, DynamicInt8, Recipe, StaticInt8, parse_recipe, recipe_name
from quantwise.data.base import Inputs, TensorSet
from quantwise.debug.ablation import FloatChain, SourceMeter
from quantwise.debug.capture import Backend, LayerWeights, QuantizedRun, QuantLayer
from quantwise.debug.capture_graph import GraphBackend, is_pt2e_graph
from quantwise.debug.capture_modules import ModuleBackend
from quantwise.debug.diagnose import diagnose
from quantwise.debug.float_side import Call, Chain, FloatRecorder, call_name, first_tensor, parse_call, trace_chains
from quantwise.debug.results import DebugReport, HistogramData, LayerDebug
from quantwise.debug.stats import ActivationAccumulator, ErrorAccumulator, subsample, weight_stats
from quantwise.errors import QuantwiseError
from quantwise.evaluate.metrics import fidelity
from quantwise.methods.base import Quantized
from quantwise.progress import ProgressFn, no_progress
from quantwise.models.base import ModelBundle

SUPPORTED_RECIPES = (DynamicInt8, StaticInt8, QAT)


def backend_for(model: nn.Module, float_model: nn.Module, chains: list[Chain], weight_bits: int) -> Backend:
    """PT2E graphs (aten ops with quantize/dequantize nodes) vs models with quantized modules."""
    if is_pt2e_graph(model):
        return GraphBackend(model, chains)
    return ModuleBackend(model, float_model, chains, weight_bits)


@dataclass
class DebugOptions:
    """``samples`` evaluation samples in batches of ``batch_size``; ``layer`` picks the
    layer whose raw values are kept for histograms (default: worst propagated SQNR)."""

    samples: int = 32
    batch_size: int = 4
    layer: str | None = None
    histogram_values: int = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1 or self.batch_size < 1:
            raise QuantwiseError(f"--samples and the batch size must be at least 1 (got {self.samples}, {self.batch_size})", "e.g. --samples 32")


def check_recipe(recipe: Recipe) -> None:
    if not isinstance(recipe, SUPPORTED_RECIPES):
        raise QuantwiseError(
            f"the layer debugger does not handle {recipe.kind} recipes (language-model recipes)",
            "use a classic recipe: dynamic, static-fx, static-pt2e, qat, or static:/dynamic:/qat:key=value",
        )


def check_layer_name(model: nn.Module, name: str) -> None:
    """Fail before any slow work when ``name`` is not a module of the float model."""
    names = {n for n, _ in model.named_modules() if n}
    if parse_call(name)[0] not in names:
        close = sorted(n for n in names if name.split(".")[-1] in n)[:5] or sorted(names)[:5]
        raise QuantwiseError(f"--layer {name!r} is not a module of the float model", f"use a layer name from the table, e.g. {', '.join(close)}")


def debug_recipe(bundle: ModelBundle, recipe: Recipe | str, options: DebugOptions | None = None, progress: ProgressFn = no_progress) -> DebugReport:
    """Quantize ``bundle`` with ``recipe``, then debug the result layer by layer."""
    from quantwise import api

    options = options or DebugOptions()
    recipe = parse_recipe(recipe) if isinstance(recipe, str) else recipe
    check_recipe(recipe)
    if options.layer:
        check_layer_name(bundle.model, options.layer)
    result = api.quantize(bundle, recipe, progress=progress)
    return debug(bundle, result.quantized, options, progress)


def debug(bundle: ModelBundle, quantized: Quantized, options: DebugOptions | None = None, progress: ProgressFn = no_progress) -> DebugReport:
    """Debug an already quantized model (e.g. loaded from an artifact, or edited by hand)."""
    check_recipe(quantized.recipe)
    return measure(bundle, quantized, options, progress)


OutputMetrics = Callable[[torch.Tensor, torch.Tensor, TensorSet], dict[str, float]]
BackendFactory = Callable[[nn.Module, nn.Module, list[Chain]], Backend]


def measure(
    bundle: ModelBundle, quantized: Quantized, options: DebugOptions | None = None, progress: ProgressFn = no_progress,
    make_backend: BackendFactory | None = None, output_metrics: OutputMetrics | None = None,
) -> DebugReport:
    """The debugger itself, for any model whose quantized layers a backend can find
    (``make_backend``) and whose outputs ``output_metrics`` can score (default: the task's
    fidelity metrics plus the top-1 flip rate)."""
    options = options or DebugOptions()
    if options.layer:
        check_layer_name(bundle.model, options.layer)
    data = bundle.evaluation.take(options.samples)
    float_model = bundle.model.eval()
    chains = {c.layer: c for c in trace_chains(float_model, data.example(1))}
    if make_backend is None:
        bits = getattr(quantized.recipe, "weight_bits", 8)
        make_backend = lambda q, f, c: backend_for(q, f, c, bits)  # noqa: E731
    backend = make_backend(quantized.module, float_model, list(chains.values()))
    try:
        if not backend.layers:
            raise QuantwiseError("no quantized conv/linear/LSTM/GRU/embedding layer matches a float module", "check that the recipe quantizes this model (quantwise compare)")
        return _measure(bundle, quantized, backend, chains, data, options, progress, output_metrics or _fidelity(bundle))
    finally:
        backend.close()


def _fidelity(bundle: ModelBundle) -> OutputMetrics:
    def metrics(reference: torch.Tensor, test: torch.Tensor, data: TensorSet) -> dict[str, float]:
        output = fidelity(bundle.task, reference, test, data.targets)
        if "agreement" in output:
            output["flip_rate"] = 1.0 - output["agreement"]
        return output

    return metrics


@dataclass
class _Plan:
    """How one quantized layer is compared: the float call whose input it takes, the one
    whose output it is compared with, and an activation to apply when the float model
    applies it as a function (no module to hook)."""

    layer: QuantLayer
    chain: Chain
    parts: list[Call]
    extra_activation: bool

    @property
    def reference(self) -> Call:
        return self.parts[-1]


def _plan(layer: QuantLayer, chain: Chain) -> _Plan:
    parts = [layer.call]
    if layer.folds_batch_norm and chain.batch_norm:
        parts.append(chain.batch_norm)
    extra = False
    if layer.activation is not None:
        if chain.activation:
            parts.append(chain.activation)
        else:
            extra = True
    return _Plan(layer, chain, parts, extra)


class _LayerMeter:
    """Everything measured for one quantized layer, accumulated batch by batch."""

    def __init__(self, plan: _Plan, chain: FloatChain, weights: LayerWeights | None) -> None:
        self.plan, self.chain, self.weights = plan, chain, weights
        self.isolated: ErrorAccumulator | None = ErrorAccumulator()
        self.nearest = ErrorAccumulator()
        self.propagated = ErrorAccumulator()
        self.inputs, self.outputs = ActivationAccumulator(), ActivationAccumulator()
        self.sources = SourceMeter()
        self.kept: list[torch.Tensor] = []

    def add(self, backend: Backend, recorder: FloatRecorder, run: QuantizedRun, inputs: Inputs, keep: int, generator: torch.Generator) -> None:
        layer, call = self.plan.layer, self.plan.layer.call
        reference = recorder.outputs[self.plan.reference]
        if self.plan.extra_activation:
            reference = layer.activation(reference)
        self.propagated.add(reference, run.layer_outputs[call])
        out_grid = run.output_grids.get(call)
        if out_grid is not None:
            self.outputs.add(reference, out_grid)
        args, grid = recorder.inputs[call], run.input_grids.get(call)
        if self.isolated is not None:
            try:
                self.isolated.add(reference, backend.isolated(layer, args, inputs, grid))
            except RuntimeError:  # a graph pattern that needs more than the layer's own input
                self.isolated = None
        nearest = getattr(backend, "nearest", None)  # only backends whose codes an algorithm chose
        out = nearest(layer, args) if nearest is not None else None
        if out is not None:
            self.nearest.add(reference, out)
        self.sources.add(self.chain, args, reference, grid, out_grid, self.weights.dequantized if self.weights else None)
        x = args[0]
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            self.inputs.add(x, grid)
            self.kept.append(subsample(x, keep, generator))

    def row(self, index: int, pair: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None) -> LayerDebug:
        p = self.plan
        return LayerDebug(
            index=index,
            name=call_name(p.layer.call),
            kind=p.layer.kind,
            quantized_as=p.layer.module_type,
            fused=[call_name(c) for c in p.parts] + ([f"{p.layer.activation_name} (functional)"] if p.extra_activation else []),
            isolated=self.isolated.result() if self.isolated is not None else None,
            propagated=self.propagated.result(),
            weights=weight_stats(*pair) if pair else None,
            inputs=self.inputs.result() if self.inputs.count else None,
            outputs=self.outputs.result() if self.outputs.grid is not None else None,
            sources=self.sources.result(),
            nearest=self.nearest.result() if self.nearest.count else None,
        )


def _measure(
    bundle: ModelBundle, quantized: Quantized, backend: Backend, chains: dict[Call, Chain], data: TensorSet,
    options: DebugOptions, progress: ProgressFn, output_metrics: OutputMetrics,
) -> DebugReport:
    plans = sorted((_plan(layer, chains[layer.call]) for layer in backend.layers), key=lambda p: list(chains).index(p.layer.call))
    if options.layer:
        _check_selected(options.layer, plans)
    modules = dict(bundle.model.named_modules())
    meters = [_LayerMeter(p, _float_chain(p, modules), backend.weights(p.layer)) for p in plans]
    if getattr(quantized.recipe, "rounding", "nearest") != "nearest" and hasattr(backend, "float_weights"):
        # learned rounding: each layer's error is also measured with its float weight rounded to nearest
        backend.float_weights = {p.layer.call: _float_weight(p, modules, "weight") for p in plans}
    batches = list(data.batches(options.batch_size))
    keep = math.ceil(options.histogram_values / max(len(batches), 1))
    generator = torch.Generator().manual_seed(options.seed)
    float_out, quant_out = [], []
    recorder = FloatRecorder(bundle.model, {p.layer.call for p in plans}, {p.reference for p in plans})
    try:
        for inputs, _ in progress("debugging layers", batches, len(batches)):
            float_out.append(_logits(recorder.run(inputs)))
            run = backend.run(inputs)
            quant_out.append(_logits(run.output))
            for meter in meters:
                meter.add(backend, recorder, run, inputs, keep, generator)
    finally:
        recorder.close()
    output = output_metrics(torch.cat(float_out), torch.cat(quant_out), data)
    pairs = [_weights(m.weights, m.plan, modules) for m in meters]
    rows = [m.row(i, pair) for i, (m, pair) in enumerate(zip(meters, pairs))]
    report = DebugReport(
        model=bundle.name, recipe=recipe_name(quantized.recipe), task=bundle.task, samples=len(data), data=data.description,
        output=output, layers=rows, diagnosis=diagnose(rows, output), histogram=None,
        notes=_notes(backend, chains, plans, all(m.isolated is not None for m in meters)) + _recipe_notes(quantized.recipe) + quantized.notes,
    )
    report.histogram = _histogram(report, meters, pairs, options)
    return report


def _check_selected(name: str, plans: list[_Plan]) -> None:
    """Before the slow part: the histogram layer must be one of the quantized layers (or a part fused into one)."""
    names = [call_name(p.layer.call) for p in plans]
    if not any(name in [call_name(c) for c in p.parts] for p in plans):
        raise QuantwiseError(f"--layer {name!r} is not a quantized layer of this model", f"use one of: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")


def _logits(output: Any) -> torch.Tensor:
    output = first_tensor(output)
    return (output.dequantize() if output.is_quantized else output).float()


def _float_chain(plan: _Plan, modules: dict[str, nn.Module]) -> FloatChain:
    layer = modules[plan.layer.call[0]]
    bn = modules[plan.chain.batch_norm[0]] if plan.chain.batch_norm in plan.parts else None
    tail = []
    if plan.chain.activation in plan.parts:
        tail.append(modules[plan.chain.activation[0]].forward)
    elif plan.extra_activation:
        tail.append(plan.layer.activation)
    return FloatChain(layer, bn, tail)


def _weights(got: LayerWeights | None, plan: _Plan, modules: dict[str, nn.Module]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(float weights as the layer quantizes them, dequantized weights, per-channel ranges), flattened per row."""
    if got is None:
        return None
    floats, deqs = [], []
    for name, deq in got.dequantized.items():
        weight = _float_weight(plan, modules, name)
        floats.append(weight.reshape(weight.shape[0], -1))
        deqs.append(deq.float().reshape(deq.shape[0], -1))
    if any(f.shape != d.shape for f, d in zip(floats, deqs)):
        return None
    width = max(f.shape[1] for f in floats)
    same = all(f.shape[1] == width for f in floats)
    flat = (lambda ts: torch.cat(ts)) if same else (lambda ts: torch.cat([t.flatten() for t in ts]).reshape(-1, 1))
    return flat(floats), flat(deqs), got.channel_ranges


def _float_weight(plan: _Plan, modules: dict[str, nn.Module], name: str) -> torch.Tensor:
    """The float parameter ``name`` of the plan's layer as the layer quantizes it (BatchNorm folded into a weight)."""
    weight = getattr(modules[plan.layer.call[0]], name).detach().float()
    if name == "weight" and plan.layer.folds_batch_norm and plan.chain.batch_norm:
        weight = _fold_batch_norm(weight, modules[plan.chain.batch_norm[0]])
    return weight


def _fold_batch_norm(weight: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    """w * gamma / sqrt(var + eps), per output channel: what conv-bn fusion quantizes."""
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
    factor = gamma / torch.sqrt(bn.running_var + bn.eps)
    return weight * factor.reshape(-1, *([1] * (weight.dim() - 1)))


def _notes(backend: Backend, chains: dict[Call, Chain], plans: list[_Plan], isolated_ok: bool) -> list[str]:
    notes = []
    covered = {p.layer.call for p in plans}
    left = [call_name(c) for c in chains if c not in covered]
    if left:
        notes.append(f"{len(left)} conv/linear/recurrent/embedding layer call(s) stay float: {', '.join(left[:6])}{' ...' if len(left) > 6 else ''}")
    unmatched = getattr(backend, "unmatched", [])
    if unmatched:
        notes.append(f"{len(unmatched)} quantized op(s) could not be named after a float module: {', '.join(unmatched[:4])}")
    if not isolated_ok:
        notes.append("isolated error is unavailable for some layers (their graph pattern needs inputs other than the layer's own)")
    if any(r.layer.kind in ("lstm", "gru") for r in plans):
        notes.append("LSTM/GRU rows compare the output sequence (not the final hidden state)")
    return notes


def _recipe_notes(recipe: Recipe) -> list[str]:
    if isinstance(recipe, QAT):
        return ["QAT fine-tuned the weights: the weight step (and the isolated error) include that change, not only rounding"]
    if isinstance(recipe, StaticInt8) and recipe.path == "fx" and recipe.backend == "x86":
        return ["fx x86 path: activations use 7-bit ranges (reduce_range) inside 8-bit tensors; the input ranges shown are what the quantize op clamps to"]
    return []


def _histogram(report: DebugReport, meters: list[_LayerMeter], pairs: list, options: DebugOptions) -> HistogramData:
    row = report.layer(options.layer) if options.layer else min(report.layers, key=lambda r: r.propagated.sqnr_db)
    meter, pair = meters[row.index], pairs[row.index]
    generator = torch.Generator().manual_seed(options.seed)
    ranges = pair[2] if pair else None
    grid = meter.inputs.grid
    return HistogramData(
        layer=row.name,
        weights=subsample(pair[0], options.histogram_values, generator) if pair else None,
        weight_range=(float(ranges[:, 0].min()), float(ranges[:, 1].max())) if ranges is not None else None,
        weight_channel_ranges=ranges,
        activations=torch.cat(meter.kept) if meter.kept else None,
        activation_range=(grid.lo, grid.hi) if grid is not None else None,
    )
