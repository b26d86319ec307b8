"""``quantwise sensitivity`` and ``quantwise auto``: per-layer float fallback, measured."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from quantwise.cli.common import DataOpt, HtmlOpt, JsonOpt, ModelArg, NCalOpt, NEvalOpt, RayAddressOpt, WorkersOpt
from quantwise.config import preset_names
from quantwise.errors import QuantwiseError

AUTO_WORKFLOWS = ",".join(preset_names("classic", auto=True))
LLM_CANDIDATES = ", ".join(preset_names("language", auto=True))


def sensitivity(
    model: str = ModelArg,
    recipe: str = typer.Option("static-pt2e", "--recipe", "-r", help="A static or dynamic recipe (preset, file, or kind:key=value,...)."),
    top_k: int = typer.Option(5, "--top-k", help="Layers confirmed with the real metric, best-ranked by the proxy."),
    controls: int = typer.Option(3, "--controls", help="Extra confirmed layers spread over the rest of the ranking (to measure the proxy)."),
    proxy_samples: int = typer.Option(32, "--proxy-samples", help="Evaluation samples the proxy (output SQNR) uses."),
    json_path: Optional[Path] = JsonOpt,
    html_path: Optional[Path] = HtmlOpt,
    data: Optional[str] = DataOpt,
    n_calibration: Optional[int] = NCalOpt,
    n_evaluation: Optional[int] = NEvalOpt,
    confirm_alone: Optional[bool] = typer.Option(None, "--confirm-alone/--no-confirm-alone", help="Also measure 'only this layer int8' with the real metric (default: for dynamic recipes; for static ones it doubles the cost)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute even when a cached result exists."),
    all_layers: bool = typer.Option(False, "--all", help="Print every layer, not the 20 most sensitive."),
    workers: Optional[int] = WorkersOpt,
    ray_address: Optional[str] = RayAddressOpt,
) -> None:
    """Per-layer sensitivity: the metric when only one layer is quantized, and when only one is kept float.

    Ranks every layer with a cheap proxy (output SQNR on a few evaluation samples), then measures
    the model's primary metric on the whole evaluation split for the top layers, ordered by that
    metric (by KL divergence for classifiers judged by top-1 agreement or accuracy, counts too
    coarse to order single layers). Cached on disk.

    Examples:
      quantwise sensitivity efficientnet-lite0 --recipe static-pt2e
      quantwise sensitivity minilm-l6 --recipe dynamic --top-k 8 --json out/minilm-sens.json --html out/minilm-sens.html
      quantwise sensitivity mnist-cnn --recipe static-fx --no-cache
      quantwise sensitivity efficientnet-lite0 --top-k 10 --controls 10 --workers 2
    """
    from quantwise.cli.common import commands_for
    from quantwise.cli.outputs import check_outputs
    from quantwise.cli.requests import SensitivityRequest

    check_outputs(json=json_path, html=html_path)
    if top_k < 1 or controls < 0 or proxy_samples < 1:
        raise QuantwiseError("--top-k and --proxy-samples must be at least 1, --controls at least 0", "e.g. --top-k 5 --controls 3")
    commands_for(model).sensitivity(SensitivityRequest(model=model, recipe=recipe, top_k=top_k, controls=controls, proxy_samples=proxy_samples,
                                                       json_path=json_path, html_path=html_path, data=data, n_calibration=n_calibration,
                                                       n_evaluation=n_evaluation, confirm_alone=confirm_alone, use_cache=not no_cache,
                                                       all_layers=all_layers, workers=workers, ray_address=ray_address))


def auto(
    model: str = ModelArg,
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Largest acceptable loss of the model's primary metric, in its own unit (default: the model's tolerance); for a language model, the perplexity increase in percent (default 2)."),
    objective: str = typer.Option("latency", "--objective", help="latency or size."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Also save the winner as an artifact directory."),
    recipe_out: Optional[Path] = typer.Option(None, "--recipe-out", help="Where to write the winning recipe (.json or .yaml; default MODEL-auto.json)."),
    batch: int = typer.Option(1, "--batch", help="Batch size for latency."),
    compile_: bool = typer.Option(True, "--compile/--no-compile", help="Time torch.compile for models that need it (slow to build)."),
    max_float: Optional[int] = typer.Option(None, "--max-float", help="Most layers kept float (default: half of them)."),
    proxy_samples: int = typer.Option(32, "--proxy-samples", help="Evaluation samples the sensitivity proxy uses."),
    workflows: Optional[str] = typer.Option(None, "--workflows", help="Comma-separated recipes to start from (presets or kind:key=value; default: " + AUTO_WORKFLOWS + "); for a language model, the LLM recipes to try (default: " + LLM_CANDIDATES + ")."),
    target: str = typer.Option("pytorch", "--target", help="Where candidates run and are timed: pytorch, or onnxruntime (each exported to ONNX with a parity check; ONNX Runtime float is the baseline)."),
    json_path: Optional[Path] = JsonOpt,
    html_path: Optional[Path] = HtmlOpt,
    data: Optional[str] = DataOpt,
    n_calibration: Optional[int] = NCalOpt,
    n_evaluation: Optional[int] = NEvalOpt,
    force: bool = typer.Option(False, "--force", help="Replace an existing --out artifact."),
    workers: Optional[int] = WorkersOpt,
    ray_address: Optional[str] = RayAddressOpt,
) -> None:
    """Find the fastest (or smallest) recipe whose metric loss stays within a budget.

    Searches workflows, observers and granularity, then keeps the most sensitive layers float
    until the loss measured on the evaluation split fits --max-drop. Writes the winning recipe
    (and with --out its artifact). When nothing fits, says so and shows the best trade-offs
    (exit code 0: it is a result). For a language model (smollm2-135m, a .gguf file or a Hugging
    Face directory) --max-drop is the perplexity increase in percent and the candidates are LLM
    recipes, each quantized, scored and its decode timed.

    Examples:
      quantwise auto efficientnet-lite0 --max-drop 0.01 --out effnet-auto
      quantwise auto minilm-l6 --objective size --recipe-out minilm.yaml
      quantwise auto minilm-l6 --workflows dynamic --target onnxruntime
      quantwise auto resemblyzer-lstm --max-drop 0.02 --json out/auto.json --html out/auto.html
      quantwise auto smollm2-135m --max-drop 2 --out smol-auto
      quantwise auto efficientnet-lite0 --ray-address 10.0.0.5:6379
    """
    from quantwise.cli.common import commands_for
    from quantwise.cli.outputs import check_outputs
    from quantwise.cli.requests import AutoRequest

    check_outputs(json=json_path, html=html_path)
    commands_for(model).auto(AutoRequest(model=model, max_drop=max_drop, objective=objective, out_dir=out_dir, recipe_out=recipe_out, batch=batch,
                                         compile=compile_, max_float=max_float, proxy_samples=proxy_samples, workflows=workflows, target=target,
                                         json_path=json_path, html_path=html_path, data=data, n_calibration=n_calibration, n_evaluation=n_evaluation,
                                         force=force, workers=workers, ray_address=ray_address))
