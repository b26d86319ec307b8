"""Range checks for every count a command takes, at the edge: one line naming the valid range.

Typer turns ``--samples x`` into an int already; what it lets through is the nonsense a
number can still be (0, negative, absurdly large). One table says what each option may be,
and ``checked`` applies it to a command before the command runs.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

from quantwise.errors import QuantwiseError

F = TypeVar("F", bound=Callable[..., Any])

BIG = 10**9
# parameter name -> (flag, smallest, largest)
RANGES: dict[str, tuple[str, float, float]] = {
    "threads": ("--threads", 1, 1024),
    "repeats": ("--repeats", 1, 100_000),
    "samples": ("--samples", 1, BIG),
    "n_calibration": ("--n-calibration", 1, BIG),
    "n_evaluation": ("--n-evaluation", 1, BIG),
    "context": ("--context", 16, 1_000_000),
    "eval_tokens": ("--eval-tokens", 16, BIG),
    "max_new_tokens": ("--max-new-tokens", 1, 1_000_000),
    "top_k": ("--top-k", 0, BIG),
    "controls": ("--controls", 0, BIG),
    "proxy_samples": ("--proxy-samples", 1, BIG),
    "batch": ("--batch", 1, 1_000_000),
    "batch_size": ("--batch-size", 1, 1_000_000),
    "max_float": ("--max-float", 0, BIG),
    "max_drop": ("--max-drop", 0, math.inf),
}


def check_ranges(values: dict[str, Any]) -> None:
    """Raise for the first value in ``values`` outside its range (``None``: the default, fine)."""
    for name, value in values.items():
        if name not in RANGES or value is None or isinstance(value, bool):
            continue
        flag, low, high = RANGES[name]
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
            problem = f"{flag} {value} is negative" if isinstance(value, (int, float)) and value < 0 <= low else f"{flag} {value} is out of range"
            valid = f"a number of at least {low:g}" if high == math.inf else f"a whole number from {low:g} to {high:,}"
            raise QuantwiseError(problem, f"give {valid}")


def checked(command: F) -> F:
    """Check a command's numeric options against ``RANGES`` before it runs."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check_ranges(kwargs)
        return command(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
