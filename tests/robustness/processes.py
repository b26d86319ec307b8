"""Runs that need real processes: two writers of the same path at once, and signals at random moments.

Each returns a list of problems (empty when the run behaved): used by the CI tests and by
benchmarks/robustness.py, which repeats them with more moments and more commands.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from harness import snapshot

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _start(args: list[str], root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "quantwise", *args], cwd=root, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def _valid_artifact(path: Path) -> bool:
    from quantwise.artifact.store import read

    try:
        read(path)
    except Exception:  # noqa: BLE001  (any failure to read means a broken artifact)
        return False
    return True


def interrupted(args: list[str], root: Path, after_s: float, signum: int, output: str) -> list[str]:
    """Start ``args`` in ``root``, send ``signum`` after ``after_s`` seconds: the process ends by itself
    with exit code 0, 2 or 130 and leaves either nothing new or a whole ``output``, never a temporary file."""
    root.mkdir(parents=True, exist_ok=True)
    before = snapshot(root)
    proc = _start(args, root)
    time.sleep(after_s)
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        return ["did not stop within 120 s of the signal"]
    problems = []
    if proc.returncode not in (0, 2, 130):
        problems.append(f"exit code {proc.returncode}")
    if "Traceback" in err:
        problems.append("traceback")
    new = sorted(set(snapshot(root)) - set(before))
    stray = [p for p in new if not (p == output or p.startswith(output + "/"))]
    if stray:
        problems.append(f"left {stray[:3]}")
    if output in new and (root / output).is_dir() and not _valid_artifact(root / output):
        problems.append(f"{output} is not a whole artifact")
    return problems


def concurrent(args: list[str], root: Path, output: str, n: int = 2) -> list[str]:
    """``n`` identical runs writing the same ``output`` at once: each ends with 0 or 2, at least one
    writes, the output is whole, and nothing else is left."""
    root.mkdir(parents=True, exist_ok=True)
    before = snapshot(root)
    procs = [_start(args, root) for _ in range(n)]
    results = [(p.wait(timeout=600), p.stderr.read() if p.stderr else "") for p in procs]
    problems = [f"exit code {code}" for code, _ in results if code not in (0, 2)]
    problems += ["traceback" for _, err in results if "Traceback" in err]
    if not any(code == 0 for code, _ in results):
        problems.append("no run succeeded")
    new = sorted(set(snapshot(root)) - set(before))
    stray = [p for p in new if not (p == output or p.startswith(output + "/"))]
    if stray:
        problems.append(f"left {stray[:3]}")
    path = root / output
    if path.is_dir() and not _valid_artifact(path):
        problems.append(f"{output} is not a whole artifact")
    return problems
