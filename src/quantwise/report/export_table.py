"""Print one export and its parity check."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from quantwise.export import ExportResult


def print_export(result: ExportResult, out: Console) -> None:
    p = result.parity
    table = Table(title=f"{result.target} export of {result.artifact}: parity on {p.samples} held-out samples")
    for col in ("against", "max |diff|", "mean cosine", "top-1 agreement"):
        table.add_column(col, justify="right" if col != "against" else "left")
    for name, a in (("quantized PyTorch model", p.vs_quantized), ("float model", p.vs_float)):
        table.add_row(name, f"{a.max_abs:.4g}", f"{a.cosine:.5f}", "" if a.agreement is None else f"{a.agreement:.4f}")
    out.print(table)
    out.print(f"parity {'passed' if p.passed else 'FAILED'} ({p.tolerance})")
    for note in result.notes:
        out.print(f"[dim]{note}[/]")
    out.print(f"wrote {result.path} ({result.size_mb:.2f} MB) in {result.seconds:.1f} s; recorded in {result.artifact}/manifest.json")
