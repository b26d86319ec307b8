"""The commands for classic models (CNNs, encoders, LSTMs: a ``ModelBundle`` with its data).
``cli/language.py`` has the same functions for language models; ``cli/common.commands_for``
chooses between them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from quantwise.cli.common import load_bundle, out, progress
from quantwise.cli.requests import AutoRequest, CompareRequest, DebugRequest, EvalRequest, QuantizeRequest, SensitivityRequest
from quantwise.errors import QuantwiseError, choice_error
from quantwise.fanout import ClusterOptions, open_tasks

MAX_BATCH = 4096  # the largest batch the exported programs accept (methods.base.dynamic_batch_shapes)


def quantize(r: QuantizeRequest) -> None:
    from quantwise import api
    from quantwise.artifact.store import check_replaceable
    from quantwise.config import parse_recipe
    from quantwise.evaluate.metrics import evaluate as run_eval, outputs
    from quantwise.methods import method_for
    from quantwise.report.table import print_metrics

    _refuse_text_options(r.text)
    parsed = parse_recipe(r.recipe)
    method_for(parsed, "classic")  # a language-model recipe on this model fails before the model loads
    check_replaceable(r.output, r.force)
    bundle = load_bundle(r.model, r.data, r.n_calibration, r.n_evaluation)
    result = api.quantize(bundle, parsed, progress=progress)
    metrics: dict[str, Any] = {}
    if r.evaluate:
        reference = outputs(bundle.model, bundle.evaluation)
        metrics = run_eval(result.quantized.module, bundle, reference)
        metrics["float_" + bundle.primary] = run_eval(bundle.model, bundle, reference).get(bundle.primary)
    path = api.save(result, r.output, metrics=metrics, overwrite=r.force)
    for note in result.quantized.notes:
        out.print(f"[dim]{note}[/]")
    if metrics:
        print_metrics(f"{r.model} · {r.recipe} (evaluation split: {bundle.evaluation.description})", metrics, out)
        _warn_if_worse(metrics, bundle, r.recipe)
    out.print(f"wrote {path} in {result.seconds:.1f} s of quantization")


def _warn_if_worse(metrics: dict[str, Any], bundle: Any, recipe: str) -> None:
    """Say plainly when the quantized model loses more than the model's tolerance."""
    from quantwise.evaluate.metrics import HIGHER_IS_BETTER

    got, ref = metrics.get(bundle.primary), metrics.get("float_" + bundle.primary)
    if got is None or ref is None:
        return
    loss = (ref - got) if HIGHER_IS_BETTER.get(bundle.primary, True) else (got - ref)
    if loss > bundle.tolerance:
        out.print(f"[bold yellow]warning:[/] {bundle.primary} {got:.4g} vs float {ref:.4g}: {recipe} loses {loss:.4g}, more than this "
                  f"model's tolerance {bundle.tolerance:g}; see 'quantwise compare' or 'quantwise auto' for a recipe that keeps it")


def _refuse_text_options(text: str | None) -> None:
    if text is not None:
        raise QuantwiseError("--text is for language models; this model is not one", "give --data for its samples, or leave --text out")


def evaluate(r: EvalRequest) -> None:
    from quantwise import api
    from quantwise.evaluate.metrics import evaluate as run_eval, outputs
    from quantwise.report.table import print_metrics

    _refuse_text_options(r.text)
    if Path(r.target).is_dir() or Path(r.target).suffix == "" and Path(r.target).exists():
        from quantwise.artifact.store import read_manifest

        bundle = api.bundle_for_artifact(read_manifest(Path(r.target)), r.model, r.data, r.n_evaluation)
        loaded = api.load(r.target, arch=api.architecture(bundle))
        reference = outputs(bundle.model, bundle.evaluation)
        metrics = run_eval(loaded.module, bundle, reference)
        print_metrics(f"{r.target} ({loaded.artifact.model}, {loaded.artifact.recipe['kind']}) on {bundle.evaluation.description}", metrics, out)
    else:
        bundle = load_bundle(r.target, r.data, None, r.n_evaluation)
        print_metrics(f"{r.target} float on {bundle.evaluation.description}", run_eval(bundle.model, bundle), out)


DEFAULT_REPEATS = 20


