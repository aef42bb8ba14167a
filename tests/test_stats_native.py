"""``stats = true`` counts an operation the same on every path (issue 15): the sync manager's
hooks, and the ``sessionkeeper_async_*`` hooks an ``AsyncSessionManager`` awaits natively (the
stats plugin wraps those too, replacing the awaitable with one it times).

The backend is tests/fixtures/async_backend's ``test-async``: the memory backend with an
``async_`` twin of every operation hook, so every operation of the async manager is native.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sessionkeeper import AsyncSessionManager, SessionManager, SessionNotFound, StorageError
from sessionkeeper.testing import ManualClock

from .test_async_native import async_backends

__all__ = ["async_backends"]  # the fixture, imported for the tests below

#: What each operation's result counts, once the script below has run.
EXPECTED_COUNTERS = {
    "hits": 2,
    "misses": 1,
    "created": 4,
    "stored": 4 + 1 + 2 + 1,  # creates, a store, a batch of two, an update
    "deleted": 1 + 1 + 1,  # a delete, a take, delete_owner's one
    "expired": 1,
}


def _bump(metadata: dict[str, Any]) -> dict[str, Any]:
    return {"n": metadata.get("n", 0) + 1}


def _sync_script(sessions: SessionManager, clock: ManualClock) -> None:
    a, b, c = (sessions.create(timeout_ms=1_000) for _ in range(3))
    owned = sessions.create(owner="u")
    sessions.fetch(a.id)
    sessions.fetch(b.id)
    with pytest.raises(SessionNotFound):
        sessions.fetch("absent")
    sessions.store(a)
    sessions.store_many([b, c])
    sessions.update(a.id, _bump)
    sessions.delete(b.id)
    sessions.take(c.id)
    sessions.delete_owner("u")
    assert sessions.list(owner=owned.owner) == []
    clock.advance(2_000)
    assert sessions.cleanup_expired() == 1  # a


async def _async_script(sessions: AsyncSessionManager, clock: ManualClock) -> None:
    a, b, c = [await sessions.create(timeout_ms=1_000) for _ in range(3)]
    owned = await sessions.create(owner="u")
    await sessions.fetch(a.id)
    await sessions.fetch(b.id)
    with pytest.raises(SessionNotFound):
        await sessions.fetch("absent")
    await sessions.store(a)
    await sessions.store_many([b, c])
    await sessions.update(a.id, _bump)
    await sessions.delete(b.id)
    await sessions.take(c.id)
    await sessions.delete_owner("u")
    assert await sessions.list(owner=owned.owner) == []
    clock.advance(2_000)
    assert await sessions.cleanup_expired() == 1


def _calls(counters: dict[str, Any]) -> dict[str, int]:
    return {op: figures["calls"] for op, figures in counters["operations"].items()}


def test_native_operations_count_as_the_sync_ones(async_backends: None) -> None:
    """The same operations through the sync manager and through the async manager's native
    path give the same counters (stored, deleted, expired, hits, misses) and the same calls
    per operation; each native call is timed (a latency above zero)."""
    sync_clock = ManualClock()
    with SessionManager("test-async", cleanup_interval=0, stats=True, clock=sync_clock) as sync:
        _sync_script(sync, sync_clock)
        sync_counters = sync.stats()["counters"]

    async def main() -> tuple[dict[str, Any], frozenset[str]]:
        clock = ManualClock()
        async with AsyncSessionManager(
            "test-async", cleanup_interval=0, stats=True, clock=clock
        ) as sessions:
            await _async_script(sessions, clock)
            return (await sessions.stats())["counters"], sessions.native_operations

    async_counters, native = asyncio.run(main())
    assert {"store", "fetch", "update", "take", "delete_owner", "cleanup_expired"} <= native
    for counter, expected in EXPECTED_COUNTERS.items():
        assert sync_counters[counter] == expected, counter
        assert async_counters[counter] == expected, counter
    assert _calls(async_counters) == _calls(sync_counters)
    assert {"store", "store_if", "take", "delete_owner", "cleanup_expired"} <= set(
        async_counters["operations"]
    )
    assert all(figures["max_us"] > 0 for figures in async_counters["operations"].values())


@pytest.mark.parametrize(
    ("failure", "message"),
    [("fail_next", "injected"), ("refuse_next", "refused")],
    ids=["awaitable-raises", "hook-raises-at-once"],
)
def test_a_failed_native_call_counts_as_an_error(
    async_backends: None, failure: str, message: str
) -> None:
    """A native hook whose awaitable raises, or that raises when called (before returning an
    awaitable), is counted as one call with an error (the caller gets the StorageError naming
    it), and its store is not counted."""

    async def main() -> dict[str, Any]:
        async with AsyncSessionManager("test-async", cleanup_interval=0, stats=True) as sessions:
            session = await sessions.create()
            setattr(sessions.sync.backend, failure, "sessionkeeper_async_store_if")
            with pytest.raises(StorageError, match=message):
                await sessions.store(session)
            return (await sessions.stats())["counters"]

    counters = asyncio.run(main())
    stores = counters["operations"]["store_if"]
    assert (stores["calls"], stores["errors"]) == (1, 1)
    assert counters["stored"] == 1  # the create's store, not the failed one


def test_a_cancelled_native_call_is_not_an_error(async_backends: None) -> None:
    """A native call the caller cancels is counted as a call, not as a backend error (a sync
    call cannot be cancelled, so error rates stay comparable)."""

    async def main() -> dict[str, Any]:
        async with AsyncSessionManager("test-async", cleanup_interval=0, stats=True) as sessions:
            session = await sessions.create()
            task = asyncio.ensure_future(sessions.fetch(session.id))
            await asyncio.sleep(0)  # the fetch is awaiting the backend's round trip
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return (await sessions.stats())["counters"]

    fetches = asyncio.run(main())["operations"]["fetch"]
    assert (fetches["calls"], fetches["errors"]) == (1, 0)
