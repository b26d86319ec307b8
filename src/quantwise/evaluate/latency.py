"""Latency: warm-up, then repeated timed calls; medians and percentiles, never one number."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from quantwise.data.base import Inputs


@dataclass(frozen=True)
class Latency:
    batch: int
    threads: int
    median_ms: float
    p90_ms: float
    repeats: int

    @property
    def throughput(self) -> float:
        """Samples per second at the median latency."""
        return self.batch / (self.median_ms / 1000.0)


def measure(fn: Callable[..., object], inputs: Inputs, warmup: int = 3, repeats: int = 20, max_seconds: float = 20.0) -> Latency:
    """Time ``fn(*inputs)``. Stops early after ``max_seconds`` (at least 5 repeats)."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(*inputs)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < repeats and (len(times) < 5 or time.perf_counter() - start < max_seconds):
            t0 = time.perf_counter()
            fn(*inputs)
            times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    return Latency(inputs[0].shape[0], torch.get_num_threads(), statistics.median(times), p90, len(times))


def alternating(runners: dict[str, Callable[..., object]], inputs: Inputs, rounds: int, block: int, warmup: int = 3) -> dict[str, list[list[float]]]:
    """Head-to-head timing on a shared machine: per runner, ``rounds`` blocks of ``block`` call times (ms).

    Each round runs every runner for one block of consecutive calls, so load changes hit all runners
    alike; the call before each block is not kept (it shares the cores with the previous runtime's
    still-spinning thread pool, which can slow one interleaved call by 10x). Warm-up (and any
    compilation) happens before the first round.
    """
    times: dict[str, list[list[float]]] = {name: [] for name in runners}
    with torch.no_grad():
        for run in runners.values():
            for _ in range(warmup):
                run(*inputs)
        for _ in range(rounds):
            for name, run in runners.items():
                run(*inputs)
                got = []
                for _ in range(block):
                    t0 = time.perf_counter()
                    run(*inputs)
                    got.append((time.perf_counter() - t0) * 1000.0)
                times[name].append(got)
    return times


def paired_ratios(times: dict[str, list[list[float]]], name: str, reference: str) -> list[float]:
    """Per round of ``alternating``'s ``times``: ``name``'s median over ``reference``'s median in
    the same round (same load), sorted. < 1: ``name`` was faster."""
    return sorted(statistics.median(a) / statistics.median(b) for a, b in zip(times[name], times[reference]))


def batch_of(inputs: Inputs, batch: int) -> Inputs:
    """Repeat the example along dim 0 up to ``batch`` samples."""
    n = inputs[0].shape[0]
    reps = -(-batch // n)
    return tuple(t.repeat(reps, *([1] * (t.dim() - 1)))[:batch] for t in inputs)
