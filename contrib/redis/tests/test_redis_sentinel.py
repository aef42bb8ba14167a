"""The ``redis`` backend through Redis Sentinel: a primary killed during writes fails over to its
replica, and no write acknowledged with ``wait_replicas = 1`` is lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sessionkeeper import AsyncSessionManager, SessionManager, StorageError

SERVICE = "mymaster"
#: How long the test waits for Sentinel to promote the replica (a deadline, not a timing check).
FAILOVER_DEADLINE_S = 60.0


def _sentinel_lines(primary_port: int) -> list[str]:
    return [
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1",
        f"sentinel down-after-milliseconds {SERVICE} 1000",
        f"sentinel failover-timeout {SERVICE} 5000",
        f"sentinel parallel-syncs {SERVICE} 1",
    ]


class TestSentinelFailover:
    def test_failover_during_writes_loses_no_acknowledged_session(
        self, redis_servers: Any, table_name: str, wait_until: Any
    ) -> None:
        """One primary, one replica, one Sentinel. Writes with ``wait_replicas = 1`` run while
        the primary is SIGKILLed. During the failover writes fail with ``StorageError``; once
        the replica is promoted, every acknowledged session is there and readable, writes reach
        the new primary but are refused as unreplicated until a replica rejoins, and then they
        are acknowledged again."""
        no_delay = ["--repl-diskless-sync-delay", "0"]
        primary = redis_servers(no_delay)
        replica = redis_servers([*no_delay, "--replicaof", "127.0.0.1", str(primary.port)])
        wait_until(primary.replica_acknowledges, "the replica acknowledging writes")
        sentinel = redis_servers(sentinel_config=_sentinel_lines(primary.port))
        raw_sentinel = sentinel.client()
        wait_until(
            lambda: any(
                not {"s_down", "o_down", "disconnected"} & set(r["flags"].split(","))
                for r in raw_sentinel.sentinel_slaves(SERVICE)
            ),
            "Sentinel discovering the replica",
        )
        opts = {
            "sentinel": {"hosts": [sentinel.address], "service_name": SERVICE},
            "table_name": table_name,
            "wait_replicas": 1,
            "wait_timeout_ms": 300,
            "retries": 1,
            "connect_timeout_ms": 300,
            "socket_timeout_ms": 2_000,
        }
        acknowledged: dict[str, int] = {}
        refusals: list[str] = []
        with SessionManager(backend="redis", backend_opts=opts, cleanup_interval=0) as manager:

            def write(n: int) -> bool:
                try:
                    session = manager.create(timeout_ms=600_000, metadata={"n": n})
                except StorageError as exc:
                    refusals.append(str(exc))
                    return False
                acknowledged[session.id] = n
                return True

            for n in range(30):
                assert write(n), refusals
            assert manager.stats()["backend_stats"]["server"].startswith("redis sentinel")

            primary.stop(kill=True)
            promoted = f"127.0.0.1:{replica.port}"

            first = next(iter(acknowledged))

            def failed_over() -> bool:
                write(len(acknowledged) + len(refusals))
                host, port = raw_sentinel.sentinel_get_master_addr_by_name(SERVICE)
                if f"{host.decode()}:{port}" != promoted:
                    return False
                try:  # Sentinel may need a moment before it vouches for the new primary
                    return manager.peek(first).id == first
                except StorageError:
                    return False

            wait_until(failed_over, "Sentinel promoting the replica", FAILOVER_DEADLINE_S)
            assert refusals, "writes went on while the primary was dead"

            # Every acknowledged session is on the promoted replica, readable through Sentinel.
            for session_id, n in acknowledged.items():
                assert manager.peek(session_id).metadata == {"n": n}

            # The new primary has no replica yet: writes land there but are not acknowledged.
            before = len(refusals)
            wait_until(lambda: not write(-1), "a write refused for want of a replica")
            assert "only 0 of the 1 replicas" in refusals[-1]
            assert len(refusals) > before

            # The old primary comes back as a replica of the new one: writes are acknowledged.
            primary.start()
            primary.client().replicaof("127.0.0.1", replica.port)
            wait_until(replica.replica_acknowledges, "the old primary acknowledging as a replica")
            for n in range(10_001, 10_011):
                assert write(n), refusals[-1]

            raw_rejoined = primary.client()
            for session_id, n in acknowledged.items():
                assert manager.peek(session_id).metadata == {"n": n}
                if n >= 10_001:
                    assert raw_rejoined.exists(f"{{{table_name}}}:s:{session_id}") == 1
        assert len(acknowledged) >= 40

    def test_through_sentinel_the_store_is_the_primary_s(
        self, redis_servers: Any, table_name: str, wait_until: Any
    ) -> None:
        """A ``sentinel`` config names the store by the run id of the primary the Sentinels
        monitor, so it and a ``url`` config naming that primary have one identity (issue 12:
        ``migrate`` must not take them for two stores)."""
        primary = redis_servers()
        sentinel = redis_servers(sentinel_config=_sentinel_lines(primary.port))
        raw_sentinel = sentinel.client()
        wait_until(
            lambda: raw_sentinel.sentinel_get_master_addr_by_name(SERVICE),
            "Sentinel naming the primary",
        )
        identities = set()
        for opts in (
            {"sentinel": {"hosts": [sentinel.address], "service_name": SERVICE}, "db": 0},
            {"sentinel": {"hosts": [sentinel.address], "service_name": SERVICE}},
            {"url": f"redis://localhost:{primary.port}"},
        ):
            with SessionManager(
                backend="redis", backend_opts={**opts, "table_name": table_name}, cleanup_interval=0
            ) as manager:
                identities.add(manager.identity())
        run_id = primary.client().info("server")["run_id"]
        assert identities == {f"redis:run_id={run_id},db=0,table={table_name}"}

    def test_no_reachable_sentinel_is_a_storage_error(self, unused_port: int) -> None:
        """A Sentinel list where nothing answers makes opening fail with a ``StorageError``
        naming the service and the Sentinels."""
        opts = {
            "sentinel": {"hosts": [f"127.0.0.1:{unused_port}"], "service_name": SERVICE},
            "retries": 0,
            "connect_timeout_ms": 300,
        }
        with pytest.raises(StorageError, match=f"sentinels 127.0.0.1:{unused_port}"):
            SessionManager(backend="redis", backend_opts=opts, cleanup_interval=0)


class TestSentinelAsync:
    def test_the_async_path_finds_the_primary_through_sentinel(
        self, redis_servers: Any, table_name: str
    ) -> None:
        """Through Sentinel, every operation is awaited on redis.asyncio's Sentinel client: 20
        tasks racing update leave an exact count, and aclose() closes the client and its
        Sentinel connections (the sync client then closes too)."""
        primary = redis_servers()
        sentinel = redis_servers(sentinel_config=_sentinel_lines(primary.port))
        opts = {
            "sentinel": {"hosts": [sentinel.address], "service_name": SERVICE},
            "table_name": table_name,
        }

        async def main() -> tuple[int, int]:
            sessions = await AsyncSessionManager.open("redis", opts, cleanup_interval=0)
            async with sessions:
                assert {"fetch", "update", "take"} <= sessions.native_operations
                created = await sessions.create(metadata={"n": 0})

                async def worker() -> None:
                    for _ in range(5):
                        await sessions.update(
                            created.id, lambda md: {"n": md["n"] + 1}, attempts=10_000
                        )

                await asyncio.gather(*(worker() for _ in range(20)))
                final = await sessions.fetch(created.id)
                assert sessions.sync.backend._asentinel is not None
            assert sessions.sync.backend._asentinel is None
            return final.metadata["n"], final.version

        assert asyncio.run(main()) == (100, 101)
