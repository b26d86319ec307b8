"""What every command shares: the consoles, the progress bar, and how a model spec is resolved."""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, Optional, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")
# wide when piped or captured, so tables stay readable in logs and files
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


def is_llm(spec: str) -> bool:
    from quantwise.llm.model import is_language_model_spec

    return is_language_model_spec(spec)


def progress(description: str, items: Iterable[T], total: int) -> Iterable[T]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def load_bundle(spec: str, data: Optional[str], n_cal: Optional[int], n_eval: Optional[int]) -> Any:
    from quantwise import api

    logging.getLogger("quantwise").info("loading %s", spec)
    return api.load_model(spec, data, n_cal, n_eval)
