"""A result row's warnings: a kind that code acts on, and a sentence that people read.

Code decides by ``kind`` (is this row within its accuracy budget? did it lose on speed?);
the ``text`` is display only and nothing parses it. In JSON a warning is
``{"kind": ..., "text": ...}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["Finding", "Kind", "within_budget", "warning_text"]


class Kind(str, Enum):
    ACCURACY = "accuracy"  # outside the accuracy tolerance against float
    SPEED = "speed"  # slower than the float baseline it is judged against
    PLATFORM = "platform"  # this CPU lacks what the recipe's kernels need (emulated, slow)


@dataclass(frozen=True)
class Finding:
    kind: Kind
    text: str

    def __str__(self) -> str:
        return self.text

    @classmethod
    def from_dict(cls, stored: dict[str, str]) -> Finding:
        return cls(Kind(stored["kind"]), stored["text"])


def within_budget(warnings: list[Finding]) -> bool:
    """No accuracy warning: the row keeps within the tolerance."""
    return not any(w.kind is Kind.ACCURACY for w in warnings)


def warning_text(stored: Any) -> str:
    """The sentence of a warning read back from a report's JSON (older reports stored the bare sentence)."""
    return stored if isinstance(stored, str) else stored["text"]
