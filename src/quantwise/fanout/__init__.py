"""Where a sweep's independent units of work run: in this process (the default), or as tasks on
a Ray cluster (``--workers N`` starts a local one, ``--ray-address`` joins an existing one).

The sweeps (``sensitivity``, ``auto``) keep their search logic and hand a ``Tasks`` the units
(one layer, one candidate recipe) to run; results come back as the values the in-process run
computes, in the order submitted. Ray is imported only when a cluster is asked for.
"""
from quantwise.fanout.base import ClusterOptions, InProcess, Tasks, open_tasks

__all__ = ["ClusterOptions", "InProcess", "Tasks", "open_tasks"]
