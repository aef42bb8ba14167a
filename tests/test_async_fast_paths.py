"""The async manager's inline ``fetch`` and ``store`` (issue 15): bound once when the manager
opens, as coroutines that call the sync manager's method with nothing around it. They must stay
that method: the same answers, the same errors, the stats counters, the closed state."""

from __future__ import annotations

import asyncio

import pytest

from sessionkeeper import (
    AsyncSessionManager,
    InvalidSession,
    ManagerClosed,
    SessionNotFound,
    VersionConflict,
)
from sessionkeeper.testing import ManualClock


class TestInlineFastPaths:
    def test_fetch_and_store_are_the_sync_methods_awaited(self) -> None:
        """On the memory backend (every operation inline) fetch and store answer as the sync
        manager does: a conditional store with a stale version conflicts, a bad if_version is
        invalid, an expired session is not found."""
        clock = ManualClock()

        async def main() -> None:
            async with AsyncSessionManager(cleanup_interval=0, clock=clock) as sessions:
                assert {"fetch", "store"} <= sessions.inline_operations
                session = await sessions.create(timeout_ms=10_000, metadata={"n": 1})
                stored = await sessions.store(session, if_version=session.version)
                assert stored.version == session.version + 1
                with pytest.raises(VersionConflict):
                    await sessions.store(session, if_version=session.version)
                with pytest.raises(InvalidSession, match="if_version"):
                    await sessions.store(session, if_version=-1)
                with pytest.raises(InvalidSession, match="store\\(\\) takes"):
                    await sessions.store("not a session")  # type: ignore[arg-type]
                assert (await sessions.fetch(session.id)).version == stored.version
                clock.advance(10_001)
                with pytest.raises(SessionNotFound):
                    await sessions.fetch(session.id)
                assert sessions.fetch.__doc__ == AsyncSessionManager.fetch.__doc__

        asyncio.run(main())

    def test_fetch_counts_hits_and_misses_when_stats_are_on(self) -> None:
        """With ``stats = true`` the inline fetch is the counting one: a hit and a miss are
        counted as they are by the sync manager."""

        async def main() -> dict[str, int]:
            async with AsyncSessionManager(cleanup_interval=0, stats=True) as sessions:
                assert "fetch" in sessions.inline_operations
                session = await sessions.create()
                await sessions.fetch(session.id)
                with pytest.raises(SessionNotFound):
                    await sessions.fetch("missing")
                counters: dict[str, int] = (await sessions.stats())["counters"]
                return counters

        counters = asyncio.run(main())
        assert (counters["hits"], counters["misses"]) == (1, 1)

    def test_after_aclose_fetch_and_store_raise_manager_closed(self) -> None:
        """The bound fast paths follow the manager's state: once it is closed, both raise
        ManagerClosed (never a stale answer from the closed store)."""

        async def main() -> None:
            sessions = AsyncSessionManager(cleanup_interval=0)
            session = await sessions.create()
            await sessions.aclose()
            with pytest.raises(ManagerClosed):
                await sessions.fetch(session.id)
            with pytest.raises(ManagerClosed):
                await sessions.store(session)

        asyncio.run(main())
