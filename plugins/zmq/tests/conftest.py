"""Fixtures: in-process clusters of real nodes on 127.0.0.1 (free ports, CURVE keys)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper import SessionManager
from sessionkeeper.testing import ManualClock
from sessionkeeper_zmq import NodeSpec, ZmqOptions, write_key_pair
from sessionkeeper_zmq._node import Agent
from sessionkeeper_zmq._replica import HLC, Replica
from sessionkeeper_zmq.testing import cluster_opts, wait_ready


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with CURVE key pairs for nodes a..e and a stranger x."""
    directory = tmp_path_factory.mktemp("keys")
    for name in "abcdex":
        write_key_pair(directory, name)
    return directory


ClusterFactory = Callable[..., list[SessionManager]]


@pytest.fixture
def make_cluster(key_dir: Path) -> Iterator[ClusterFactory]:
    """Open an in-process cluster: ``make_cluster(size=3, clock=None, **backend_opts)``."""
    opened: list[SessionManager] = []

    def make(
        size: int = 3, *, clock: ManualClock | None = None, curve: bool = True, **overrides: Any
    ) -> list[SessionManager]:
        managers = []
        for opts in cluster_opts(key_dir, size, curve=curve, **overrides):
            manager = SessionManager(
                backend="zmq", backend_opts=opts, clock=clock, cleanup_interval=0
            )
            opened.append(manager)
            managers.append(manager)
        wait_ready(managers)
        return managers

    yield make
    for manager in reversed(opened):
        manager.close()


@pytest.fixture
def bare_agent() -> Iterator[Agent]:
    """The agent of node a in a cluster {a, b}, not started (no socket bound or connected):
    for tests that drive its bookkeeping by hand."""
    options = ZmqOptions(
        node_id="a",
        nodes=[
            NodeSpec(id="a", endpoint="tcp://127.0.0.1:1"),
            NodeSpec(id="b", endpoint="tcp://127.0.0.1:2"),
        ],
        curve=False,
    )
    replica = Replica("a", HLC(), tombstone_ttl_ms=60_000, backlog=10)
    agent = Agent(options, replica, public_key=None, secret_key=None)
    yield agent
    agent.stop()
