"""The sqlitedict engines tell the async manager which hooks they serve without blocking (issue
15): interval mode its reads and buffered writes, durable mode only ``fetch`` (its writes commit,
and its other reads take the lock a commit holds), read-only mode nothing (it reads the file per
call). Checked where it matters: the thread each hook call runs in, seen by a wrapper plugin."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

from sessionkeeper import AsyncSessionManager, Session, SessionManager
from sessionkeeper.backend import hookimpl
from sessionkeeper.testing import ManualClock

#: The hooks interval mode serves from memory.
INTERVAL_INLINE = {
    "fetch",
    "touch",
    "store",
    "store_if",
    "delete",
    "take",
    "rotate",
    "list",
    "count",
    "list_owner",
    "count_owner",
}


class Threads:
    """A wrapper plugin recording, per hook, the threads its calls ran in."""

    def __init__(self) -> None:
        self.seen: dict[str, set[int]] = {}

    def _note(self, hook: str) -> None:
        self.seen.setdefault(hook, set()).add(threading.get_ident())

    @hookimpl(wrapper=True)
    def sessionkeeper_fetch(self, session_id: str) -> Generator[None, Any, Any]:
        self._note("fetch")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Generator[None, Any, Any]:
        self._note("touch")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_store(self, session: Session) -> Generator[None, Any, Any]:
        self._note("store")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_store_if(
        self, session: Session, if_version: int | None, now: int
    ) -> Generator[None, Any, Any]:
        self._note("store_if")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_delete(self, session_id: str) -> Generator[None, Any, Any]:
        self._note("delete")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_take(self, session_id: str, now: int) -> Generator[None, Any, Any]:
        self._note("take")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_rotate(
        self, session_id: str, new_id: str, now: int
    ) -> Generator[None, Any, Any]:
        self._note("rotate")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_list(self, now: int) -> Generator[None, Any, Any]:
        self._note("list")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_count(self, now: int) -> Generator[None, Any, Any]:
        self._note("count")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_list_owner(self, owner: str, now: int) -> Generator[None, Any, Any]:
        self._note("list_owner")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_count_owner(self, owner: str, now: int) -> Generator[None, Any, Any]:
        self._note("count_owner")
        return (yield)


async def exercise(sessions: AsyncSessionManager, clock: ManualClock) -> None:
    """Call every operation whose hooks are in :data:`INTERVAL_INLINE`, checking the results."""
    session = await sessions.create(metadata={"n": 0}, owner="alice")  # store
    clock.advance(5_000)
    fetched = await sessions.fetch(session.id)  # fetch, and touch (moved by more than 1 s)
    assert fetched.last_accessed == clock.now
    await sessions.store(fetched)  # store
    updated = await sessions.update(session.id, lambda md: {"n": md["n"] + 1})  # store_if
    assert updated.metadata == {"n": 1}
    rotated = await sessions.rotate(session.id)  # rotate
    assert await sessions.list() == [rotated.id]  # list
    assert await sessions.count() == 1  # count
    assert await sessions.list(owner="alice") == [rotated.id]  # list_owner
    assert await sessions.count(owner="alice") == 1  # count_owner
    taken = await sessions.take(rotated.id)  # take
    assert taken.metadata == {"n": 1}
    other = await sessions.create()
    assert await sessions.delete(other.id) is True  # delete
    assert await sessions.count() == 0


def test_interval_mode_runs_its_memory_operations_on_the_loop(tmp_path: Path) -> None:
    """In interval mode (``auto_save > 0``) every hook served from memory — the reads and the
    buffered writes — runs on the event loop's thread: no worker thread is involved, and what
    was written reaches the file at close."""
    threads, clock = Threads(), ManualClock()
    path = tmp_path / "s.sqlite"

    async def main() -> int:
        sessions = await AsyncSessionManager.open(
            "sqlitedict",
            {"file_path": str(path), "auto_save": 60_000},
            cleanup_interval=0,
            clock=clock,
            plugins=[threads],
        )
        async with sessions:
            assert {"fetch", "store", "update", "take", "rotate", "list_owner"} <= (
                sessions.inline_operations
            )
            await exercise(sessions, clock)
            await sessions.create(metadata={"kept": True})
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert set(threads.seen) == INTERVAL_INLINE
    assert {hook: ids for hook, ids in threads.seen.items() if ids != {loop_thread}} == {}
    with SessionManager(
        "sqlitedict", {"file_path": str(path)}, cleanup_interval=0, clock=clock
    ) as reopened:
        (kept,) = reopened.list()
        assert reopened.peek(kept).metadata == {"kept": True}


def test_durable_mode_commits_in_a_worker_and_peeks_on_the_loop(tmp_path: Path) -> None:
    """In durable mode (``auto_save = 0``) every write commits, and list and count wait on the
    table's lock that a commit holds, so they run in a worker thread; only a peek (a bare
    ``fetch`` of the copy) runs on the loop."""
    threads, clock = Threads(), ManualClock()

    async def main() -> int:
        sessions = await AsyncSessionManager.open(
            "sqlitedict",
            {"file_path": str(tmp_path / "s.sqlite"), "auto_save": 0},
            cleanup_interval=0,
            clock=clock,
            plugins=[threads],
        )
        async with sessions:
            assert sessions.inline_operations == {"peek"}
            session = await sessions.create(owner="alice")
            assert (await sessions.peek(session.id)).id == session.id
            peek_threads = set(threads.seen["fetch"])
            assert await sessions.delete(session.id) is True
            threads.seen.clear()
            await exercise(sessions, clock)
            assert peek_threads == {threading.get_ident()}
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert set(threads.seen) == INTERVAL_INLINE
    assert {hook for hook, ids in threads.seen.items() if loop_thread in ids} == set()


def test_read_only_mode_declares_nothing(tmp_path: Path) -> None:
    """The read-only engine reads the file on every call, so it declares no hook inline: every
    operation of an async manager on it runs in a worker thread."""
    path = str(tmp_path / "s.sqlite")
    opts = {"file_path": path, "auto_save": 0}
    with SessionManager("sqlitedict", opts, cleanup_interval=0) as owner:
        owner.create()
        with SessionManager("sqlitedict", {"file_path": path}, read_only=True) as reader:
            assert reader.inline_hooks == frozenset()
            assert len(reader.list()) == 1
