"""Argument checks shared by the learned-rounding algorithms: each raises ``ValueError`` naming the argument."""
from __future__ import annotations

import math

__all__ = ["positive_int", "positive_number", "number_at_least"]


def positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def positive_number(name: str, value: object, none_means: str | None = None) -> None:
    """``value > 0`` and finite; ``None`` is accepted when ``none_means`` says what it stands for."""
    if value is None and none_means is not None:
        return
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number{f' or None ({none_means})' if none_means else ''}, got {value!r}")


def number_at_least(name: str, value: object, low: float) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= low):
        raise ValueError(f"{name} must be a number >= {low:g}, got {value!r}")
