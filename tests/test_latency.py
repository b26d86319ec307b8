"""The alternating timer's bookkeeping (no timing claims: speed belongs in benchmarks/)."""
from __future__ import annotations

import torch

from quantwise.evaluate.latency import alternating, paired_ratios


def test_alternating_runs_every_runner_in_each_round_and_drops_the_first_call_of_a_block():
    calls: list[str] = []

    def runner(name):
        return lambda x: calls.append(name)

    times = alternating({"a": runner("a"), "b": runner("b")}, (torch.zeros(1),), rounds=3, block=4, warmup=2)
    assert {n: (len(t), {len(b) for b in t}) for n, t in times.items()} == {"a": (3, {4}), "b": (3, {4})}
    assert calls[:4] == ["a", "a", "b", "b"]  # warm-up first
    assert calls[4:] == (["a"] * 5 + ["b"] * 5) * 3  # per round: one dropped call + the timed block, runner after runner
    assert all(x >= 0 for t in times.values() for b in t for x in b)


def test_paired_ratios_compare_medians_within_each_round():
    times = {"ours": [[1.0, 2.0, 9.0], [4.0, 4.0, 4.0]], "peer": [[2.0, 2.0, 2.0], [1.0, 9.0, 8.0]]}
    assert paired_ratios(times, "ours", "peer") == [0.5, 1.0]  # round 2: 4 / 8, round 1: 2 / 2
