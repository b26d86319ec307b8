"""Render results with rich; the only place (with the CLI) that prints."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from quantwise.compare import CompareReport

METRIC_ORDER = ("top1", "agreement", "kl", "cosine", "cosine_min", "sqnr_db")


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}"


def compare_table(report: CompareReport) -> Table:
    table = Table(title=f"quantwise compare: {report.model}  ({report.threads} threads)", show_lines=False)
    table.add_column("recipe")
    table.add_column("runtime")
    table.add_column("size MB", justify="right")
    table.add_column("x float", justify="right")
    for b in report.batches:
        table.add_column(f"b{b} med ms", justify="right")
        table.add_column(f"b{b} p90", justify="right")
        table.add_column(f"b{b} speed-up", justify="right")
    table.add_column(f"{report.primary}", justify="right")
    table.add_column("Δ vs float", justify="right")
    table.add_column("quantize s", justify="right")
    float_value = report.rows[0].metrics.get(report.primary)
    for row in report.rows:
        if row.error:
            table.add_row(row.name, "–", *["–"] * (3 * len(report.batches) + 2), f"[yellow]n/a[/]", "", "")
            continue
        cells = [row.name, row.runtime, _fmt(row.size_mb, 3), _fmt(row.size_ratio, 2)]
        for b in report.batches:
            lat = row.latency.get(b)
            cells += [_fmt(lat.median_ms if lat else None, 3), _fmt(lat.p90_ms if lat else None, 3), _fmt(row.speedup.get(b), 3)]
        value = row.metrics.get(report.primary)
        delta = None if value is None or float_value is None else value - float_value
        cells += [_fmt(value, 5), _fmt(delta, 3), _fmt(row.quantize_s, 3)]
        style = "red" if row.warnings else ("green" if row.kind == "quantized" else "")
        table.add_row(*cells, style=style)
    return table


def print_compare(report: CompareReport, console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]{report.model}[/]: {report.description}")
    console.print(f"calibration: {report.calibration}")
    console.print(f"evaluation:  {report.evaluation}")
    console.print(f"primary metric: {report.primary} (tolerance {report.tolerance:g}); speed-up is against the fastest float baseline at each batch")
    console.print(compare_table(report))
    for row in report.rows:
        other = {k: v for k, v in row.metrics.items() if k != report.primary}
        if row.error:
            console.print(f"[yellow]{row.name}: n/a[/] {row.error}")
            continue
        if other:
            console.print(f"  {row.name}: " + ", ".join(f"{k}={_fmt(v, 5)}" for k, v in sorted(other.items(), key=lambda kv: _order(kv[0]))))
        for note in row.notes:
            console.print(f"    [dim]{note}[/]")
        for warning in row.warnings:
            console.print(f"    [bold red]warning:[/] {warning}")
    for b, name in report.best.items():
        console.print(f"best at batch {b}: [bold]{name}[/]")


def _order(key: str) -> int:
    return METRIC_ORDER.index(key) if key in METRIC_ORDER else len(METRIC_ORDER)


def print_metrics(title: str, metrics: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in sorted(metrics.items(), key=lambda kv: _order(kv[0])):
        table.add_row(k, _fmt(v, 5) if isinstance(v, float) else str(v))
    console.print(table)


def write_json(data: Any, path: str | Path, overwrite: bool = True) -> Path:
    """Atomic JSON write: a temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=_default, allow_nan=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _default(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    return str(obj)
