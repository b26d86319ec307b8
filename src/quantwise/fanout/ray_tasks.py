"""``Tasks`` on Ray: a local instance (``--workers N``) or an existing cluster (``--ray-address``).

- Large inputs (the float model, the data, the proxy model) go into Ray's object store once
  (``share``); each worker process reads each of them once and keeps it for the units it runs.
- A unit is a task of one CPU; its worker runs torch on one thread.
- A worker process that dies mid-task (killed, crashed) is retried by Ray (``max_retries``), so
  the sweep completes with the results it would have had. An error of the unit's own is raised in
  this process as itself; a worker out of memory (killed by Ray's memory monitor ``MAX_RETRIES`` + 1
  times; Ray's own default would retry it forever), or retries exhausted, ends in one readable line,
  or becomes that unit's row where the caller says how (``on_lost``: auto's candidates).
- Before any work every node runs a probe: a node whose quantwise, torch or torchao differs from
  this process's (or that lacks quantwise) is refused with the fix.
- Ctrl-C cancels every task in flight.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from quantwise.errors import QuantwiseError, first_line
from quantwise.factory import USER_MODULE_PREFIX
from quantwise.fanout.base import ClusterOptions, UnitTime
from quantwise.progress import ProgressFn, no_progress

log = logging.getLogger(__name__)
R = TypeVar("R")
CANCEL_GRACE_S = 5.0  # after Ctrl-C, how long units get to clean up before their processes are killed
MAX_RETRIES = 3  # a worker killed mid-task: its unit runs again on a fresh worker process
# Ray retries a task its memory monitor killed without end by default (task_oom_retries = -1):
# a unit that does not fit in a node's memory would hang the sweep. This process owns the
# sweep's tasks, and its Ray reads the limit from the environment at ray.init.
OOM_RETRIES_ENV = "RAY_task_oom_retries"
MATCHED = ("quantwise", "torch", "torchao", "transformers")  # every node must run these exact versions
_SHARED: dict[str, Any] = {}  # in a worker process: shared inputs by object id, read once


class LostUnit(Exception):
    """A unit whose worker process died on every try (crash, out of memory): the problem and its fix."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise QuantwiseError("Ray is not installed here", "pip install 'ray==2.60.0' (the same version on every node of the cluster)") from None
    return ray


def _shared(ref: Any) -> Any:
    key = ref.hex()
    if key not in _SHARED:
        _SHARED[key] = _ray().get(ref)
    return _SHARED[key]


def _unit(fn: Callable[..., R], refs: list[Any], item: Any, threads: int) -> tuple[R, float, str]:
    """What a task runs: ``fn(*shared, item)`` with torch on ``threads`` threads; also its seconds and node."""
    import torch

    torch.set_num_threads(threads)
    for key in set(_SHARED) - {r.hex() for r in refs}:  # an earlier sweep's inputs: let them go
        del _SHARED[key]
    shared = [_shared(r) for r in refs]
    start = time.perf_counter()
    value = fn(*shared, item)
    return value, time.perf_counter() - start, _ray().get_runtime_context().get_node_id()[:12]


