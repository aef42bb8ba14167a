"""The ``redis`` backend's native async path (issue 15): every operation of an
AsyncSessionManager is awaited on ``redis.asyncio`` (one client per manager, made on the running
loop, closed by ``aclose()``), with the same scripts, keys and errors as the sync path, against
a real ``redis-server``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from sessionkeeper import (
    AsyncSessionManager,
    Session,
    SessionManager,
    StorageError,
)
from sessionkeeper.backend import hookimpl
from sessionkeeper.testing import ManualClock

WORKER = Path(__file__).with_name("redis_worker.py")
T = TypeVar("T")

#: Every operation the async manager runs natively on redis.
NATIVE = frozenset(
    {
        "create", "store", "store_many", "fetch", "peek", "touch", "delete", "list", "count",
        "list_owner", "count_owner", "update", "take", "rotate", "delete_owner",
        "cleanup_expired",
    }
)  # fmt: skip


def _opts(server: Any, table_name: str) -> dict[str, Any]:
    return {"url": server.url, "table_name": table_name, "ttl_margin_ms": 3_600_000}


def _run(
    server: Any,
    table_name: str,
    body: Callable[[AsyncSessionManager], Awaitable[T]],
    **keywords: Any,
) -> T:
    """Open an AsyncSessionManager on ``table_name`` in a fresh loop, await ``body``, close."""

    async def main() -> T:
        sessions = await AsyncSessionManager.open(
            "redis", _opts(server, table_name), cleanup_interval=0, **keywords
        )
        async with sessions:
            return await body(sessions)

    return asyncio.run(main())


class Where:
    """A wrapper recording the thread of every fetch call, sync or async."""

    def __init__(self) -> None:
        self.threads: dict[str, set[int]] = {}

    def _note(self, hook: str) -> None:
        self.threads.setdefault(hook, set()).add(threading.get_ident())

    @hookimpl(wrapper=True)
    def sessionkeeper_fetch(self) -> Generator[None, Any, Any]:
        self._note("sessionkeeper_fetch")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_async_fetch(self) -> Generator[None, Any, Any]:
        self._note("sessionkeeper_async_fetch")
        return (yield)


class TestNativePath:
    def test_every_operation_is_native_and_no_thread_is_used(
        self, redis_server: Any, table_name: str
    ) -> None:
        """Every operation of the manager is awaited on redis.asyncio: native_operations lists
        them all, the async fetch hook runs on the loop's thread, and no worker thread pool is
        ever started."""
        where = Where()

        async def body(sessions: AsyncSessionManager) -> int:
            assert sessions.native_operations >= NATIVE
            session = await sessions.create(metadata={"n": 1})
            assert (await sessions.fetch(session.id)).metadata == {"n": 1}
            assert sessions._executor is None
            return threading.get_ident()

        loop_thread = _run(redis_server, table_name, body, plugins=[where])
        assert where.threads == {"sessionkeeper_async_fetch": {loop_thread}}

    def test_one_client_per_manager_made_on_the_loop_and_closed_by_aclose(
        self, redis_server: Any, table_name: str
    ) -> None:
        """The backend makes one redis.asyncio client on the first async call, reuses it for
        every call of that loop, and aclose() closes it: the server sees its connection go."""
        raw = redis.Redis.from_url(redis_server.url)

        def names() -> list[str]:
            return [c.get("name", "") for c in raw.client_list()]

        async def main() -> None:
            sessions = await AsyncSessionManager.open(
                "redis", _opts(redis_server, table_name), cleanup_interval=0
            )
            backend = sessions.sync.backend
            assert backend._aclient is None  # nothing made before the first async call
            await sessions.create()
            client = backend._aclient
            assert client is not None
            for _ in range(5):
                await sessions.count()
            assert backend._aclient is client
            await client.client_setname("sk-async-test")
            assert "sk-async-test" in names()
            await sessions.aclose()
            assert backend._aclient is None
            assert "sk-async-test" not in names()

        try:
            asyncio.run(main())
        finally:
            raw.close()

    def test_sync_and_async_paths_share_the_store(self, redis_server: Any, table_name: str) -> None:
        """What the async path writes the sync manager reads exactly, and the other way round
        (same keys, same record encoding, same versions)."""
        clock = ManualClock()
        with SessionManager(
            "redis", _opts(redis_server, table_name), cleanup_interval=0, clock=clock
        ) as sync:
            written = sync.create(owner="o", metadata={"from": "sync"})

            async def body(sessions: AsyncSessionManager) -> Session:
                assert await sessions.peek(written.id) == written
                updated = await sessions.update(written.id, lambda md: {**md, "by": "async"})
                assert await sessions.list(owner="o") == [written.id]
                return updated

            updated = _run(redis_server, table_name, body, clock=clock)
            assert sync.peek(written.id) == updated
            assert updated.version == 2


class TestFailures:
    def test_a_server_restart_between_calls_is_invisible(
        self, redis_servers: Any, table_name: str
    ) -> None:
        """The server restarts (SIGKILL, then started again on the same port) between two
        calls of one manager: the next calls reconnect, reload the scripts the new server
        lacks, and work (the data went with the server: it kept none)."""
        server = redis_servers()

        async def main() -> None:
            sessions = await AsyncSessionManager.open(
                "redis", _opts(server, table_name), cleanup_interval=0
            )
            async with sessions:
                first = await sessions.create(metadata={"n": 0})
                await sessions.update(first.id, lambda md: {"n": 1})
                server.stop(kill=True)
                server.start()
                second = await sessions.create(metadata={"n": 0})
                updated = await sessions.update(second.id, lambda md: {"n": md["n"] + 1})
                assert updated.metadata == {"n": 1}
                assert await sessions.list() == [second.id]

        asyncio.run(main())

    def test_a_server_that_is_gone_is_a_storage_error_as_on_the_sync_path(
        self, redis_servers: Any, table_name: str
    ) -> None:
        """With the server stopped, fetch, count and update raise StorageError worded as the
        sync path words it: the backend, the operation, the server, the table and the
        client's ConnectionError (never "not found")."""
        server = redis_servers()
        opts = {**_opts(server, table_name), "retries": 0, "connect_timeout_ms": 500}
        operations = ("fetch", "count", "update")
        prefix = {
            name: f"redis backend: {name} failed on redis at {server.address} "
            f"(table {table_name!r}): ConnectionError: "
            for name in operations
        }
        prefix["update"] = prefix["fetch"]  # its read fails: the backend names its fetch

        def call(manager: Any, name: str) -> Any:
            if name == "update":
                return manager.update("some-id", lambda md: md)
            return manager.fetch("some-id") if name == "fetch" else manager.count()

        async def main() -> None:
            sessions = await AsyncSessionManager.open("redis", opts, cleanup_interval=0)
            with SessionManager("redis", opts, cleanup_interval=0) as sync:
                async with sessions:
                    await sessions.count()  # the async client is connected
                    server.stop(kill=True)
                    for name in operations:
                        with pytest.raises(StorageError) as info:
                            await call(sessions, name)
                        assert str(info.value).startswith(prefix[name]), str(info.value)
                        with pytest.raises(StorageError) as info:
                            call(sync, name)
                        assert str(info.value).startswith(prefix[name]), str(info.value)
                    server.start()  # so that both close cleanly

        asyncio.run(main())


