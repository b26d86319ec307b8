"""Where a sweep's independent units of work run: in this process (the default), or as tasks on
a Ray cluster (``--workers N`` starts a local one, ``--ray-address`` joins an existing one).

The sweeps (``compare``, ``sensitivity``, ``auto``) keep their search logic and hand a ``Tasks`` the units
(one layer, one candidate recipe) to run; results come back as the values the in-process run
computes, in the order submitted. Ray is imported only when a cluster is asked for.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from quantwise.fanout.base import ClusterOptions, InProcess, Tasks, UnitTime, folder_files, in_order, write_files

__all__ = ["ClusterOptions", "InProcess", "Tasks", "UnitTime", "folder_files", "in_order", "open_tasks", "write_files"]


@contextlib.contextmanager
def open_tasks(options: ClusterOptions | None = None) -> Iterator[Tasks]:
    """The ``Tasks`` the options ask for, closed (a local Ray instance stopped) on the way out."""
    if options is None or options.in_process:
        yield InProcess()
        return
    from quantwise.fanout.ray_tasks import RayTasks

    tasks = RayTasks.connect(options)
    try:
        yield tasks
    finally:
        tasks.close()
