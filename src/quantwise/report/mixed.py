"""Sensitivity and auto-search results as rich tables (no computation here)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from quantwise.report.table import _fmt

if TYPE_CHECKING:
    from quantwise.mixed.auto import AutoReport
    from quantwise.mixed.sensitivity import SensitivityReport


def print_sensitivity(report: SensitivityReport, console: Console, limit: int | None = 20) -> None:
    console.print(f"[bold]{report.model}[/] · {report.recipe_name}" + ("  [dim](from cache)[/]" if report.cached else ""))
    console.print(f"evaluation: {report.evaluation}")
    if report.ran != "in process":
        console.print(f"per-layer units ran on: {report.ran}")
    console.print(f"proxy: {report.proxy}; {report.primary} measured on all {report.n_evaluation} evaluation samples for the confirmed layers")
    console.print(f"{report.primary}: float {_fmt(report.float_metric, 5)}, every layer quantized {_fmt(report.quantized_metric, 5)} "
                  f"(proxy SQNR {_fmt(report.proxy_all, 4)} dB)")
    table = Table(title=f"per-layer sensitivity ({len(report.layers)} layers, most worth keeping float first)")
    by = report.ranking_metric or report.primary
    extra = by != report.primary  # a ranking metric other than the primary one gets its own column
    ranked_column = [(f"{by} it float, whole split", "right")] if extra else []
    for name, justify in (("rank", "right"), ("layer", "left"), ("type", "left"), ("SQNR only it int8", "right"),
                          ("SQNR all but it", "right"), ("gain dB", "right"), (f"{report.primary} only it int8", "right"),
                          ("drop vs float", "right"), (f"{report.primary} it float", "right"), ("gain vs all int8", "right"),
                          ("SQNR it float, whole split", "right"), *ranked_column, ("real rank", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    rows = report.layers if limit is None else [l for l in report.layers if l.proxy_rank <= limit or l.full_rank is not None]
    for l in rows:
        table.add_row(
            str(l.proxy_rank), l.name + (" [dim](control)[/]" if l.control else ""), l.kind, _fmt(l.proxy_alone, 4), _fmt(l.proxy_float, 4),
            _fmt(l.proxy_gain, 3), _fmt(l.metric_alone, 5), _fmt(report.drop_alone(l), 3), _fmt(l.metric_float, 5),
            _fmt(report.improvement(l), 3), _fmt(l.sqnr_float, 4), *([_fmt(l.ranked_float, 4)] if extra else []),
            "–" if l.full_rank is None else str(l.full_rank),
        )
    console.print(table)
    if limit is not None and len(rows) < len(report.layers):
        console.print(f"[dim]{len(report.layers) - len(rows)} less sensitive layers not shown (--json has all)[/]")
    agreement = "n/a (needs more than 5 confirmed layers)" if report.top5_agreement is None else f"{report.top5_agreement:.0%}"
    ties = f"; {report.tied} of them tie on {by} (ordered by output SQNR over the whole split)" if report.tied else ""
    why = f" ({report.primary} counts samples: too coarse to order single layers)" if extra else ""
    console.print(f"real rank: by {by} over all {report.n_evaluation} evaluation samples{why}")
    console.print(f"proxy top 5 vs real-metric top 5 over the {len(report.confirmed)} confirmed layers: {agreement}; "
                  f"rank correlation {_fmt(report.rank_correlation, 3)}{ties}")
    console.print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items()) + (" (when first computed)" if report.cached else ""))


def print_auto(report: AutoReport, console: Console) -> None:
    console.print(f"[bold]{report.model}[/]: {report.primary} budget: at most {_fmt(report.max_drop, 4)} below float "
                  f"({_fmt(report.float_metric, 5)}); objective: {report.objective}; latency in {report.target} at batch {report.batch}, {report.threads} threads")
    table = Table(title=f"candidates tried ({len(report.candidates)})")
    for name, justify in (("candidate", "left"), ("runtime", "left"), ("size MB", "right"), ("latency ms", "right"),
                          (report.primary, "right"), ("drop", "right"), ("kept float", "right"), ("within budget", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c in report.candidates:
        style = "bold green" if report.chosen == c.name else ("red" if c.error else "")
        table.add_row(c.name, c.runtime, _fmt(c.size_mb, 3), _fmt(c.latency_ms, 3), _fmt(c.metric, 5), _fmt(c.drop, 3),
                      str(len(c.kept_float)), "error" if c.error else ("yes" if c.within_budget else "no"), style=style)
    console.print(table)
    for c in report.candidates:
        if c.error:
            console.print(f"  [yellow]{c.name}[/]: {c.error}")
    if report.chosen:
        best = report.candidate(report.chosen)
        console.print(f"chosen: [bold]{best.name}[/] ({report.objective}), {report.primary} {_fmt(best.metric, 5)}, drop {_fmt(best.drop, 3)}")
        for layer in best.kept_float:
            why = report.why_float.get(layer, "")
            console.print(f"  kept float: {layer}  [dim]{why}[/]")
    else:
        console.print(f"[bold yellow]no candidate keeps {report.primary} within {_fmt(report.max_drop, 4)} of float.[/] Best trade-offs:")
        for name in report.tradeoffs:
            c = report.candidate(name)
            console.print(f"  {c.name}: {report.primary} {_fmt(c.metric, 5)} (drop {_fmt(c.drop, 3)}), {_fmt(c.latency_ms, 3)} ms, {_fmt(c.size_mb, 3)} MB")
    for note in report.notes:
        console.print(f"[dim]{note}[/]")
    console.print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items()))
