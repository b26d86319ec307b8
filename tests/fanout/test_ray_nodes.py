"""A cluster of two Ray nodes, joined by address as a real one is (``--ray-address``): each node is
a raylet of its own with one CPU (``ray.cluster_utils.Cluster``, Ray's own multi-node test set-up, on
this machine). Every node is probed, the units spread over both nodes, and the figures equal the
in-process run's."""
from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from quantwise import api
from quantwise.config import DynamicInt8
from quantwise.fanout import ClusterOptions, InProcess, open_tasks
from quantwise.mixed.sensitivity import SensitivityOptions, analyse

pytest.importorskip("ray")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTWISE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def two_nodes():
    """A head node and a second node, one CPU each; this process joins them as a driver."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.mark.slow
def test_a_sweep_on_two_nodes_uses_both_and_equals_the_in_process_run(two_nodes):
    bundle = api.load_model("mnist-cnn", n_calibration=128, n_evaluation=500)
    opts = SensitivityOptions(top_k=3, controls=3, use_cache=False, confirm_alone=True)
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # as each task: a float reduction's order depends on the thread count
    try:
        here = analyse(bundle, DynamicInt8(), opts, InProcess())
        with open_tasks(ClusterOptions(address=two_nodes.address)) as tasks:
            assert "2 node(s), 2 CPU(s)" in tasks.description
            there = analyse(bundle, DynamicInt8(), opts, tasks)
            nodes = {t.node for t in tasks.timings}
    finally:
        torch.set_num_threads(old)

    def figures(report) -> dict:
        return {k: v for k, v in asdict(report).items() if k not in ("seconds", "ran", "cached")}

    assert figures(there) == figures(here)
    assert there.ran.startswith(f"Ray cluster at {two_nodes.address}: 2 node(s)")
    assert len(nodes) == 2, f"every unit ran on one node: {nodes}"  # both raylets took work
