"""Fault injection for the ``zmq`` backend: node subprocesses, TCP fault proxies, a checker.

Used by ``plugins/zmq/tests/test_chaos.py`` (short scenarios in the default suite; long ones
with ``SESSIONKEEPER_CHAOS_SECONDS`` set, as ``nox -s chaos`` does)::

    with ChaosCluster(tmp_path).start() as cluster:
        with Load(cluster):
            cluster.kill("c")
            ...
        cluster.heal_all()
        assert check(cluster.history, cluster.wait_converged()) == []

Test tooling, not part of the backend: nothing here is imported by a node that serves an
application.
"""

from __future__ import annotations

from .checker import check, final_state, winners_are_the_largest_versions
from .harness import ChaosCluster, History, Load, NodeProcess, Op
from .proxy import LinkProxy, ProxyHub

__all__ = [
    "ChaosCluster",
    "History",
    "LinkProxy",
    "Load",
    "NodeProcess",
    "Op",
    "ProxyHub",
    "check",
    "final_state",
    "winners_are_the_largest_versions",
]
