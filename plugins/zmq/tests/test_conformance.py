"""The conformance kit on one node, and on a 3-node cluster where each operation goes to the
next node in turn."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sessionkeeper import SessionManager
from sessionkeeper.testing import BackendConformance, ManualClock
from sessionkeeper.testing._stateful import run_backend_state_machine
from sessionkeeper_zmq.testing import cluster_opts, wait_ready


class TestSingleNodeConformance(BackendConformance):
    """Every shared semantic (DESIGN §3) on a cluster of one node (CURVE on)."""

    backend = "zmq"

    @pytest.fixture(autouse=True)
    def _keys(self, key_dir: Path) -> None:
        self.key_dir = key_dir

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        return cluster_opts(self.key_dir, 1)[0]


class RoundRobin:
    """A stand-in for a SessionManager that sends each operation to the next node of a cluster.

    Writes are acknowledged by every node (``ack = touch_ack = "all"``), so whichever node the
    next operation reaches holds them. ``cleanup_expired`` runs on every node (each node of a
    deployment runs its own cleanup scheduler) and checks that they all purged the same number.
    With ``sticky``, each thread keeps to one node (what an application process sees).
    """

    def __init__(self, managers: list[SessionManager]) -> None:
        self.managers = managers
        self._turn = itertools.count()
        self._local = threading.local()
        self.sticky = False

    def _pick(self) -> SessionManager:
        if self.sticky:
            manager: SessionManager | None = getattr(self._local, "manager", None)
            if manager is None:
                manager = self._local.manager = self.managers[next(self._turn) % len(self.managers)]
            return manager
        return self.managers[next(self._turn) % len(self.managers)]

    def __getattr__(self, name: str) -> Any:
        if name in {"config", "capabilities", "backend_name", "clock"}:
            return getattr(self.managers[0], name)
        if name in {
            "create",
            "store",
            "store_many",
            "update",
            "take",
            "rotate",
            "delete_owner",
            "fetch",
            "peek",
            "touch",
            "delete",
            "list",
            "count",
            "iter_sessions",
            "stats",
            "plugin_manager",
        }:
            return getattr(self._pick(), name)
        raise AttributeError(name)

    def identity(self) -> str | None:
        """The cluster's identity, which every node must report alike."""
        identities = {manager.identity() for manager in self.managers}
        assert len(identities) == 1, f"the nodes name different stores: {identities}"
        return identities.pop()

    def cleanup_expired(self) -> int:
        counts = [manager.cleanup_expired() for manager in self.managers]
        assert len(set(counts)) == 1, f"the nodes purged different numbers: {counts}"
        return counts[0]

    @property
    def closed(self) -> bool:
        return all(manager.closed for manager in self.managers)

    def close(self) -> None:
        for manager in self.managers:
            manager.close()


def open_cluster(key_dir: Path, clock: ManualClock, **kwargs: Any) -> RoundRobin:
    """A fresh 3-node cluster behind a :class:`RoundRobin`."""
    managers = []
    for opts in cluster_opts(key_dir, 3, ack="all", touch_ack="all"):
        arguments: dict[str, Any] = {"backend": "zmq", "backend_opts": opts, "clock": clock}
        arguments.update({"cleanup_interval": 0, **kwargs})
        managers.append(SessionManager(**arguments))
    wait_ready(managers)
    return RoundRobin(managers)


class TestClusterConformance(BackendConformance):
    """Every shared semantic on a 3-node cluster; each operation goes to the next node."""

    backend = "zmq"
    stateful_settings: ClassVar[Mapping[str, Any]] = {
        "max_examples": 12,
        "stateful_step_count": 25,
        "deadline": None,
    }

    @pytest.fixture(autouse=True)
    def _keys(self, key_dir: Path) -> None:
        self.key_dir = key_dir

    @pytest.fixture
    def make_manager(self, clock: ManualClock) -> Iterator[Any]:
        opened: list[RoundRobin] = []

        def make(**overrides: Any) -> RoundRobin:
            overrides.pop("backend_opts", None)
            if overrides.get("read_only") and opened:
                # What the CLI opens: a reader on each node's configuration of the running
                # cluster, through its admin socket.
                readers = [
                    SessionManager(
                        backend="zmq",
                        backend_opts=manager.config.backend_opts,
                        clock=clock,
                        **overrides,
                    )
                    for manager in opened[-1].managers
                ]
                opened.append(RoundRobin(readers))
                return opened[-1]
            cluster = open_cluster(self.key_dir, clock, **overrides)
            opened.append(cluster)
            return cluster

        yield make
        for cluster in opened:
            cluster.close()

    def test_concurrent_fetches_never_resurrect_a_deleted_session(
        self, manager: Any, clock: ManualClock
    ) -> None:
        """Replicas are not linearizable: a thread may read the delete on one node before
        another node has applied it. What a node guarantees is that once *it* has shown the
        delete, it never shows the session again: so each thread keeps to one node here."""
        manager.sticky = True
        super().test_concurrent_fetches_never_resurrect_a_deleted_session(manager, clock)

    def test_matches_a_dict_model(self, tmp_path: Path) -> None:
        """Random operations spread over a 3-node cluster agree with a dict model."""

        def open_manager(clock: ManualClock) -> SessionManager:
            cluster: Any = open_cluster(self.key_dir, clock)
            return cluster  # type: ignore[no-any-return]

        run_backend_state_machine(open_manager, self.stateful_settings)
