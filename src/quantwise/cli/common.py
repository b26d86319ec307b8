"""What every command shares: the consoles, the progress bar, and how a model spec is resolved."""
from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from collections.abc import Iterable
from types import ModuleType
from typing import Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")

# Options and arguments that several commands take: declared once, so their flags, defaults and help agree.
ModelArg = typer.Argument(..., help="A zoo model (see 'quantwise zoo'), 'file.py:factory', 'package.module:factory', or for language models a .gguf file or Hugging Face directory.")
DataOpt = typer.Option(None, "--data", help="A folder of images, a .pt/.npz/.safetensors file, or file.py:factory.")
NCalOpt = typer.Option(None, "--n-calibration", help="Calibration samples (default: the model's own).")
NEvalOpt = typer.Option(None, "--n-evaluation", help="Evaluation samples (default: the model's own).")
TextOpt = typer.Option(None, "--text", help="Language models: a plain-text file or folder (default: the gensim Wikipedia sample).")
ArchOpt = typer.Option(None, "--model", help="The float model an artifact of a user model was quantized from ('file.py:factory' or 'package.module:factory'): an artifact never names code to run. Not needed for zoo models.")
ContextOpt = typer.Option(512, "--context", help="Language models: tokens per evaluation window (stride = window).")
EvalTokensOpt = typer.Option(24576, "--eval-tokens", help="Language models: evaluation tokens for perplexity.")
WorkersOpt = typer.Option(None, "--workers", help="Run the sweep's units (one layer, one candidate) on a local Ray instance with N worker processes of one thread each (needs ray installed). Latency is still timed in this process, alone.")
RayAddressOpt = typer.Option(None, "--ray-address", help="Run the sweep's units on an existing Ray cluster (the HOST:PORT 'ray start --head' printed); every node needs the same quantwise, torch and torchao.")
JsonOpt = typer.Option(None, "--json", help="Also write every number as JSON.")
HtmlOpt = typer.Option(None, "--html", help="Also write a self-contained HTML report (figures, the same numbers as --json).")
# wide when piped or captured, so tables stay readable in logs and files
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


KIND_COMMANDS = {"classic": "quantwise.cli.classic", "language": "quantwise.cli.language"}  # model kind -> its commands


def commands_for(spec: str) -> ModuleType:
    """The commands (quantize, evaluate, compare, debug, auto) for the kind of model that ``spec``
    names: a model spec, or an artifact directory."""
    from quantwise.api import model_kind_of

    return importlib.import_module(KIND_COMMANDS[model_kind_of(spec)])


PLAIN_EVERY_S = 10.0  # without a terminal: one progress line per this many seconds at most


def progress(description: str, items: Iterable[T], total: int) -> Iterable[T]:
    """A progress bar on a terminal; elsewhere (CI, a log file) plain lines at a modest rate, so
    that long work is never silent."""
    if not err.is_terminal:
        yield from _plain_progress(description, items, total)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def _plain_progress(description: str, items: Iterable[T], total: int) -> Iterable[T]:
    """A line at most every PLAIN_EVERY_S seconds, from a timer thread, so that one slow item
    (a compilation, a long forward pass) is not silent either; a closing line for long work."""
    start = time.monotonic()
    state = {"done": 0, "said": start}
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(PLAIN_EVERY_S / 5):
            now = time.monotonic()
            if now - state["said"] >= PLAIN_EVERY_S:
                print(f"{description}: {state['done']}/{total} ({now - start:.0f} s)", file=sys.stderr, flush=True)
                state["said"] = now

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        for item in items:
            yield item
            state["done"] += 1
    finally:
        stop.set()
        ticker.join()
    took = time.monotonic() - start
    if took >= PLAIN_EVERY_S:  # long enough that its end is worth a line
        print(f"{description}: {state['done']}/{total} done in {took:.0f} s", file=sys.stderr, flush=True)


def load_bundle(spec: str, data: Optional[str], n_cal: Optional[int], n_eval: Optional[int]) -> Any:
    from quantwise import api

    logging.getLogger("quantwise").info("loading %s", spec)
    return api.load_model(spec, data, n_cal, n_eval)
