"""Terminal table for language-model comparisons."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable

from quantwise.llm.auto import LLMAutoReport
from quantwise.llm.compare import BASELINES, LLMCompareReport
from quantwise.report.grid import Cell, Table, rich_table
from quantwise.report.table import print_setting

COLUMNS = ("method", "runtime", "bits", "group", "size MB", "x float", "perplexity", "Δ ppl %", "decode tok/s b1", "prefill tok/s", "quantize s", "peak MB quantizing")


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"


def _cell(value: float | None, digits: int = 3) -> Cell:
    return Cell(_num(value, digits), value)


def llm_grid(report: LLMCompareReport) -> Table:
    """The comparison table's cells: the terminal and the HTML report both render this."""
    rows, styles = [], []
    for r in report.rows:
        label = [Cell(r.method), Cell(r.runtime), Cell(r.bits), Cell(r.group)]
        if r.error:
            rows.append(label + [Cell("n/a")] * (len(COLUMNS) - 4))
            styles.append("muted")
            continue
        rows.append(label + [
            _cell(r.size_mb), _cell(r.size_mb / report.float_mb if r.size_mb else None, 2), _cell(r.perplexity, 4),
            Cell(f"{r.delta_pct:+.2f}" if r.delta_pct is not None else "–", r.delta_pct), _cell(r.decode_tokens_per_s),
            _cell(r.prefill_tokens_per_s), _cell(r.quantize_s), _cell(r.peak_quantize_mb),
        ])
        styles.append("bad" if r.warnings else ("good" if r.method not in BASELINES else ""))
    return Table(list(COLUMNS), rows, row_styles=styles, right_from=4)


def llm_table(report: LLMCompareReport) -> RichTable:
    return rich_table(llm_grid(report), f"quantwise compare: {report.model}  ({report.threads} threads)")


def llm_settings(report: LLMCompareReport) -> list[tuple[str, str]]:
    """How the rows were measured, as (label, text): the terminal and the HTML report say the same."""
    return [
        ("text", report.text),
        ("perplexity", f"{report.perplexity_setting}, evaluation text only"),
        ("speed", report.decode_setting),
        ("size", "model.safetensors of the saved artifact (float rows: weights x dtype size; llama.cpp rows: the .gguf file); peak MB quantizing: "
                 "growth of resident memory while loading the float model and quantizing it (freed memory trimmed first)"),
        ("threads", str(report.threads)),
        *([("quantized and scored on", f"{report.ran}; every speed timed in this process, one at a time")] if report.ran != "in process" else []),
    ]


def print_llm_compare(report: LLMCompareReport, console: Console | None = None) -> None:
    console = console or Console()
    print_setting(console, report.model, report.description, llm_settings(report))
    console.print(llm_table(report))
    for r in report.rows:
        if r.error:
            console.print(f"[yellow]{r.method}: n/a[/] {r.error}")
            continue
        for note in r.notes:
            console.print(f"  [dim]{r.method}: {note}[/]")
        for warning in r.warnings:
            console.print(f"  [bold red]warning:[/] {r.method}: {warning}")
    console.print(f"best: [bold]{report.best}[/]")


def print_llm_auto(report: LLMAutoReport, console: Console | None = None) -> None:
    console = console or Console()
    print_llm_compare(report.compare, console)
    console.print(f"[bold]auto[/] ({report.objective}, budget +{report.max_drop_pct:g}% perplexity): ", end="")
    if report.chosen is None:
        console.print(f"[yellow]nothing fits[/]: {report.reason}")
        console.print("best trade-offs found, by perplexity: " + "; ".join(report.tradeoffs))
        return
    console.print(f"chose {report.reason}")
    for item in report.kept_higher_precision:
        console.print(f"  kept in higher precision: {item}")
    if report.recipe_path:
        console.print(f"wrote {report.recipe_path} (quantwise quantize {report.compare.model} --recipe {report.recipe_path} reproduces it)")
    if report.artifact_path:
        console.print(f"wrote {report.artifact_path}")
