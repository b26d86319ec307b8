"""One error type for everything a user can get wrong: it names the problem and the fix."""
from __future__ import annotations


class QuantwiseError(Exception):
    """A user-facing failure. ``str(err)`` is one readable line: problem, then fix."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


def choice_error(what: str, value: object, valid: list[str] | tuple[str, ...]) -> QuantwiseError:
    """A uniform message for an unknown name: lists the valid ones."""
    return QuantwiseError(f"unknown {what} {value!r}", f"use one of: {', '.join(sorted(valid))}")


def first_line(err: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an exception's message (or its type name), shortened."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(err).__name__
