"""The language-model compare report as an HTML document (see compare_html for the classic one)."""
from __future__ import annotations

from quantwise.findings import within_budget
from quantwise.llm.compare import BASELINES, LLMCompareReport
from quantwise.report.compare_html import STYLE_NOTE, compare_page, pareto_section, warnings_section
from quantwise.report.figures import Candidate
from quantwise.report.html import Document
from quantwise.report.llm_table import llm_grid, llm_settings


def llm_candidates(report: LLMCompareReport) -> list[Candidate]:
    """Every measured row as a point: decode milliseconds per token, perplexity (lower is better)."""
    points = []
    for i, row in enumerate(report.rows):
        if row.error or not row.decode_tokens_per_s or row.size_mb is None or row.perplexity is None:
            continue
        baseline = row.method in BASELINES
        name = f"{row.method} {row.runtime}" if baseline else row.method
        budget = None if baseline else within_budget(row.warnings)
        points.append(Candidate(name, row.size_mb, 1000.0 / row.decode_tokens_per_s, row.perplexity, False, i == report.best_index, budget))
    return points


def llm_compare_document(report: LLMCompareReport) -> Document:
    doc, results = compare_page(report, llm_settings(report))
    results.paragraph(STYLE_NOTE)
    results.table(llm_grid(report))
    results.items([f"{row.method}: {note}" for row in report.rows for note in row.notes])
    results.paragraph(f"Best: {report.best}")
    warnings_section(doc.section("Warnings"), [(r.method, r.warnings, r.error) for r in report.rows])
    star = "the star is the best row" if report.best_index is not None else "no row qualifies as best"
    pareto_section(doc.section("Size, speed and perplexity"), llm_candidates(report), "perplexity", report.model, "decode ms/token",
                   f"Every row by decode time per token (batch 1), size and perplexity; {star}.")
    return doc
