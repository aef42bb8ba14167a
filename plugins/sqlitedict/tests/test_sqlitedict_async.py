"""The sqlitedict engines tell the async manager which hooks they serve without blocking (issue
15): interval mode its reads and buffered writes, durable mode only ``fetch`` (its writes commit,
and its other reads take the lock a commit holds), read-only mode nothing (it reads the file per
call). Checked where it matters: the thread each hook call runs in, seen by a wrapper plugin."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sessionkeeper import AsyncSessionManager, SessionManager
from sessionkeeper.testing import HookThreads, ManualClock, exercise_operations

#: The hooks interval mode serves from memory: those the tests watch.
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


def test_interval_mode_runs_its_memory_operations_on_the_loop(tmp_path: Path) -> None:
    """In interval mode (``auto_save > 0``) every hook served from memory — the reads and the
    buffered writes — runs on the event loop's thread: no worker thread is involved, and what
    was written reaches the file at close."""
    threads, clock = HookThreads(INTERVAL_INLINE), ManualClock()
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
            await exercise_operations(sessions, clock)
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
    threads, clock = HookThreads(INTERVAL_INLINE), ManualClock()

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
            await exercise_operations(sessions, clock)
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
