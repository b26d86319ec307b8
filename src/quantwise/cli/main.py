"""``quantwise``: each command parses its options and calls one library function."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.logging import RichHandler

from quantwise.cli.common import ArchOpt, ContextOpt, DataOpt, EvalTokensOpt, ModelArg, NCalOpt, NEvalOpt, RayAddressOpt, TextOpt, WorkersOpt, commands_for, err, out
from quantwise.cli.requests import CompareRequest, EvalRequest, QuantizeRequest
from quantwise.cli.debug import debug as debug_command
from quantwise.cli.noise import Capture
from quantwise.cli.options import check_ranges, checked
from quantwise.errors import QuantwiseError, first_line

app = typer.Typer(
    help="Quantize PyTorch models and prove the result: accuracy, size and speed, side by side.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _error(message: str) -> None:
    """One plain line on stderr: no wrapping, no markup."""
    print(f"error: {message}", file=sys.stderr, flush=True)
STATE: dict[str, Any] = {"debug": False}
NOISE = Capture()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks, and other libraries' warnings as they happen (default: one count at the end)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and results."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads (default: torch's choice)."),
) -> None:
    STATE["debug"] = debug
    check_ranges({"threads": threads})
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", handlers=[RichHandler(console=err, show_path=False, show_time=False)], force=True)
    if not debug:  # other libraries' warnings: counted, and summed up once when the command ends
        NOISE.install()
    if threads:
        import torch

        torch.set_num_threads(threads)


@app.command()
def zoo() -> None:
    """List the built-in real trained models and their data.

    Example:  quantwise zoo
    """
    from quantwise.llm.model import ZOO_LLMS
    from quantwise.models.zoo import DESCRIPTIONS

    for name, text in sorted({**DESCRIPTIONS, **{k: v[2] for k, v in ZOO_LLMS.items()}}.items()):
        out.print(f"[bold]{name}[/]: {text}")


@app.command()
def recipes() -> None:
    """List the named recipes and what they set.

    Example:  quantwise recipes
    """
    from quantwise.config import MODEL_KINDS, PRESET_TABLE, recipe_to_dict

    heading = {"classic": "classic models (CNNs, encoders, LSTMs)", "language": "language models (PyTorch runtime)", "gguf": "language models for llama.cpp (export --to gguf)"}
    for kind in MODEL_KINDS:
        out.print(f"[bold underline]{heading[kind]}[/]")
        for name, preset in PRESET_TABLE.items():
            if preset.models == kind:
                fields = {k: v for k, v in recipe_to_dict(preset.recipe).items() if k not in ("version",)}
                defaults = ", ".join(w for w, on in (("compare", preset.compare), ("auto", preset.auto)) if on)
                out.print(f"[bold]{name}[/]: {preset.about}" + (f" [dim](default in {defaults})[/]" if defaults else ""))
                out.print(f"  [dim]{fields}[/]")
    out.print("Also: a .json/.yaml recipe file, or kind:key=value,... e.g. static:observer=mse,path=pt2e")
    out.print("Keep layers float (static, qat, dynamic): keep_float=PATTERN|PATTERN (fnmatch over module names, '|'-separated), e.g. 'static:keep_float=_fc|_blocks.0.*'")


@app.command()
@checked
def quantize(
    model: str = ModelArg,
    recipe: str = typer.Option("static-fx", "--recipe", "-r", help="Preset name, recipe file, or kind:key=value,..."),
    output: Path = typer.Option(..., "--out", "-o", help="Artifact directory to write (safetensors + manifest.json)."),
    data: Optional[str] = DataOpt,
    force: bool = typer.Option(False, "--force", help="Replace an existing output."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Measure metrics on the evaluation split and store them."),
    n_calibration: Optional[int] = NCalOpt,
    n_evaluation: Optional[int] = NEvalOpt,
    text: Optional[str] = TextOpt,
    context: int = ContextOpt,
    eval_tokens: int = EvalTokensOpt,
) -> None:
    """Quantize MODEL with one recipe and save it as an artifact.

    Examples:
      quantwise quantize mnist-cnn --recipe static-fx --out mnist-int8
      quantwise quantize mnist-cnn --recipe static:observer=mse,granularity=per-tensor --out m2
      quantwise quantize my_model.py:build --data images/ --recipe dynamic --out mine
      quantwise quantize smollm2-135m --recipe int4-gptq --out smol-int4
      quantwise quantize smollm2-135m --recipe weight-only:bits=4,group_size=32,algorithm=awq --out s32
    """
    request = QuantizeRequest(model=model, recipe=recipe, output=output, force=force, evaluate=evaluate, data=data, n_calibration=n_calibration,
                              n_evaluation=n_evaluation, text=text, context=context, eval_tokens=eval_tokens)
    commands_for(model).quantize(request)


@app.command("eval")
@checked
def eval_(
    target: str = typer.Argument(..., help="An artifact directory, or a model spec to evaluate in float."),
    model: Optional[str] = ArchOpt,
    data: Optional[str] = DataOpt,
    n_evaluation: Optional[int] = NEvalOpt,
    text: Optional[str] = TextOpt,
    context: int = ContextOpt,
    eval_tokens: int = EvalTokensOpt,
) -> None:
    """Evaluate a saved artifact (or a float model) on its evaluation split.

    Examples:
      quantwise eval mnist-int8
      quantwise eval mnist-cnn
      quantwise eval smollm2-135m --eval-tokens 4096
      quantwise eval smol-int4
      quantwise eval my-int8 --model my_model.py:build --data images/
    """
    commands_for(target).evaluate(EvalRequest(target=target, model=model, data=data, n_evaluation=n_evaluation, text=text, context=context,
                                              eval_tokens=eval_tokens))


@app.command()
@checked
def compare(
    model: str = ModelArg,
    recipes_: Optional[str] = typer.Option(None, "--recipes", help="Comma-separated recipes to run (default: dynamic,static-fx,static-pt2e,qat; for language models every LLM preset but the slow int4-signround, or with --target llama.cpp the gguf presets)."),
    batches: str = typer.Option("1,32", "--batches", help="Batch sizes to time, comma-separated."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON."),
    html_path: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained HTML report: setting, table, warnings, Pareto figure."),
    data: Optional[str] = DataOpt,
    compile_: bool = typer.Option(True, "--compile/--no-compile", help="Time torch.compile rows (slow to build)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Timed calls per measurement, medians reported (default: 20; 5 decode runs for language models)."),
    n_calibration: Optional[int] = NCalOpt,
    n_evaluation: Optional[int] = NEvalOpt,
    text: Optional[str] = TextOpt,
    context: int = ContextOpt,
    eval_tokens: int = EvalTokensOpt,
    target: str = typer.Option("pytorch", "--target", help="Where quantized models run: pytorch, onnxruntime (exported, parity-checked, timed in ONNX Runtime), executorch (.pte with XNNPACK, batch 1 per call; recipes static-xnnpack, dynamic-xnnpack), or several: pytorch,onnxruntime. For a language model: pytorch, or llama.cpp (the float model and the gguf recipes' files run and timed in llama.cpp; default recipes gguf-q8_0, gguf-q4_0, gguf-q4_k_m)."),
    peers: bool = typer.Option(True, "--peers/--no-peers", help="Add ONNX Runtime float and ONNX Runtime's own static/dynamic int8 quantizers as rows."),
    workers: Optional[int] = WorkersOpt,
    ray_address: Optional[str] = RayAddressOpt,
) -> None:
    """Float baselines and every applicable workflow, side by side: size, latency, accuracy.

    For a language model: perplexity, size, decode and prefill tokens/s at batch 1, time
    and peak memory to quantize, against float32 and bf16 (eager and compiled).

    Examples:
      quantwise compare mnist-cnn
      quantwise compare efficientnet-lite0 --batches 1,32 --json out/effnet.json --html out/effnet.html
      quantwise compare minilm-l6 --recipes dynamic,static-pt2e --no-compile
      quantwise compare efficientnet-lite0 --recipes static-pt2e --target pytorch,onnxruntime
      quantwise compare minilm-l6 --recipes dynamic-xnnpack --target executorch --batches 1 --no-peers
      quantwise compare smollm2-135m --json out/smollm2.json
      quantwise compare smollm2-135m --recipes int8-weight-only,int4-gptq --eval-tokens 20480
      quantwise compare smollm2-135m --target llama.cpp --recipes gguf-q4_k_m,int4-awq-gptq
    """
    from quantwise.cli.outputs import check_outputs

    check_outputs(json=json_path, html=html_path)
    if recipes_ is not None and not recipes_.strip(" ,"):
        raise QuantwiseError("--recipes is empty", "name recipes, e.g. --recipes dynamic,static-pt2e, or leave the option out for the defaults")
    request = CompareRequest(model=model, recipes=recipes_, batches=batches, json_path=json_path, html_path=html_path, data=data, compile=compile_,
                             repeats=repeats, n_calibration=n_calibration, n_evaluation=n_evaluation, text=text, context=context,
                             eval_tokens=eval_tokens, target=target, peers=peers,
                             workers=workers, ray_address=ray_address)
    commands_for(model).compare(request)


@app.command("export")
@checked
def export_(
    artifact: Path = typer.Argument(..., help="An artifact directory written by 'quantwise quantize'."),
    to: str = typer.Option(..., "--to", help="onnx | pt2 | torchscript | executorch | gguf (language models, for llama.cpp)"),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write (default: model.<suffix> inside the artifact)."),
    model: Optional[str] = ArchOpt,
    data: Optional[str] = DataOpt,
    force: bool = typer.Option(False, "--force", help="Replace an existing output."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Held-out samples for the parity check (default 256; for a language model, windows of 512 tokens, default 8)."),
    vnni_only: bool = typer.Option(False, "--vnni-only", help="ONNX: keep ONNX Runtime's faster uint8 x int8 layout, computed correctly only on CPUs with VNNI, AMX or ARM dot products (AVX2-only x86 saturates it). Default: a file every CPU computes the same."),
) -> None:
    """Export a quantized artifact to a runtime and prove it with a parity check.

    The parity check runs the exported file on held-out inputs against the quantized
    PyTorch model and the float model; an export outside tolerance fails and leaves nothing.
    A language model (int4 / int8 weight-only) exports to ONNX with its layers as ONNX
    Runtime's MatMulNBits, checked by perplexity on the evaluation articles; a language model
    quantized with a gguf recipe exports to a GGUF file for llama.cpp, read back and checked
    bit for bit (and in llama.cpp itself when llama-cpp-python is installed).

    Examples:
      quantwise export mnist-int8 --to onnx
      quantwise export effnet-pt2e --to pt2 --out deploy/effnet.pt2
      quantwise export mnist-int8 --to torchscript
      quantwise export smol-int4 --to onnx
      quantwise export smol-q4km --to gguf
      quantwise export my-int8 --to onnx --model my_model.py:build --data images/
    """
    from quantwise.cli.export import export

    export(artifact, to=to, output=output, model=model, data=data, force=force, samples=samples, vnni_only=vnni_only)


@app.command()
@checked
def generate(
    artifact: str = typer.Argument(..., help="A language-model artifact written by 'quantwise quantize'."),
    prompt: str = typer.Argument(..., help="Text to continue."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", help="Tokens to generate (greedy)."),
    compile_: bool = typer.Option(False, "--compile/--no-compile", help="Compile the decode step (about a minute to build; faster per token)."),
    chat: bool = typer.Option(False, "--chat", help="Wrap the prompt in the model's chat template."),
) -> None:
    """Stream text from a saved quantized language model.

    Examples:
      quantwise generate smol-int4 "The capital of France is"
      quantwise generate smol-int4 "Explain quantization in one sentence." --chat -n 80
    """
    from quantwise.cli import language

    language.generate(artifact, prompt=prompt, max_new_tokens=max_new_tokens, compile_=compile_, chat=chat)


app.command("debug")(checked(debug_command))

from quantwise.cli import mixed as _mixed  # noqa: E402

app.command()(checked(_mixed.sensitivity))
app.command()(checked(_mixed.auto))


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """Usage errors and aborts: click's, and those of the copy of click that typer >= 0.2x vendors
    (``typer._click``), which are not click's classes."""
    import click

    usage: list[type] = [click.exceptions.ClickException]
    abort: list[type] = [click.exceptions.Abort]
    try:
        from typer import exceptions as typer_errors
        from typer._click import exceptions as vendored
    except ImportError:
        return tuple(usage), tuple(abort)
    usage.append(vendored.ClickException)
    abort.append(typer_errors.Abort)
    return tuple(usage), tuple(abort)


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM as an exception, so that every partial output is cleaned up as on Ctrl-C."""
    raise KeyboardInterrupt


def _run_app() -> None:
    try:
        code = app(standalone_mode=False)
        # outside standalone mode typer turns Ctrl-C into a *returned* 130 (and typer.Exit into its code):
        # ignoring it made an interrupted run exit 0, as if it had succeeded
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    finally:
        NOISE.uninstall()
        said = NOISE.summary()
        NOISE.sources.clear()
        if said:
            err.print(f"[dim]{said}[/]")


def run() -> None:
    """Entry point: one readable line and a non-zero exit for user errors."""
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        _run_app()
    except QuantwiseError as e:
        if STATE["debug"]:
            raise
        _error(str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except (typer.Exit, SystemExit):
        raise
    except OSError as e:  # a full disk, a read-only or missing location, no permission
        if STATE["debug"]:
            raise
        where = f" ({e.filename})" if e.filename else ""
        _error(f"cannot read or write{where}: {e.strerror or first_line(e)}; free some space, or choose a location you can write to")
        sys.exit(2)
    except Exception as e:
        usage, abort = _click_exceptions()
        if isinstance(e, usage):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, abort):
            sys.exit(1)
        if STATE["debug"]:
            raise
        _error(f"unexpected {type(e).__name__}: {first_line(e)}; rerun with --debug for the traceback")
        sys.exit(1)


def entry() -> None:
    """The ``quantwise`` command: ``run``, then ignore further signals while the interpreter shuts down,
    so that a Ctrl-C or SIGTERM arriving after the work is done cannot turn a whole result into a kill."""
    import signal

    try:
        run()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":
    entry()
