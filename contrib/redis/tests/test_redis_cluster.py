"""The ``redis`` backend on Redis Cluster, acknowledging each write only once a replica has it."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from sessionkeeper import SessionManager, StorageError
from sessionkeeper.testing import AsyncConformance, BackendConformance


class OnCluster:
    """The store of each test: a fresh table on the run's cluster, ``wait_replicas = 1``."""

    backend = "redis"

    @pytest.fixture(autouse=True)
    def _cluster(self, redis_cluster: Any) -> None:
        self.cluster = redis_cluster

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        return {
            "cluster": {"startup_nodes": self.cluster.startup_nodes},
            "table_name": f"conformance-{uuid.uuid4().hex}",
            "ttl_margin_ms": 3_600_000,
            "wait_replicas": 1,
        }


class TestRedisClusterConformance(OnCluster, BackendConformance):
    """Every shared semantic (DESIGN §3) on a Redis Cluster (one primary holding every slot and
    its replica), with ``wait_replicas = 1``: the scripts work because a table's keys (owner
    sets included) share one hash tag, and ``WAIT`` runs on the connection that wrote. The
    atomicity races run with threads and with separate processes."""

    many = 300

    def shared_store_config(self, backend_opts: Mapping[str, Any]) -> Mapping[str, Any] | None:
        # Another process opens the same table through the same cluster.
        return backend_opts

    def corrupt_stored_session(self, manager: SessionManager, session_id: str) -> None:
        key = manager.backend.session_key(session_id)
        with redis.Redis.from_url(self.cluster.primary.url) as client:
            assert client.set(key, b"\xc1 not a msgpack record", keepttl=True, xx=True)


class TestRedisClusterAsyncConformance(OnCluster, AsyncConformance):
    """The contract through AsyncSessionManager on the cluster, every operation awaited on
    ``redis.asyncio``'s cluster client, each write followed by ``WAIT`` on the node that wrote,
    with tasks racing."""


class TestClusterWait:
    def test_a_write_the_replica_did_not_acknowledge_is_refused(
        self, redis_cluster: Any, table_name: str
    ) -> None:
        """``WAIT`` runs on the connection that wrote: while the replica is stopped (SIGSTOP)
        a write (or a batch of ``store_many``) is refused with a ``StorageError`` naming the
        missing acknowledgement, and once it runs again writes are acknowledged."""
        opts = {
            "cluster": {"startup_nodes": redis_cluster.startup_nodes},
            "table_name": table_name,
            "wait_replicas": 1,
            "wait_timeout_ms": 100,
        }
        with SessionManager(backend="redis", backend_opts=opts, cleanup_interval=0) as manager:
            kept = manager.create(metadata={"n": 1})
            process = redis_cluster.replica.process
            process.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(StorageError, match="only 0 of the 1 replicas"):
                    manager.create(metadata={"n": 2})
                with pytest.raises(StorageError, match="2 writes are on the primary"):
                    manager.store_many([kept.replace(id="x1"), kept.replace(id="x2")])
            finally:
                process.send_signal(signal.SIGCONT)
            assert manager.peek(kept.id).metadata == {"n": 1}
            assert manager.delete(kept.id) is True


class TestClusterIdentity:
    def test_the_cluster_and_its_primary_reached_directly_are_one_store(
        self, redis_cluster: Any, table_name: str
    ) -> None:
        """A ``cluster`` config names the store by the run id of the primary serving the
        table's slot: listing the nodes in another order, or naming that primary with ``url``,
        gives the same identity; another table gives another (issue 12: no operation may
        mistake one store for two)."""
        nodes = redis_cluster.startup_nodes
        spellings = [
            {"cluster": {"startup_nodes": nodes}},
            {"cluster": {"startup_nodes": list(reversed(nodes))}},
            {"url": redis_cluster.primary.url},
        ]
        identities = set()
        for opts in spellings:
            with SessionManager(
                backend="redis", backend_opts={**opts, "table_name": table_name}, cleanup_interval=0
            ) as manager:
                identities.add(manager.identity())
        run_id = redis_cluster.primary.client().info("server")["run_id"]
        assert identities == {f"redis:run_id={run_id},db=0,table={table_name}"}
        with SessionManager(
            backend="redis",
            backend_opts={"cluster": {"startup_nodes": nodes}, "table_name": table_name + "x"},
            cleanup_interval=0,
        ) as manager:
            assert manager.identity() not in identities
