"""The sqlitedict engines tell the async manager which hooks they serve without blocking (issue
15): interval mode its reads and buffered writes, read-only mode nothing (it reads the file per
call); durable mode has native ``async_`` twins of its writes (each joins the pending group
commit from the loop) and runs the reads that take a commit's lock in a worker thread. Checked
where it matters: the thread each hook call runs in, seen by a wrapper plugin."""

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


def test_durable_mode_awaits_its_writes_and_runs_the_locking_reads_in_a_worker(
    tmp_path: Path,
) -> None:
    """In durable mode (``auto_save = 0``) the writes, and the reads before them, are native:
    the async manager awaits their ``async_`` twins (each write joins the pending group commit
    from the loop) and never calls their sync hooks; list, count and the owner reads wait on
    the table's lock that a commit holds, so they run in a worker thread."""
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
            native = {"create", "store", "fetch", "peek", "touch", "update", "delete", "take"}
            assert native | {"rotate", "delete_owner"} <= sessions.native_operations
            assert sessions.inline_operations == frozenset()
            await exercise_operations(sessions, clock)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert set(threads.seen) == {"list", "count", "list_owner", "count_owner"}
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