class TestUnansweredServer:
    """A server that is alive but does not answer (SIGSTOP: its kernel still accepts every
    byte, so no socket error ever comes) bounds every awaited operation at
    ``socket_timeout_ms``; the client itself has no socket timeout (see _deadline)."""

    @staticmethod
    def _stopped(server: Any) -> Any:
        """A context manager: ``server`` stopped with SIGSTOP inside, continued after."""

        @contextlib.contextmanager
        def stopped() -> Generator[None, None, None]:
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)
            try:
                yield
            finally:
                server.process.send_signal(signal.SIGCONT)

        return stopped()

    def test_a_stopped_server_is_a_storage_error_for_each_task_then_work_resumes(
        self, redis_servers: Any, table_name: str
    ) -> None:
        """With the server stopped, a fetch, a store and 20 tasks fetching at once each raise
        StorageError naming the operation, the server and the socket timeout (never a hang:
        the 60 s below is a safety net, not a measurement); once it is continued, the same
        manager reads and writes again."""
        server = redis_servers()
        opts = {**_opts(server, table_name), "socket_timeout_ms": 200, "retries": 0}
        expected = "no reply within socket_timeout_ms (200 ms)"

        async def main() -> None:
            sessions = await AsyncSessionManager.open("redis", opts, cleanup_interval=0)
            async with sessions:
                session = await sessions.create(metadata={"n": 0})
                with self._stopped(server):
                    with pytest.raises(StorageError, match="fetch failed on") as info:
                        await asyncio.wait_for(sessions.fetch(session.id), 60)
                    assert expected in str(info.value)
                    with pytest.raises(StorageError, match="store failed on") as info:
                        await asyncio.wait_for(sessions.store(session), 60)
                    assert expected in str(info.value)
                    many = [sessions.fetch(session.id) for _ in range(20)]
                    failed = await asyncio.wait_for(
                        asyncio.gather(*many, return_exceptions=True), 60
                    )
                    assert [type(error) for error in failed] == [StorageError] * 20
                    assert all(expected in str(error) for error in failed)
                assert (await sessions.fetch(session.id)) == session
                stored = await sessions.store(session.replace(metadata={"n": 1}))
                assert stored.version == 2
                assert (await sessions.peek(session.id)) == stored

        asyncio.run(main())

    def test_the_callers_own_cancellation_is_never_taken_for_a_timeout(
        self, redis_servers: Any, table_name: str
    ) -> None:
        """The caller's asyncio.timeout, shorter than socket_timeout_ms, cancels a fetch
        awaiting a stopped server: the caller gets its own TimeoutError (not a StorageError,
        and the cancellation is not swallowed), and the manager works once the server
        answers again."""
        server = redis_servers()
        opts = {**_opts(server, table_name), "socket_timeout_ms": 30_000, "retries": 0}

        async def main() -> None:
            sessions = await AsyncSessionManager.open("redis", opts, cleanup_interval=0)
            async with sessions:
                session = await sessions.create()
                with self._stopped(server):
                    with pytest.raises(TimeoutError) as info:
                        async with asyncio.timeout(0.2):
                            await sessions.fetch(session.id)
                    assert not isinstance(info.value, StorageError)
                    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
                assert (await sessions.fetch(session.id)) == session

        asyncio.run(main())