def _probe() -> dict[str, str]:
    """A node's versions and CPU (runs on the node)."""
    from quantwise.versions import machine, versions

    found = versions()
    return {**{k: found.get(k, "not installed") for k in MATCHED}, "cpu": machine()["cpu"], "host": socket.gethostname()}


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an address nothing answers at (Ray itself retries for minutes)."""
    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise QuantwiseError(f"--ray-address {address!r} is not HOST:PORT", "give the address 'ray start --head' printed, e.g. --ray-address 10.0.0.5:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise QuantwiseError(f"no Ray cluster answers at {address} ({err.strerror or type(err).__name__})",
                             "start one with 'ray start --head' on the head node and pass the address it prints") from None


class RayTasks:
    """Units as Ray tasks of one CPU each (see the module docstring)."""

    def __init__(self, ray: Any, description: str) -> None:
        self._ray, self.description = ray, description
        self.timings: list[UnitTime] = []
        self._by_value: set[str] = set()
        self._unit = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(_unit)

    @classmethod
    def connect(cls, options: ClusterOptions) -> RayTasks:
        ray = _ray()
        if options.address is not None:
            _reachable(options.address)
        if ray.is_initialized():
            raise QuantwiseError("Ray is already initialised in this process", "call ray.shutdown() first, or run one sweep at a time")
        quiet = {"include_dashboard": False, "configure_logging": False, "log_to_driver": False}
        os.environ.setdefault(OOM_RETRIES_ENV, str(MAX_RETRIES))  # a value the user set is kept
        with _own_signals():
            return cls._init(ray, options, quiet)

    @classmethod
    def _init(cls, ray: Any, options: ClusterOptions, quiet: dict[str, Any]) -> RayTasks:
        if options.workers is not None:
            # workers inherit this process's environment (PYTHONPATH included); never join a cluster named by RAY_ADDRESS
            ray.init(address="local", num_cpus=options.workers, **quiet)
        else:
            try:
                ray.init(address=options.address, **quiet)
            except (ConnectionError, RuntimeError) as err:
                raise QuantwiseError(f"could not join the Ray cluster at {options.address}: {first_line(err)}",
                                     "check the address 'ray start --head' printed and that this machine runs the same Ray version") from None
        try:
            nodes = _check_nodes(ray)
        except BaseException:
            ray.shutdown()
            raise
        cpus = sum(int(n["Resources"].get("CPU", 0)) for n in nodes)
        where = (f"local Ray instance, {options.workers} worker process(es) of one thread" if options.workers is not None
                 else f"Ray cluster at {options.address}: {len(nodes)} node(s), {cpus} CPU(s), one thread per task")
        return cls(ray, where)

    def share(self, value: Any) -> Any:
        # a user's model file (file.py:factory) is imported under a name no worker has: ship its code by value
        for name, module in list(sys.modules.items()):
            if name.startswith(USER_MODULE_PREFIX) and name not in self._by_value:
                self._ray.cloudpickle.register_pickle_by_value(module)
                self._by_value.add(name)
        try:
            return self._ray.put(value)
        except self._ray.exceptions.RayError as err:
            raise QuantwiseError(f"could not store the model and data in Ray's object store: {first_line(err)}",
                                 "give Ray more memory or disk ('ray start --object-store-memory'), or use a smaller evaluation split") from None

    def map(self, fn: Callable[..., R], items: Sequence[Any], *shared: Any, progress: ProgressFn = no_progress, label: str = "",
            on_lost: Callable[[Any, str], R] | None = None) -> list[R]:
        ray = self._ray
        refs = [self._unit.remote(fn, list(shared), item, 1) for item in items]
        index = {r.hex(): i for i, r in enumerate(refs)}
        results: list[Any] = [None] * len(refs)

        def finished() -> Iterator[Any]:
            remaining = list(refs)
            while remaining:
                done, remaining = ray.wait(remaining, num_returns=1)
                yield done[0]

        try:
            for ref in progress(label, finished(), len(refs)):
                i = index[ref.hex()]
                try:
                    results[i] = self._result(ref, label)
                except LostUnit as lost:
                    if on_lost is None:
                        raise QuantwiseError(lost.problem, lost.fix) from None
                    results[i] = on_lost(items[i], lost.problem)
        except BaseException:  # an error, or Ctrl-C: nothing of this sweep keeps running
            for ref in refs:  # first as an interrupt, so the units' own clean-up (temporary folders) runs
                ray.cancel(ref)
            _, stuck = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
            # only the units still running are killed: a forced cancel of a unit that has just ended
            # races with its completion inside Ray 2.60 and aborts this process ("Tried to complete
            # task that was not pending"), which made an interrupted run exit 1 instead of 130
            for ref in stuck:
                ray.cancel(ref, force=True)
            raise
        return results

    def _result(self, ref: Any, label: str) -> Any:
        ray = self._ray
        try:
            value, seconds, node = ray.get(ref)
            self.timings.append(UnitTime(label, seconds, node))
            return value
        except ray.exceptions.OutOfMemoryError:
            raise LostUnit(f"a Ray worker ran out of memory ({label or 'a task'})",
                           "run fewer workers per node (--workers, or 'ray start --num-cpus') or use nodes with more memory") from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as err:
            raise LostUnit(f"a Ray worker died {MAX_RETRIES + 1} times running one task ({label or 'a task'}): {first_line(err)}",
                           "check the nodes' memory and logs (/tmp/ray/session_latest/logs), then run again") from None
        except ray.exceptions.RayTaskError as err:
            cause = err.cause
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except ray.exceptions.RayError as err:  # lost objects, a dead raylet or owner: the cluster, not the unit
            raise QuantwiseError(f"Ray failed during {label or 'a task'}: {type(err).__name__}: {first_line(err)}",
                                 "check the cluster ('ray status', /tmp/ray/session_latest/logs), then run again") from None

    def close(self) -> None:
        self._ray.shutdown()


@contextlib.contextmanager
def _own_signals() -> Iterator[None]:
    """Keep this process's SIGTERM (and SIGINT) handling: Ray's driver installs its own SIGTERM
    handler, which exits at once, leaving no chance to cancel tasks or remove partial output."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def _check_nodes(ray: Any) -> list[dict[str, Any]]:
    """Every alive node with CPUs runs the probe; any version mismatch is refused before work starts."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from quantwise.versions import versions

    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
    if not nodes:
        raise QuantwiseError("the Ray cluster has no node with CPUs", "start workers with 'ray start --address HEAD:6379' on each machine")
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote() for n in nodes]
    here = versions()
    mine = {k: here.get(k, "not installed") for k in MATCHED}
    for node, ref in zip(nodes, refs):
        address = node.get("NodeManagerAddress", node["NodeID"][:8])
        try:
            found = ray.get(ref, timeout=120)
        except ray.exceptions.GetTimeoutError:
            raise QuantwiseError(f"Ray node {address} did not answer a probe within 2 minutes", "check that its raylet is running ('ray status')") from None
        except ray.exceptions.OutOfMemoryError:
            raise QuantwiseError(f"Ray node {address} is out of memory before any work (its memory monitor killed the version probe)",
                                 "free memory on that node, or start it with a higher RAY_memory_usage_threshold") from None
        except ray.exceptions.RayError as err:
            raise QuantwiseError(f"Ray node {address} cannot run quantwise ({first_line(err.cause if isinstance(err, ray.exceptions.RayTaskError) else err)})",
                                 f"install the same quantwise, torch and torchao on every node ({_pins(mine)})") from None
        differ = mismatch(found, mine)
        if differ:
            raise QuantwiseError(f"Ray node {address} has {differ}: its results would not match this machine's",
                                 f"install the same versions on every node ({_pins(mine)})")
        node["probe"] = found
    return nodes


def mismatch(found: dict[str, str], mine: dict[str, str]) -> str | None:
    """How a node's versions differ from this process's, or None."""
    differ = [f"{k} {found.get(k, 'not installed')} (here {mine.get(k, 'not installed')})" for k in MATCHED
              if found.get(k, "not installed") != mine.get(k, "not installed")]
    return ", ".join(differ) or None


def _pins(versions: dict[str, str]) -> str:
    return " ".join(f"{k}=={v}" for k, v in versions.items())