def compare(r: CompareRequest) -> None:
    from quantwise.cli.outputs import write_outputs
    from quantwise.compare import DEFAULT_RECIPES, RUNTIME_TARGETS, CompareOptions, compare as run_compare
    from quantwise.config import parse_recipe
    from quantwise.report.compare_html import compare_document
    from quantwise.report.table import print_compare

    _refuse_text_options(r.text)
    recipe_list = tuple(x.strip() for x in (r.recipes or ",".join(DEFAULT_RECIPES)).split(",") if x.strip())
    for name in recipe_list:
        parse_recipe(name)  # fail on a typo before any work
    try:
        batch_list = tuple(int(b) for b in r.batches.split(","))
    except ValueError:
        raise QuantwiseError(f"--batches {r.batches!r} is not a list of integers", "write e.g. --batches 1,32") from None
    if not batch_list or any(not 1 <= b <= MAX_BATCH for b in batch_list):
        raise QuantwiseError(f"--batches {r.batches}: a batch size is a whole number from 1 to {MAX_BATCH}", "write e.g. --batches 1,32")
    targets = tuple(t.strip() for t in r.target.split(",") if t.strip())
    for t in targets:
        if t not in ("pytorch", *RUNTIME_TARGETS):
            raise choice_error("--target", t, ("pytorch", *RUNTIME_TARGETS))
    cluster = ClusterOptions(r.workers, r.ray_address)
    bundle = load_bundle(r.model, r.data, r.n_calibration, r.n_evaluation)
    opts = CompareOptions(recipes=recipe_list, batches=batch_list, compile=r.compile, repeats=r.repeats or DEFAULT_REPEATS, progress=progress,
                          targets=targets, peers=r.peers)
    with open_tasks(cluster) as tasks:
        report = run_compare(bundle, opts, tasks)
    print_compare(report, out)
    write_outputs(report.to_dict(), lambda: compare_document(report), r.json_path, r.html_path, out)


def debug(r: DebugRequest) -> None:
    from quantwise.cli.outputs import write_outputs
    from quantwise.config import parse_recipe
    from quantwise.debug import DebugOptions, debug_recipe
    from quantwise.debug.debugger import check_recipe
    from quantwise.report.debug_html import debug_document
    from quantwise.report.debug_table import print_debug

    _refuse_text_options(r.text)
    parsed = parse_recipe(r.recipe or "static-fx")
    check_recipe(parsed)
    options = DebugOptions(samples=r.samples or 32, batch_size=r.batch_size, layer=r.layer)
    bundle = load_bundle(r.model, r.data, r.n_calibration, options.samples)
    report = debug_recipe(bundle, parsed, options, progress)
    print_debug(report, out)
    write_outputs(report.to_dict(), lambda: debug_document(report), r.json_path, r.html_path, out)


def sensitivity(r: SensitivityRequest) -> None:
    from quantwise.cli.outputs import write_outputs
    from quantwise.config import parse_recipe
    from quantwise.mixed.sensitivity import SensitivityOptions, analyse
    from quantwise.report.mixed import print_sensitivity
    from quantwise.report.mixed_html import sensitivity_document

    parsed = parse_recipe(r.recipe)
    cluster = ClusterOptions(r.workers, r.ray_address)
    bundle = load_bundle(r.model, r.data, r.n_calibration, r.n_evaluation)
    opts = SensitivityOptions(proxy_samples=r.proxy_samples, top_k=r.top_k, controls=r.controls, use_cache=r.use_cache,
                              confirm_alone=r.confirm_alone, progress=progress)
    with open_tasks(cluster) as tasks:
        report = analyse(bundle, parsed, opts, tasks)
    print_sensitivity(report, out, limit=None if r.all_layers else 20)
    write_outputs(report.to_dict(), lambda: sensitivity_document(report), r.json_path, r.html_path, out)


def auto(r: AutoRequest) -> None:
    from quantwise.cli.outputs import auto_outputs, write_outputs as write_report_files
    from quantwise.config import preset_names
    from quantwise.mixed.auto import AutoOptions, check_options, search, write_outputs
    from quantwise.report.mixed import print_auto
    from quantwise.report.mixed_html import auto_document

    workflows = r.workflows or ",".join(preset_names("classic", auto=True))
    opts = AutoOptions(max_drop=r.max_drop, objective=r.objective, batch=r.batch, compile=r.compile, max_float=r.max_float, proxy_samples=r.proxy_samples,
                       workflows=tuple(w.strip() for w in workflows.split(",") if w.strip()), target=r.target, progress=progress)
    check_options(opts)
    cluster = ClusterOptions(r.workers, r.ray_address)
    recipe_path = auto_outputs(r.model, r.out_dir, r.recipe_out, r.force)
    bundle = load_bundle(r.model, r.data, r.n_calibration, r.n_evaluation)
    with open_tasks(cluster) as tasks:
        report, result = search(bundle, opts, tasks)
    write_outputs(report, bundle, result, recipe_path, r.out_dir, overwrite=r.force)
    print_auto(report, out)
    if report.recipe_path:
        out.print(f"wrote {report.recipe_path} (quantwise quantize {r.model} --recipe {report.recipe_path} reproduces it)")
    if report.artifact_path:
        out.print(f"wrote {report.artifact_path}")
    write_report_files(report.to_dict(), lambda: auto_document(report), r.json_path, r.html_path, out)
