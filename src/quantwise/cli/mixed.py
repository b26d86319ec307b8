"""``quantwise sensitivity`` and ``quantwise auto``: per-layer float fallback, measured."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from quantwise.errors import QuantwiseError

ModelArg = typer.Argument(..., help="A zoo model (see 'quantwise zoo'), 'file.py:factory' or 'package.module:factory'.")
DataOpt = typer.Option(None, "--data", help="A folder of images, a .pt/.npz/.safetensors file, or file.py:factory.")
NCalOpt = typer.Option(None, "--n-calibration", help="Calibration samples (default: the model's own).")
NEvalOpt = typer.Option(None, "--n-evaluation", help="Evaluation samples (default: the model's own).")
JsonOpt = typer.Option(None, "--json", help="Also write every number as JSON.")


def sensitivity(
    model: str = ModelArg,
    recipe: str = typer.Option("static-pt2e", "--recipe", "-r", help="A static or dynamic recipe (preset, file, or kind:key=value,...)."),
    top_k: int = typer.Option(5, "--top-k", help="Layers confirmed with the real metric, best-ranked by the proxy."),
    controls: int = typer.Option(3, "--controls", help="Extra confirmed layers spread over the rest of the ranking (to measure the proxy)."),
    proxy_samples: int = typer.Option(32, "--proxy-samples", help="Evaluation samples the proxy (output SQNR) uses."),
    json_path: Optional[Path] = JsonOpt,
    data: Optional[str] = DataOpt,
    n_calibration: Optional[int] = NCalOpt,
    n_evaluation: Optional[int] = NEvalOpt,
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute even when a cached result exists."),
    all_layers: bool = typer.Option(False, "--all", help="Print every layer, not the 20 most sensitive."),
) -> None:
    """Per-layer sensitivity: the metric when only one layer is quantized, and when only one is kept float.

    Ranks every layer with a cheap proxy (output SQNR on a few evaluation samples), then measures
    the model's primary metric on the whole evaluation split for the top layers. Cached on disk.

    Examples:
      quantwise sensitivity efficientnet-lite0 --recipe static-pt2e
      quantwise sensitivity minilm-l6 --recipe dynamic --top-k 8 --json out/minilm-sens.json
      quantwise sensitivity mnist-cnn --recipe static-fx --no-cache
    """
    from quantwise.cli.main import _model, out, progress
    from quantwise.config import parse_recipe
    from quantwise.mixed.sensitivity import SensitivityOptions, analyse
    from quantwise.report.mixed import print_sensitivity
    from quantwise.report.table import write_json

    parsed = parse_recipe(recipe)
    if top_k < 1 or controls < 0 or proxy_samples < 1:
        raise QuantwiseError("--top-k and --proxy-samples must be at least 1, --controls at least 0", "e.g. --top-k 5 --controls 3")
    bundle = _model(model, data, n_calibration, n_evaluation)
    opts = SensitivityOptions(proxy_samples=proxy_samples, top_k=top_k, controls=controls, use_cache=not no_cache, progress=progress)
    report = analyse(bundle, parsed, opts)
    print_sensitivity(report, out, limit=None if all_layers else 20)
    if json_path:
        write_json(report.to_dict(), json_path)
        out.print(f"wrote {json_path}")
