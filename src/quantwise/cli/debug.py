"""``quantwise debug``: layer-by-layer error of a quantized model against its float original."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from quantwise.cli.common import ContextOpt, DataOpt, ModelArg, NCalOpt, TextOpt


def debug(
    model: str = ModelArg,
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="Preset name, recipe file, or kind:key=value,... (default: static-fx; for a language model int4-rtn)."),
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
    from quantwise.cli.common import commands_for
    from quantwise.cli.outputs import check_outputs
    from quantwise.cli.requests import DebugRequest

    check_outputs(json=json_path, html=html_path)
    commands_for(model).debug(DebugRequest(model=model, recipe=recipe, samples=samples, layer=layer, json_path=json_path, html_path=html_path, data=data,
                                           n_calibration=n_calibration, batch_size=batch_size, context=context, text=text))
