"""FastMCP session state under concurrency (issue 12 item 14): every key a session wrote is
purged with it, however many puts ran at once, on the stores several workers share."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from sessionkeeper import Config, Session
from sessionkeeper_mcp import McpStores, SessionRecord, SessionStateStore

RECORD = SessionRecord({"protocolVersion": "2025-11-25"}, "2025-11-25", None).to_metadata()

PUTS = 30


@pytest.fixture(params=["sqlitedict", "redis"])
def shared_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """A config of a backend whose operations run in worker threads (real interleaving); the
    test opens and closes its stores on its own event loop (the redis backend's asyncio client
    belongs to the loop that first used it)."""
    table = "r" + uuid.uuid4().hex[:10]
    opts: dict[str, Any]
    if request.param == "sqlitedict":
        pytest.importorskip("sessionkeeper_sqlitedict")
        opts = {"file_path": str(tmp_path / "state.sqlite"), "table_name": table}
    else:
        opts = {"url": request.getfixturevalue("redis_url"), "table_name": table}
    return Config.from_mapping(
        {"backend": request.param, "backend_opts": opts, "cleanup_interval": 0}
    )


class TestConcurrentPuts:
    """Concurrent ``put``s of one session's keys, then ``purge`` (issue 12 item 14)."""

    def test_purge_after_concurrent_puts_leaves_nothing(self, shared_config: Config) -> None:
        """30 puts of distinct keys of one session at once, then purge: every key is gone and
        the state table is empty (before the fix the unlocked index update lost most keys)."""

        async def body() -> None:
            async with McpStores.from_settings(shared_config) as shared_stores:
                await puts_then_purge(shared_stores)

        async def puts_then_purge(shared_stores: McpStores) -> None:
            kv = SessionStateStore(shared_stores)
            sid = uuid.uuid4().hex
            now = shared_stores.sessions.sync.clock()
            await shared_stores.sessions.store(Session(sid, now, now, 60_000, RECORD))

            async def put(n: int) -> None:
                await kv.put(f"{sid}:k{n}", {"n": n}, collection="fastmcp_state", ttl=3600)

            async with anyio.create_task_group() as group:
                for n in range(PUTS):
                    group.start_soon(put, n)
            got = [await kv.get(f"{sid}:k{n}", collection="fastmcp_state") for n in range(PUTS)]
            assert got == [{"n": n} for n in range(PUTS)]
            assert await kv.purge(sid) == PUTS
            assert await shared_stores.state.list() == []
            assert [await kv.get(f"{sid}:k{n}", collection="fastmcp_state") for n in range(3)] == [
                None
            ] * 3

        anyio.run(body)


class TestPurgeFallbacks:
    """What the purge does where ``delete_owner`` is missing, and with an older release's
    index."""

    def test_zmq_purges_by_listing_the_owner(self, tmp_path: Path) -> None:
        """On a backend without ``atomic`` (a one-node zmq cluster) ``delete_owner`` is
        Unsupported; the purge lists the session's keys by owner and deletes each, leaving
        the other session's keys alone."""
        testing = pytest.importorskip("sessionkeeper_zmq.testing")
        from sessionkeeper import Unsupported

        opts = testing.cluster_opts(tmp_path, 1, curve=False)[0]
        stores = McpStores.from_settings(
            Config.from_mapping({"backend": "zmq", "backend_opts": opts, "cleanup_interval": 0})
        )

        async def body() -> None:
            async with stores:
                kv = SessionStateStore(stores, check_session=False)
                mine, other = uuid.uuid4().hex, uuid.uuid4().hex
                now = stores.sessions.sync.clock()
                for sid in (mine, other):
                    await stores.sessions.store(Session(sid, now, now, 60_000, RECORD))
                for n in range(3):
                    await kv.put(f"{mine}:k{n}", {"n": n})
                await kv.put(f"{other}:k", {"n": 9})
                with pytest.raises(Unsupported):
                    await stores.state.delete_owner("mcp-state:" + mine)
                assert await kv.purge(mine) == 3
                assert [await kv.get(f"{mine}:k{n}") for n in range(3)] == [None] * 3
                assert await kv.get(f"{other}:k") == {"n": 9}

        anyio.run(body)

    def test_index_of_an_earlier_release_is_purged(self) -> None:
        """A key written by the release that kept a per-session index record (no owner) is
        removed by the purge through that index, and so is the index."""
        from sessionkeeper_mcp._state import _digest

        stores = McpStores.memory("l" + uuid.uuid4().hex[:10])

        async def body() -> None:
            async with stores:
                kv = SessionStateStore(stores, check_session=False)
                sid = uuid.uuid4().hex
                digest = _digest("c", f"{sid}:old")
                now = stores.state.sync.clock()
                await stores.sessions.store(Session(sid, now, now, 60_000, RECORD))
                old = {"c": "c", "k": f"{sid}:old", "v": {"n": 1}}
                await stores.state.store(Session("s." + digest, now, now, None, old))
                await stores.state.store(Session("s." + sid, now, now, None, {"keys": [digest]}))
                await kv.put(f"{sid}:new", {"n": 2}, collection="c")
                assert await kv.purge(sid) == 2
                assert await stores.state.list() == []

        anyio.run(body)
