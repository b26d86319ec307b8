"""A unit that does not fit in a node's memory: Ray's memory monitor kills its worker, and the
sweep ends in one readable line (or a row, for auto) after a few tries instead of retrying forever
(Ray's default for a task its monitor killed).

The local Ray instance starts with its memory monitor's threshold set a little above what this
machine uses now (``RAY_memory_usage_threshold``); the unit then allocates until the monitor
kills it: a real out-of-memory kill, without filling the machine."""
from __future__ import annotations

import time

import pytest

from quantwise.errors import QuantwiseError
from quantwise.fanout import ClusterOptions, open_tasks

pytest.importorskip("ray")
HEADROOM = 0.12  # of the machine's memory, above what is in use when the instance starts (Ray itself takes ~1 GB of it)


def _meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as f:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}


@pytest.fixture
def tight_memory(monkeypatch):
    info = _meminfo()
    used = 1 - info["MemAvailable"] / info["MemTotal"]
    monkeypatch.setenv("RAY_memory_usage_threshold", f"{used + HEADROOM:.3f}")  # the local raylet reads these when it starts
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "100")
    monkeypatch.delenv("RAY_task_oom_retries", raising=False)  # quantwise's bound, not one from the environment
    return int(info["MemTotal"] * (HEADROOM + 0.12))  # a unit this large crosses the threshold: it stops at 24 % of the machine


@pytest.mark.slow
def test_a_unit_out_of_memory_is_one_line_after_a_few_tries_not_retried_forever(tight_memory):
    def allocate_until_killed(limit: int) -> int:  # defined here: shipped to the worker by value
        """Touches memory 128 MB at a time, up to ``limit`` bytes: far past the threshold."""
        held = []
        while sum(map(len, held)) < limit:
            block = bytearray(128 << 20)
            block[::4096] = b"\x01" * len(block[::4096])  # resident
            held.append(block)
            time.sleep(0.05)
        return sum(map(len, held))

    start = time.perf_counter()
    with open_tasks(ClusterOptions(workers=1)) as tasks:
        with pytest.raises(QuantwiseError) as err:
            tasks.map(allocate_until_killed, [tight_memory], label="layer conv1")
        lost = tasks.map(allocate_until_killed, [tight_memory], label="candidate x", on_lost=lambda item, why: f"row: {why}")
    assert "ran out of memory (layer conv1)" in err.value.problem and "fewer workers" in err.value.fix
    assert lost == ["row: a Ray worker ran out of memory (candidate x)"]
    assert time.perf_counter() - start < 180  # Ray's default would retry the unit forever
