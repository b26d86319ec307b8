"""Render results with rich; the only place (with the CLI) that prints."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from quantwise.files import atomic_write_text
from quantwise.compare import CompareReport, Row
from quantwise.report.grid import Cell, Table, rich_table

METRIC_ORDER = ("top1", "agreement", "kl", "cosine", "cosine_min", "sqnr_db")


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}"


def compare_grid(report: CompareReport) -> Table:
    """The comparison table's cells: the terminal and the HTML report both render this."""
    columns = ["recipe", "runtime", "size MB", "x float"]
    for b in report.batches:
        columns += [f"b{b} med ms", f"b{b} p90", f"b{b} speed-up"]
    columns += [report.primary, "Δ vs float", "quantize s"]
    float_value = report.rows[0].metrics.get(report.primary)
    rows, styles = [], []
    for row in report.rows:
        if row.error:
            rows.append([Cell(row.name), Cell("–"), *[Cell("–")] * (3 * len(report.batches) + 2), Cell("n/a"), Cell(""), Cell("")])
            styles.append("muted")
            continue
        cells = [Cell(row.name), Cell(row.runtime), _num(row.size_mb, 3), _num(row.size_ratio, 2)]
        for b in report.batches:
            lat = row.latency.get(b)
            cells += [_num(lat.median_ms if lat else None, 3), _num(lat.p90_ms if lat else None, 3), _num(row.speedup.get(b), 3)]
        value = row.metrics.get(report.primary)
        delta = None if value is None or float_value is None else value - float_value
        cells += [_num(value, 5), _num(delta, 3), _num(row.quantize_s, 3)]
        rows.append(cells)
        styles.append("bad" if row.warnings else ("good" if row.kind == "quantized" else ""))
    return Table(columns, rows, row_styles=styles, right_from=2)


def other_metrics(report: CompareReport, row: Row) -> list[tuple[str, Cell]]:
    """The row's metrics besides the primary one, in the usual order."""
    other = {k: v for k, v in row.metrics.items() if k != report.primary}
    return [(k, _num(v, 5)) for k, v in sorted(other.items(), key=lambda kv: _order(kv[0]))]


def _num(value: float | None, digits: int) -> Cell:
    return Cell(_fmt(value, digits), value)


def compare_table(report: CompareReport) -> RichTable:
    return rich_table(compare_grid(report), f"quantwise compare: {report.model}  ({report.threads} threads)")


def compare_settings(report: CompareReport) -> list[tuple[str, str]]:
    """How the rows were measured, as (label, text): the terminal and the HTML report say the same."""
    return [
        ("task", report.task),
        ("primary metric", f"{report.primary} (tolerance {report.tolerance:g}); speed-up is against the fastest float baseline at each batch"),
        ("calibration data", report.calibration),
        ("evaluation data", report.evaluation),
        ("threads", str(report.threads)),
        ("batch sizes", ", ".join(str(b) for b in report.batches)),
        *([("quantized and evaluated on", f"{report.ran}; every row timed in this process, one at a time")] if report.ran != "in process" else []),
    ]


def print_setting(console: Console, model: str, description: str, settings: list[tuple[str, str]]) -> None:
    """The lines above a compare table: the model, then how its rows were measured."""
    console.print(f"[bold]{model}[/]: {description}")
    for label, text in settings:
        console.print(f"{label}: {text}")


def print_compare(report: CompareReport, console: Console | None = None) -> None:
    console = console or Console()
    print_setting(console, report.model, report.description, compare_settings(report))
    console.print(compare_table(report))
    for row in report.rows:
        if row.error:
            console.print(f"[yellow]{row.name}: n/a[/] {row.error}")
            continue
        if other := other_metrics(report, row):
            console.print(f"  {row.name}: " + ", ".join(f"{k}={cell.text}" for k, cell in other))
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
    table = RichTable(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in sorted(metrics.items(), key=lambda kv: _order(kv[0])):
        table.add_row(k, _fmt(v, 5) if isinstance(v, float) else str(v))
    console.print(table)


def write_json(data: Any, path: str | Path, overwrite: bool = True) -> Path:
    """Atomic JSON write: a temporary file renamed into place."""
    return atomic_write_text(path, json.dumps(data, indent=2, default=_default, allow_nan=True))


def _default(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    return str(obj)
