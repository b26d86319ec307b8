"""Print one export and its parity check."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from quantwise.export import ExportResult


def print_export(result: ExportResult, out: Console) -> None:
    p = result.parity
    if hasattr(p, "perplexity_export"):
        _print_lm(result, out)
        return
    if hasattr(p, "perplexity_llamacpp"):
        _print_gguf(result, out)
        return
    table = Table(title=f"{result.target} export of {result.artifact}: parity on {p.samples} held-out samples")
    for col in ("against", "max |diff|", "mean cosine", "top-1 agreement"):
        table.add_column(col, justify="right" if col != "against" else "left")
    for name, a in (("quantized PyTorch model", p.vs_quantized), ("float model", p.vs_float)):
        table.add_row(name, f"{a.max_abs:.4g}", f"{a.cosine:.5f}", "" if a.agreement is None else f"{a.agreement:.4f}")
    out.print(table)
    _footer(result, out)


def _print_lm(result: ExportResult, out: Console) -> None:
    p = result.parity
    table = Table(title=f"{result.target} export of {result.artifact}: perplexity on {p.windows} windows x {p.context} tokens ({p.tokens} scored)")
    for col in ("model", "perplexity", "vs quantized PyTorch"):
        table.add_column(col, justify="right" if col != "model" else "left")
    table.add_row("exported (ONNX Runtime)", f"{p.perplexity_export:.3f}", f"{p.delta_pct:+.3f}%")
    table.add_row("quantized PyTorch model", f"{p.perplexity_quantized:.3f}", "")
    if p.perplexity_float is not None:
        table.add_row("float model", f"{p.perplexity_float:.3f}", f"{100 * (p.perplexity_float / p.perplexity_quantized - 1):+.3f}%")
    out.print(table)
    out.print(f"next-token top-1 agreement with the quantized PyTorch model {p.top1_agreement:.4f}; logits of the first window: "
              f"cosine {p.logits_cosine:.5f}, max |diff| {p.logits_max_abs:.3g}")
    out.print(f"KV cache: logits with tokens fed one at a time at cosine >= {p.cache_cosine_min:.6f} to the one-pass logits "
              f"(max |diff| {p.cache_max_abs:.3g}); greedy generation: the first {p.generated_equal} of {p.generated_tokens} tokens "
              "equal to the quantized PyTorch model's")
    _footer(result, out)


def _print_gguf(result: ExportResult, out: Console) -> None:
    p = result.parity
    out.print(f"read back with gguf: {p.tensors} tensors ({p.quantized_tensors} in block types), bytes "
              f"{'equal' if p.bytes_equal else 'DIFFERENT'}, dequantized weights {'equal' if p.weights_equal else 'DIFFERENT'} to quantwise's bit for bit")
    if p.llamacpp:
        table = Table(title=f"llama.cpp on {p.windows} windows x {p.context} tokens")
        for col in ("runs", "perplexity", "vs quantwise"):
            table.add_column(col, justify="right" if col != "runs" else "left")
        table.add_row("llama.cpp (the file)", f"{p.perplexity_llamacpp:.3f}", f"{p.delta_pct:+.3f}%")
        table.add_row("quantwise (PyTorch, same weights)", f"{p.perplexity_quantwise:.3f}", "")
        out.print(table)
        out.print(f"next-token top-1 agreement {p.top1_agreement:.4f}; greedy generation: the first {p.generated_equal} of "
                  f"{p.generated_tokens} tokens equal")
    _footer(result, out)


def _footer(result: ExportResult, out: Console) -> None:
    p = result.parity
    out.print(f"parity {'passed' if p.passed else 'FAILED'} ({p.tolerance})")
    for note in result.notes:
        out.print(f"[dim]{note}[/]")
    out.print(f"wrote {result.path} ({result.size_mb:.2f} MB) in {result.seconds:.1f} s; recorded in {result.artifact}/manifest.json")
