"""The ``Tasks`` interface, its in-process implementation, and the options that choose one."""
from __future__ import annotations

import os
from pathlib import Path
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from quantwise.errors import QuantwiseError
from quantwise.progress import ProgressFn, no_progress

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ClusterOptions:
    """``workers``: a local Ray instance with that many one-thread worker processes;
    ``address``: an existing Ray cluster (``ray start --head`` prints it). Neither: in process."""

    workers: int | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.address is not None:
            raise QuantwiseError("--workers and --ray-address both given", "use --workers N for a local Ray instance, or --ray-address for an existing cluster")
        if self.workers is not None and self.workers < 1:
            raise QuantwiseError(f"--workers {self.workers} is not a number of worker processes", "use --workers 1 or more")
        cores = os.cpu_count() or 1
        if self.workers is not None and self.workers > cores:
            raise QuantwiseError(f"--workers {self.workers} is more than this machine's {cores} cores (each worker runs one thread)",
                                 f"use --workers {cores} or fewer here, or --ray-address to spread the work over a cluster")
        if self.address is not None and not self.address.strip():
            raise QuantwiseError("--ray-address is empty", "give the address 'ray start --head' printed, e.g. --ray-address 10.0.0.5:6379")

    @property
    def in_process(self) -> bool:
        return self.workers is None and self.address is None


@dataclass(frozen=True)
class UnitTime:
    """How long one unit ran, measured where it ran (the cluster benchmark projects from these)."""

    label: str
    seconds: float
    node: str = "this process"  # on a cluster: the Ray node's id (its first 12 hex digits)


class Tasks(Protocol):
    """Runs independent units of work. ``fn`` must be a module-level function (a cluster's
    workers import it by name from their own quantwise); it is called as ``fn(*shared, item)``."""

    description: str  # where the work ran, for reports
    timings: list[UnitTime]  # every unit run so far

    def share(self, value: Any) -> Any:
        """A handle for a large input (the float model, the data) that many units read: stored once."""

    def map(self, fn: Callable[..., R], items: Sequence[T], *shared: Any, progress: ProgressFn = no_progress, label: str = "",
            on_lost: Callable[[T, str], R] | None = None) -> list[R]:
        """``[fn(*shared, item) for item in items]``, possibly in parallel; an error in one unit is raised.

        A unit whose worker process dies every time it is tried (a crash, out of memory) ends the
        sweep with one line, or, with ``on_lost``, gives ``on_lost(item, why)`` as its result: for
        sweeps where one failed unit is a row of the report, not the end of it."""


class InProcess:
    """Everything in this process, one unit after another: what runs without a cluster."""

    description = "in process"

    def __init__(self) -> None:
        self.timings: list[UnitTime] = []

    def share(self, value: Any) -> Any:
        return value

    def map(self, fn: Callable[..., R], items: Sequence[T], *shared: Any, progress: ProgressFn = no_progress, label: str = "",
            on_lost: Callable[[T, str], R] | None = None) -> list[R]:
        out = []  # in process, a unit that kills its process ends this one too: on_lost cannot apply
        for item in progress(label, items, len(items)):
            start = time.perf_counter()
            out.append(fn(*shared, item))
            self.timings.append(UnitTime(label, time.perf_counter() - start))
        return out


def in_order(tasks: Tasks, fn: Callable[..., R], items: Sequence[T], *shared: Any, progress: ProgressFn = no_progress, label: str = "") -> Iterator[R]:
    """``fn(*shared, item)`` for each item, yielded in order. In process each runs only when the
    caller asks for it (one result alive at a time, as a loop would); on a cluster all run at once
    and each result is handed over, and let go, in turn."""
    if isinstance(tasks, InProcess):
        for item in items:
            yield from tasks.map(fn, [item], *shared)
        return
    results = tasks.map(fn, items, *shared, progress=progress, label=label)
    results.reverse()
    while results:
        yield results.pop()


def folder_files(path: Path) -> dict[str, bytes]:
    """A folder's files by relative path: how a worker hands an artifact it wrote back to this process."""
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def write_files(files: dict[str, bytes], path: Path) -> Path:
    """``folder_files`` written out again under ``path``."""
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    return path
