"""Render a layer debug report (quantwise.debug) with rich: diagnosis first, then one row
per quantized layer in network order, the worst layers highlighted."""
from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from quantwise.debug.diagnose import cause
from quantwise.debug.results import DebugReport, LayerDebug

OUTPUT_METRICS = ("agreement", "flip_rate", "kl", "top1", "cosine", "cosine_min", "sqnr_db", "perplexity_float", "perplexity", "delta_perplexity")


def _db(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return "inf" if math.isinf(value) else f"{value:.1f}"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return "–"
    return "inf" if math.isinf(value) else f"{value:.{digits}g}"


def _own(layer: LayerDebug) -> float:
    value = layer.isolated.sqnr_db if layer.isolated else layer.propagated.sqnr_db
    return 1e9 if math.isinf(value) else value


def _fused(layer: LayerDebug) -> str:
    parent = layer.name.rpartition(".")[0] + "."
    short = [part.removeprefix(parent) if part.startswith(parent) and not part.removeprefix(parent)[:1].isdigit() else part for part in layer.fused[1:]]
    return " + ".join(short)


def _sources(layer: LayerDebug) -> str:
    s = layer.sources
    if s is None:
        return "–"
    return " / ".join(_db(v) for v in (s.input_db, s.weight_db, s.output_db))


def _range(layer: LayerDebug) -> str:
    a = layer.inputs
    if a is None:
        return "–"
    if a.range_lo is None:  # float (weight-only) or dynamically quantized input
        return f"[{_num(a.min)}, {_num(a.max)}]"
    return f"[{_num(a.min)}, {_num(a.max)}] → [{_num(a.range_lo)}, {_num(a.range_hi)}]"


def debug_table(report: DebugReport, highlight: int = 3) -> Table:
    worst = {l.name for l in sorted(report.layers, key=_own)[:highlight]}
    accumulates = report.diagnosis.accumulates_at
    table = Table(title=f"quantwise debug: {report.model} · {report.recipe} ({report.samples} samples)")
    longest = max((len(l.name) for l in report.layers), default=5)
    nearest = any(l.nearest is not None for l in report.layers)
    for column, justify in (
        ("#", "right"), ("layer", "left"), ("fused", "left"), ("as", "left"),
        ("isolated dB", "right"), *((("if nearest dB", "right"),) if nearest else ()), ("propagated dB", "right"), ("prop. cosine", "right"), ("max |err|", "right"),
        ("in / w / out dB", "right"), ("input range → quantized", "left"), ("clip %", "right"), ("w outliers", "right"), ("own error from", "left"),
    ):
        if column == "layer":  # never shorten a layer's name: it is what the user acts on
            table.add_column(column, justify="left", no_wrap=True, min_width=longest)
        else:
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for layer in report.layers:
        a, w = layer.inputs, layer.weights
        style = "bold red" if layer.name in worst else ("yellow" if layer.name == accumulates else "")
        table.add_row(
            str(layer.index), layer.name, _fused(layer), layer.quantized_as.rpartition(".")[2].removeprefix("pt2e "),
            _db(layer.isolated.sqnr_db if layer.isolated else None),
            *((_db(layer.nearest.sqnr_db if layer.nearest else None),) if nearest else ()), _db(layer.propagated.sqnr_db),
            f"{layer.propagated.cosine:.4f}", _num(layer.propagated.max_abs_error),
            _sources(layer), _range(layer),
            _num(100 * a.clip_fraction if a is not None and a.clip_fraction is not None else None, 2),
            _num(w.outlier_ratio if w is not None else None, 2), cause(layer),
            style=style,
        )
    return table


def print_debug(report: DebugReport, console: Console | None = None, highlight: int = 3) -> None:
    console = console or Console()
    console.print(f"[bold]diagnosis:[/] {report.diagnosis.summary}")
    metrics = ", ".join(f"{k}={_num(report.output[k], 4)}" for k in OUTPUT_METRICS if k in report.output)
    console.print(f"model output vs float ({report.task}, {report.samples} samples of {report.data}): {metrics}")
    console.print(debug_table(report, highlight))
    console.print(
        "[dim]isolated: the quantized layer fed the float model's input (its own error); propagated: fed the quantized "
        "model's own activations; "
        + ("if nearest: the isolated error had the float weight been rounded to nearest instead of by the recipe's algorithm; " if any(l.nearest for l in report.layers) else "")
        + "in / w / out: each quantization step alone, SQNR at the layer's output; "
        "input range → quantized: float input range and the quantized input's range (none shown: float or dynamically quantized input); "
        "clip %: float inputs outside the quantized input range; w outliers: fraction of |w - mean| > 6 std. "
        f"Red: the {highlight} largest own errors; yellow: where propagated SQNR drops most.[/]"
    )
    for hint in report.diagnosis.hints:
        console.print(f"  {hint}")
    for note in report.notes:
        console.print(f"  [dim]{note}[/]")
    if report.histogram is not None:
        h = report.histogram
        console.print(f"[dim]histogram data kept for {h.layer} ({0 if h.weights is None else h.weights.numel()} weights, "
                      f"{0 if h.activations is None else h.activations.numel()} input values)[/]")
