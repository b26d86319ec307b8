"""The compare report as an HTML document: the same table cells as the terminal, the same
numbers as the JSON (embedded in the page), and the Pareto figure per batch size."""
from __future__ import annotations

import math
from typing import Any

from quantwise.compare import CompareReport
from quantwise.evaluate.metrics import HIGHER_IS_BETTER
from quantwise.findings import Finding, within_budget
from quantwise.report.figures import Candidate, pareto_figure
from quantwise.report.grid import Cell, Table
from quantwise.report.html import Document, Section
from quantwise.report.table import compare_grid, compare_settings, other_metrics

STYLE_NOTE = "Rows in red carry a warning (listed below); green rows are quantized and within tolerance."


def compare_candidates(report: CompareReport, batch: int) -> list[Candidate]:
    """Every measured row as a point at one batch size; the row named best there is chosen.

    Rows with an error or a missing number are left out. A quantized row is outside the
    budget when its metric drops more than the tolerance; baselines have no budget.
    """
    higher = HIGHER_IS_BETTER.get(report.primary, True)
    best = report.best.get(batch)
    points = []
    for row in report.rows:
        lat, value = row.latency.get(batch), row.metrics.get(report.primary)
        if row.error or lat is None or value is None or row.size_mb is None or not math.isfinite(value):
            continue
        budget = None if row.kind == "baseline" else within_budget(row.warnings)
        points.append(Candidate(row.name, row.size_mb, lat.median_ms, value, higher, row.name == best, budget))
    return points


def compare_page(report: Any, settings: list[tuple[str, str]]) -> tuple[Document, Section]:
    """A compare report's page: its title, model, settings and environment, and its Results section."""
    doc = Document(f"quantwise compare: {report.model}", data=report.to_dict())
    doc.setting("model", f"{report.model}: {report.description}")
    for label, text in settings:
        doc.setting(label, text)
    environment(doc, report.versions, report.machine)
    return doc, doc.section("Results")


def compare_document(report: CompareReport) -> Document:
    doc, results = compare_page(report, compare_settings(report))
    results.paragraph(f"Speed-up is against the fastest float baseline at each batch size; Δ vs float is the change of {report.primary}. {STYLE_NOTE}")
    results.table(compare_grid(report))
    if any(other_metrics(report, row) for row in report.rows if not row.error):
        results.table(_other_metrics_table(report))
    results.items([f"{row.name}: {note}" for row in report.rows for note in row.notes])
    for b, name in report.best.items():
        results.paragraph(f"Best at batch {b}: {name}")
    warnings_section(doc.section("Warnings"), [(r.name, r.warnings, r.error) for r in report.rows])
    figures = doc.section("Size, latency and accuracy")
    for b in report.batches:
        points = compare_candidates(report, b)
        star = "the star is the best row at this batch" if any(p.chosen for p in points) else "no row qualifies as best at this batch"
        pareto_section(figures, points, report.primary, f"{report.model}, batch {b}", "latency (ms)",
                       f"Batch {b}: every row by median latency, size and {report.primary}; {star}.")
    return doc


def environment(doc: Document, versions: dict[str, str], machine: dict[str, Any]) -> None:
    doc.setting("versions", ", ".join(f"{k} {v}" for k, v in versions.items()))
    doc.setting("machine", ", ".join(f"{k}: {v}" for k, v in machine.items()))


def _other_metrics_table(report: CompareReport) -> Table:
    per_row = [(row.name, dict(other_metrics(report, row))) for row in report.rows if not row.error]
    keys = list(dict.fromkeys(k for _, metrics in per_row for k in metrics))
    rows = [[Cell(name), *(metrics.get(k, Cell("–")) for k in keys)] for name, metrics in per_row]
    return Table(["recipe", *keys], rows, caption="Other metrics (against the float model's outputs on the evaluation data)")


def warnings_section(section: Section, rows: list[tuple[str, list[Finding], str | None]]) -> None:
    found = False
    for name, warnings, error in rows:
        if error:
            section.warning(f"{name}: n/a: {error}")
            found = True
        for w in warnings:
            section.warning(f"{name}: {w}")
            found = True
    if not found:
        section.paragraph("None.")


def pareto_section(section: Section, points: list[Candidate], metric: str, title: str, latency_label: str, caption: str) -> None:
    if not points:
        section.note(f"{title}: no row has a size, a latency and a {metric} to draw.")
        return
    section.figure(pareto_figure(points, metric, title, latency_label), caption, alt=f"Pareto figure: {title}")