class TestRaces:
    """Tasks of one loop racing update: test_redis_conformance's TestRedisAsyncConformance (50
    tasks); here, processes too."""

    def test_more_tasks_at_once_than_redis_asyncio_default_pool_all_succeed(
        self, redis_server: Any, table_name: str
    ) -> None:
        """300 tasks fetch and touch at the same moment (redis.asyncio's default pool holds
        100 connections and fails the 101st task with MaxConnectionsError): every one gets its
        session."""

        async def body(sessions: AsyncSessionManager) -> list[str]:
            created = [await sessions.create() for _ in range(300)]
            fetched = await asyncio.gather(*(sessions.touch(s.id) for s in created))
            assert [s.id for s in fetched] == [s.id for s in created]
            return [s.id for s in fetched]

        assert len(_run(redis_server, table_name, body)) == 300

    @pytest.mark.sessionkeeper_slow
    def test_two_processes_of_racing_tasks_and_this_one_lose_nothing(
        self, redis_server: Any, table_name: str
    ) -> None:
        """Two child processes, each 20 tasks x 25 updates on the native path, race 20 tasks x
        25 updates of this process on one session: exactly +1500."""
        with SessionManager("redis", _opts(redis_server, table_name), cleanup_interval=0) as sync:
            created = sync.create(timeout_ms=None, metadata={"n": 0})
            args = ["aupdate", redis_server.url, table_name, created.id, "20", "25"]
            children = [
                subprocess.Popen(
                    [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, text=True
                )
                for _ in range(2)
            ]

            async def body(sessions: AsyncSessionManager) -> None:
                async def worker() -> None:
                    for _ in range(25):
                        await sessions.update(
                            created.id, lambda md: {"n": md["n"] + 1}, attempts=10_000
                        )

                await asyncio.gather(*(worker() for _ in range(20)))

            _run(redis_server, table_name, body)
            done = [json.loads(child.communicate(timeout=300)[0]) for child in children]
            assert done == [500, 500]
            assert [child.returncode for child in children] == [0, 0]
            final = sync.peek(created.id)
        assert final.metadata == {"n": 1500}
        assert final.version == 1501
