"""A real PostgreSQL server for the ``postgres`` backend's tests (see :mod:`skpg_cluster`).

One cluster serves the whole session (each test uses its own table); tests that restart or stop
a server start their own with ``pg_clusters``. The tests never skip when PostgreSQL is missing:
they fail with the command that installs it.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper import SessionManager
from sessionkeeper.testing import wait_for as kit_wait_for

# The cluster helper lives beside this file (the benchmark imports it too).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from skpg_cluster import ClusterError, PostgresCluster

#: How long a condition may take to come true (a deadline, not a timing assertion).
DEADLINE_S = 30.0


def _start(settings: tuple[str, ...] = ()) -> PostgresCluster:
    try:
        cluster = PostgresCluster(settings)
    except ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        return cluster.start()
    except ClusterError as exc:
        cluster.destroy()
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster shared by the session's tests (each test uses its own table)."""
    cluster = _start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_clusters() -> Iterator[Callable[..., PostgresCluster]]:
    """Start clusters of the test's own (``make(settings=(...))``); each is destroyed after."""
    started: list[PostgresCluster] = []

    def make(settings: tuple[str, ...] = ()) -> PostgresCluster:
        cluster = _start(settings)
        started.append(cluster)
        return cluster

    yield make
    for cluster in reversed(started):
        cluster.destroy()


@pytest.fixture
def table_name() -> str:
    """A table name no other test uses."""
    return f"t_{uuid.uuid4().hex[:20]}"


@pytest.fixture
def open_manager(
    pg_cluster: PostgresCluster, table_name: str
) -> Iterator[Callable[..., SessionManager]]:
    """``open_manager(cluster=pg_cluster, backend_opts={...}, **manager_kwargs)``: a manager
    on the test's table (no scheduled cleanup unless given); all closed after the test."""
    opened: list[SessionManager] = []

    def make(cluster: PostgresCluster = pg_cluster, **overrides: Any) -> SessionManager:
        backend_opts = {"dsn": cluster.dsn(), "table_name": table_name}
        backend_opts.update(overrides.pop("backend_opts", {}))
        kwargs: dict[str, Any] = {"cleanup_interval": 0, **overrides}
        manager = SessionManager(backend="postgres", backend_opts=backend_opts, **kwargs)
        opened.append(manager)
        return manager

    yield make
    for manager in reversed(opened):
        manager.close()


def wait_for(condition: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    """:func:`sessionkeeper.testing.wait_for` polling every 50 ms, where a condition that raises
    (the server not answering yet) counts as "not yet"."""
    return kit_wait_for(condition, what, deadline_s, interval_s=0.05, retry_on=(Exception,))


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """``wait_until(condition, what, deadline_s=30)``: poll until ``condition()`` is truthy."""
    return wait_for


def restart_after_use(cluster: PostgresCluster, manager: SessionManager, connections: int) -> None:
    """``connections`` concurrent ``count`` calls on ``manager`` (so that its pooled connections
    have served it and sit idle), then an immediate restart of ``cluster``: every pooled
    connection is dead, and the client does not know yet."""
    threads = [threading.Thread(target=manager.count) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cluster.restart(immediate=True)


@pytest.fixture
def restart_server() -> Callable[[PostgresCluster, SessionManager, int], None]:
    """``restart_server(cluster, manager, connections)``: see :func:`restart_after_use`."""
    return restart_after_use
