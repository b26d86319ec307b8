"""The robustness suite's CI subset: every bad input that does not load a language model, run
through the CLI in this process (benchmarks/robustness.py runs all of them, each in a fresh process)."""
from __future__ import annotations

import signal

import pytest

from cases import all_cases
from harness import in_process, run_case
from processes import concurrent, interrupted

FAST = [c for c in all_cases() if not c.slow]


def test_the_suite_is_large_enough():
    assert len(all_cases()) >= 300 and len({c.category for c in all_cases()}) >= 7


@pytest.mark.parametrize("case", FAST, ids=[c.id for c in FAST])
def test_bad_input(case, tmp_path):
    outcome = run_case(case, tmp_path / "work", in_process)
    assert outcome.ok, f"{case.args}: {outcome.problems} ({outcome.error_line})"
    assert not (tmp_path / "work" / "payload-ran").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_writing_leaves_nothing_partial(tmp_path, signum):
    """Stopped during quantization or while the artifact is written and verified."""
    for k, after_s in enumerate((4.0, 6.5)):
        problems = interrupted(["quantize", "mnist-cnn", "--recipe", "static-fx", "--out", "art", "--no-eval"], tmp_path / str(k), after_s, signum, "art")
        assert not problems, f"after {after_s} s: {problems}"


@pytest.mark.slow
def test_two_runs_writing_the_same_artifact_at_once(tmp_path):
    problems = concurrent(["quantize", "mnist-cnn", "--recipe", "dynamic", "--out", "art", "--no-eval"], tmp_path, "art")
    assert not problems, problems
