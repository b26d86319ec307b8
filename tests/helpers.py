"""Test helpers shared across files."""
from __future__ import annotations

import sys

import torch

from quantwise.evaluate.metrics import sqnr_db

__all__ = ["sqnr_db", "run", "invoke", "error_line"]


def run(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return module(*inputs)


def invoke(capsys, *args: str) -> tuple[int, str, str]:
    old = sys.argv
    sys.argv = ["quantwise", *args]
    try:
        from quantwise.cli.main import run as cli

        cli()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]
