"""``quantwise debug``: layer-by-layer error of a quantized model against its float original."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from quantwise.cli.common import ContextOpt, DataOpt, ModelArg, NCalOpt, TextOpt


def debug(
    model: str = ModelArg,
    recipe: str = typer.Option("static-fx", "--recipe", "-r", help="Preset name, recipe file, or kind:key=value,... (classic recipes: dynamic, static, qat)."),
    samples: Optional[int] = typer.Option(None, "--samples", "-n", help="Evaluation samples to run (default 32; language models: windows, default 2). Each runs every layer several times."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Layer whose raw weights and inputs are kept for histograms (default: worst propagated SQNR)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write every number (and the histogram data) as JSON."),
    html_path: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained HTML report: SQNR isolated vs propagated, the layer table, histograms."),
    data: Optional[str] = DataOpt,
    n_calibration: Optional[int] = NCalOpt,
    batch_size: int = typer.Option(4, "--batch-size", help="Samples per forward pass (memory: every layer's input and output of a batch is kept)."),
    context: int = ContextOpt,
    text: Optional[str] = TextOpt,
) -> None:
    """Find the layers that lose accuracy, and why.

    Per quantized layer: SQNR, cosine and max error against the float layer, isolated (fed
    float inputs) and propagated (fed the quantized model's own activations), with weight
    and input range statistics, clipping, and a one-line diagnosis.

    Examples:
      quantwise debug mnist-cnn --recipe static-fx
      quantwise debug efficientnet-lite0 --recipe static-pt2e --samples 16 --json out/effnet-debug.json --html out/effnet-debug.html
      quantwise debug resemblyzer-lstm --recipe dynamic --layer lstm
      quantwise debug smollm2-135m --recipe int4-rtn --samples 2 --context 256
    """
    from quantwise.cli.common import is_llm, load_bundle, out, progress
    from quantwise.config import parse_recipe
    from quantwise.debug import DebugOptions, debug_recipe
    from quantwise.debug.debugger import check_recipe
    from quantwise.report.debug_table import print_debug
    from quantwise.cli.outputs import check_outputs, write_outputs
    from quantwise.report.debug_html import debug_document

    check_outputs(json=json_path, html=html_path)

    if is_llm(model):
        from quantwise.debug.language_model import debug_language_model

        options = DebugOptions(samples=samples or 2, batch_size=1, layer=layer)
        report = debug_language_model(model, recipe, options, context, text, progress)
    else:
        parsed = parse_recipe(recipe)
        check_recipe(parsed)
        options = DebugOptions(samples=samples or 32, batch_size=batch_size, layer=layer)
        bundle = load_bundle(model, data, n_calibration, options.samples)
        report = debug_recipe(bundle, parsed, options, progress)
    print_debug(report, out)
    write_outputs(report.to_dict(), lambda: debug_document(report), json_path, html_path, out)
