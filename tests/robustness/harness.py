"""Drive the CLI over bad inputs and judge each run by what a user would see and keep.

A case is a command line (``{tmp}`` stands for its own empty working folder) and a setup that
writes the files it needs there. Every run must end with exit code 0 or 2, never a traceback or
an 'unexpected' error, with at most one ``error:`` line (exactly one when it fails); a failed
run leaves no new file or folder behind, and no run changes a file that existed before it,
except where the case says the user asked for it (``may_write`` / ``may_change``).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Runner = Callable[[list[str], Path], tuple[int, str, str]]


@dataclass
class Case:
    id: str
    category: str
    args: list[str]
    setup: Callable[[Path], None] | None = None
    may_write: tuple[str, ...] = ()  # relative paths a successful run may create
    may_change: tuple[str, ...] = ()  # relative paths a successful run may change (the user asked: --force)
    slow: bool = False  # loads a model heavier than mnist-cnn


@dataclass
class Outcome:
    case: Case
    code: int
    problems: list[str] = field(default_factory=list)
    error_line: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def snapshot(root: Path) -> dict[str, str]:
    """Every path below ``root`` with a hash of its content ('dir' for folders)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _under(rel: str, allowed: tuple[str, ...]) -> bool:
    return any(rel == a or rel.startswith(a.rstrip("/") + "/") for a in allowed)


def judge(case: Case, code: int, out: str, err: str, before: dict[str, str], after: dict[str, str]) -> Outcome:
    problems = []
    if code not in (0, 2):
        problems.append(f"exit code {code}")
    if "Traceback" in out + err:
        problems.append("traceback")
    if "unexpected" in err:
        problems.append("unexpected error: " + next((l for l in err.splitlines() if "unexpected" in l), ""))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if len(errors) > 1:
        problems.append(f"{len(errors)} error lines")
    if code == 2 and not errors and "Usage:" not in err:
        problems.append("failed without an error line")
    new = sorted(set(after) - set(before))
    if code != 0 and new:
        problems.append(f"left {new[:3]}")
    if code == 0 and [p for p in new if not _under(p, case.may_write)]:
        problems.append(f"wrote {[p for p in new if not _under(p, case.may_write)][:3]}")
    changed = [p for p in before if p in after and before[p] != after[p] or p not in after]
    if [p for p in changed if not (code == 0 and _under(p, case.may_change))]:
        problems.append(f"changed or removed {changed[:3]}")
    return Outcome(case, code, problems, errors[0] if errors else "")


def run_case(case: Case, root: Path, runner: Runner) -> Outcome:
    root.mkdir(parents=True, exist_ok=True)
    if case.setup is not None:
        case.setup(root)
    before = snapshot(root)
    args = [a.replace("{tmp}", str(root)) for a in case.args]
    code, out, err = runner(args, root)
    return judge(case, code, out, err, before, snapshot(root))


def in_process(args: list[str], root: Path) -> tuple[int, str, str]:
    """The CLI in this process (fast: torch and the models load once), from ``root``."""
    import torch

    from quantwise.cli import main

    threads, cwd, argv = torch.get_num_threads(), os.getcwd(), sys.argv
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["quantwise", *args]
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main.run()
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except BaseException as e:  # noqa: BLE001  (what escapes run() is itself the defect)
                code = 1
                err.write(f"Traceback: escaped run(): {type(e).__name__}: {e}\n")
    finally:
        sys.argv = argv
        os.chdir(cwd)
        torch.set_num_threads(threads)  # a case's --threads must not slow the rest
        main.STATE["debug"] = False
    return code, out.getvalue(), err.getvalue()


def subprocess_runner(timeout: float = 600) -> Runner:
    """The CLI as a user runs it: a fresh process per case."""

    def run(args: list[str], root: Path) -> tuple[int, str, str]:
        done = subprocess.run([sys.executable, "-m", "quantwise", *args], cwd=root, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdin=subprocess.DEVNULL)
        return done.returncode, done.stdout, done.stderr

    return run
