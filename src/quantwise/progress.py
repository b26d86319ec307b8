"""How long work reports its progress: a function that wraps an iterable (the CLI passes a
progress bar, the library's default passes the items through)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
# Wraps an iterable to show progress: ``progress("calibrating", batches, total)``.
ProgressFn = Callable[[str, Iterable[T], int], Iterable[T]]


def no_progress(description: str, items: Iterable[T], total: int) -> Iterable[T]:
    return items
