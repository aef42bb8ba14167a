"""The ``postgres`` backend's native async path (``sessionkeeper_async_*`` on psycopg's async
pool) through :class:`~sessionkeeper.AsyncSessionManager`, against real PostgreSQL servers: the
kit's async conformance class, every operation native, tasks racing ``update``, server restarts
and outages between async calls, damaged rows."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sessionkeeper import AsyncSessionManager, Session, SessionNotFound, StorageError
from sessionkeeper.testing import AsyncConformance, ManualClock

START = 1_700_000_000_000
T = TypeVar("T")


class TestPostgresAsyncConformance(AsyncConformance):
    """The contract through the async manager, on the backend's own asyncio pool."""

    backend = "postgres"

    @pytest.fixture(autouse=True)
    def _server(self, pg_cluster: Any) -> None:
        self.cluster = pg_cluster

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        return {"dsn": self.cluster.dsn(), "table_name": f"aconf_{uuid.uuid4().hex[:24]}"}


def _run(
    cluster: Any,
    table_name: str,
    body: Callable[[AsyncSessionManager], Coroutine[Any, Any, T]],
    **opts: Any,
) -> T:
    """``body(manager)`` in a fresh loop, on an async manager of ``cluster``'s ``table_name``."""

    async def main() -> T:
        sessions = await AsyncSessionManager.open(
            "postgres",
            backend_opts={
                "dsn": cluster.dsn(),
                "table_name": table_name,
                "connect_timeout_ms": 2_000,
                **opts,
            },
            cleanup_interval=0,
            clock=ManualClock(START),
        )
        async with sessions:
            return await body(sessions)

    return asyncio.run(main())


def _session(session_id: str, **metadata: Any) -> Session:
    return Session(session_id, START, START, 60_000, metadata, owner="alice")


class TestNative:
    def test_every_operation_is_native(self, pg_cluster: Any, table_name: str) -> None:
        """Every operation that has a native path runs on the backend's asyncio pool: none is
        inline, none goes to a worker thread."""

        async def body(sessions: AsyncSessionManager) -> None:
            assert sessions.native_operations >= {
                "create", "store", "store_many", "fetch", "peek", "touch", "delete", "list",
                "count", "list_owner", "count_owner", "update", "take", "rotate",
                "delete_owner", "cleanup_expired",
            }  # fmt: skip
            assert not sessions.inline_operations

        _run(pg_cluster, table_name, body)

    def test_tasks_racing_update_count_exactly(self, pg_cluster: Any, table_name: str) -> None:
        """Two async managers (two pools of three connections) on one loop, 30 tasks each
        adding 1 five times to one session: the counter ends at exactly 300, the version at
        301."""

        async def body(first: AsyncSessionManager) -> None:
            await first.store(_session("counter", n=0))
            second = await AsyncSessionManager.open(
                "postgres",
                backend_opts={"dsn": pg_cluster.dsn(), "table_name": table_name},
                cleanup_interval=0,
                clock=ManualClock(START),
            )
            async with second:

                async def add(sessions: AsyncSessionManager) -> None:
                    for _ in range(5):
                        await sessions.update(
                            "counter", lambda md: {"n": md["n"] + 1}, attempts=10_000
                        )

                await asyncio.gather(*(add(m) for m in (first, second) for _ in range(30)))
            final = await first.peek("counter")
            assert final.metadata == {"n": 300}
            assert final.version == 301

        _run(pg_cluster, table_name, body, pool_max_size=3)

    def test_a_damaged_row_is_a_storage_error_and_take_keeps_its_bytes(
        self, pg_cluster: Any, table_name: str
    ) -> None:
        """A record that does not decode is a ``StorageError`` naming the table and the id on
        the async path too; an async ``take`` that removed it keeps its bytes in the
        quarantine table."""

        async def body(sessions: AsyncSessionManager) -> None:
            await sessions.store(_session("bad"))
            pg_cluster.sql(f"UPDATE {table_name} SET record = %s WHERE id = 'bad'", b"\xc1 garbage")
            with pytest.raises(StorageError, match=rf"'bad' in table public.{table_name}.*damaged"):
                await sessions.fetch("bad")
            with pytest.raises(StorageError, match="quarantine"):
                await sessions.take("bad")

        _run(pg_cluster, table_name, body)
        kept = pg_cluster.sql(f"SELECT record FROM {table_name}_quarantine WHERE id = 'bad'")
        assert kept == [(b"\xc1 garbage",)]


