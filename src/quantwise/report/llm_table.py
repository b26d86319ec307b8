"""Terminal table for language-model comparisons."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from quantwise.llm.compare import LLMCompareReport

COLUMNS = ("method", "runtime", "bits", "group", "size MB", "x float", "perplexity", "Δ ppl %", "decode tok/s b1", "prefill tok/s", "quantize s", "peak MB quantizing")


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"


def llm_table(report: LLMCompareReport) -> Table:
    table = Table(title=f"quantwise compare: {report.model}  ({report.threads} threads)")
    for i, name in enumerate(COLUMNS):
        table.add_column(name, justify="left" if i < 4 else "right")
    for r in report.rows:
        if r.error:
            table.add_row(r.method, r.runtime, r.bits, r.group, *(["n/a"] * (len(COLUMNS) - 4)))
            continue
        table.add_row(
            r.method, r.runtime, r.bits, r.group, _num(r.size_mb), _num(r.size_mb / report.float_mb if r.size_mb else None, 2),
            _num(r.perplexity, 4), f"{r.delta_pct:+.2f}" if r.delta_pct is not None else "–", _num(r.decode_tokens_per_s), _num(r.prefill_tokens_per_s),
            _num(r.quantize_s), _num(r.peak_quantize_mb),
        )
    return table


def print_llm_compare(report: LLMCompareReport, console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]{report.model}[/]: {report.description}")
    console.print(f"text: {report.text}")
    console.print(f"perplexity: {report.perplexity_setting}, evaluation text only")
    console.print(f"speed: {report.decode_setting}")
    console.print("size: model.safetensors of the saved artifact (float rows: weights x dtype size); peak MB quantizing: growth of resident memory while loading the float model and quantizing it (freed memory trimmed first)")
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