class TestServerRestarts:
    def test_a_restart_between_async_calls_is_invisible(
        self, pg_clusters: Callable[..., Any], table_name: str
    ) -> None:
        """After a server restart every pooled async connection is dead; the next calls all
        succeed: reads and idempotent writes are retried once, and the writes never sent twice
        (delete, take, conditional store, rotate, delete_owner) start on a connection checked
        to be alive."""
        cluster = pg_clusters()

        async def body(sessions: AsyncSessionManager) -> None:
            for n in range(4):
                await sessions.store(_session(f"s{n}", n=n))
            await asyncio.gather(*(sessions.list() for _ in range(3)))  # three connections
            calls: list[Callable[[], Coroutine[Any, Any, Any]]] = [
                lambda: sessions.fetch("s0"),
                lambda: sessions.delete("s1"),
                lambda: sessions.take("s2"),
                lambda: sessions.store(_session("s3", n=9), if_version=1),
                lambda: sessions.update("s0", lambda md: {"n": md["n"] + 1}),
                lambda: sessions.rotate("s0"),
                lambda: sessions.delete_owner("nobody"),
                lambda: sessions.count(),
            ]
            for call in calls:
                await asyncio.to_thread(cluster.restart, immediate=True)
                await call()
            assert sorted(await sessions.list(owner="alice")) != []
            assert await sessions.count() == 2  # s3 and the rotated s0

        _run(cluster, table_name, body, pool_min_size=3, pool_max_size=3)

    def test_calls_fail_clearly_while_down_and_work_again_after(
        self, pg_clusters: Callable[..., Any], table_name: str
    ) -> None:
        """With the server stopped, async calls raise a ``StorageError`` naming the backend
        and the server (never ``SessionNotFound``); once it is back the same manager works."""
        cluster = pg_clusters()

        async def body(sessions: AsyncSessionManager) -> None:
            await sessions.store(_session("before", n=1))
            await asyncio.to_thread(cluster.stop)
            for call in (
                lambda: sessions.fetch("before"),
                lambda: sessions.store(_session("during")),
                lambda: sessions.delete("before"),
                lambda: sessions.take("before"),
                lambda: sessions.update("before", dict),
                sessions.count,
            ):
                with pytest.raises(StorageError) as info:
                    await call()
                assert not isinstance(info.value, SessionNotFound)
                assert info.value.backend == "postgres"
                assert f"127.0.0.1:{cluster.port}" in str(info.value)
            await asyncio.to_thread(cluster.start)
            assert (await sessions.fetch("before")).metadata == {"n": 1}

        _run(cluster, table_name, body)


def test_the_pages_async_example_runs(pg_cluster: Any) -> None:
    """docs/postgres.md's async example, run as written against a real server: it creates an
    owned session and updates it natively (the table then holds it with ``n == 1``)."""
    page = Path(__file__).resolve().parents[3] / "docs" / "postgres.md"
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text(), re.M | re.S)
    (example,) = [block for block in blocks if "AsyncSessionManager.open(" in block]
    namespace: dict[str, Any] = {}
    exec(compile(example, f"{page}:async", "exec"), namespace)  # the page's own code
    asyncio.run(namespace["main"](pg_cluster.dsn()))
    assert pg_cluster.sql("SELECT owner, version FROM sessions") == [("user_456", 2)]
