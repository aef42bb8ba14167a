"""Durable mode on the async manager (issue 15): a task's write joins the pending group commit
from the event loop and awaits its commit holding no thread, so one commit serves every task
that wrote meanwhile; a store still returns only once its commit is done.

Real files, real tasks, and for the crash test a real process SIGKILLed again and again
(async_durable_worker.py, driven through the process tests' :class:`WorkerProcess`).
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from sqlitedict_procs import WorkerProcess

from sessionkeeper import AsyncSessionManager, Session, SessionManager

#: How long a test waits for a step before it calls it a hang (never a timing assertion).
HANG = 60.0
WRITER = Path(__file__).with_name("async_durable_worker.py")
#: The name of the durable engine's committer thread (and the table's after it).
COMMITTER = "sessionkeeper-sqlitedict-commit-"
KILLS = int(os.environ.get("SESSIONKEEPER_CRASH_KILLS", "20"))
SEED = int(os.environ.get("SESSIONKEEPER_CRASH_SEED", str(random.randrange(2**32))))


def durable(path: Path) -> dict[str, Any]:
    return {"file_path": str(path), "auto_save": 0}


def on_disk(path: Path) -> set[str]:
    """The keys in the file, read by a plain sqlite3 connection beside the owner."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'sessions'").fetchone():
            return set()  # created by the first commit
        return {row[0] for row in connection.execute("SELECT key FROM sessions")}
    finally:
        connection.close()


async def until_queued(sessions: AsyncSessionManager, count: int) -> None:
    """Let the loop run until ``count`` writes wait for the next group commit."""
    group = sessions.sync.backend._group_commit
    async with asyncio.timeout(HANG):
        while group.queued() < count:
            await asyncio.sleep(0)


class TestGroupCommitOfTasks:
    def test_a_hundred_tasks_share_one_commit_and_hold_no_thread(self, tmp_path: Path) -> None:
        """A hundred tasks storing while a commit is in progress wait without a thread (the
        manager never starts its worker threads), are not acknowledged before their commit,
        share one commit once it can run, and are all on disk after the manager is closed."""
        path = tmp_path / "s.sqlite"

        async def main() -> int:
            sessions = await AsyncSessionManager.open("sqlitedict", durable(path))
            async with sessions:
                assert {"store", "create", "fetch", "update"} <= sessions.native_operations
                now = sessions.sync.clock()
                batch = [
                    Session(f"s{i:03d}", now, now, None, {"i": i}, owner="alice")
                    for i in range(100)
                ]
                backend = sessions.sync.backend
                before: int = backend.sessionkeeper_stats()["commits"]
                with backend._lock:  # what a commit in progress holds
                    tasks = [asyncio.create_task(sessions.store(s)) for s in batch]
                    await until_queued(sessions, len(batch))
                    assert not any(task.done() for task in tasks)
                    assert on_disk(path) == set()
                async with asyncio.timeout(HANG):
                    stored = await asyncio.gather(*tasks)
                assert [s.version for s in stored] == [1] * len(batch)
                assert on_disk(path) == {s.id for s in batch}
                assert sessions._executor is None  # no worker thread was ever needed
                return int(backend.sessionkeeper_stats()["commits"]) - before

        assert asyncio.run(main()) == 1
        with SessionManager("sqlitedict", durable(path), cleanup_interval=0) as reopened:
            assert reopened.count(owner="alice") == 100
            assert reopened.peek("s042").metadata == {"i": 42}

    def test_every_write_of_concurrent_tasks_is_on_disk_after_close(self, tmp_path: Path) -> None:
        """Tasks racing every native write (create, store, update, touch, rotate, take,
        delete, delete_owner) leave on disk exactly what their acknowledged results say."""
        path = tmp_path / "s.sqlite"

        async def main() -> dict[str, dict[str, Any]]:
            sessions = await AsyncSessionManager.open("sqlitedict", durable(path))
            async with sessions:
                counters = [(await sessions.create(metadata={"n": 0})).id for _ in range(6)]

                async def work(k: int) -> tuple[str, dict[str, Any]] | None:
                    bump = await sessions.update(
                        counters[k % 6], lambda md: {"n": md["n"] + 1}, attempts=1_000
                    )
                    assert bump.metadata["n"] >= 1
                    mine = await sessions.create(metadata={"k": k}, owner=f"o{k % 3}")
                    await sessions.touch(mine.id)
                    if k % 4 == 0:
                        await sessions.delete(mine.id)
                        return None
                    if k % 4 == 1:
                        await sessions.take(mine.id)
                        return None
                    moved = await sessions.rotate(mine.id)
                    return moved.id, {"k": k}

                async with asyncio.timeout(HANG):
                    results = await asyncio.gather(*(work(k) for k in range(60)))
                assert await sessions.delete_owner("o0") == sum(
                    1 for k in range(60) if k % 3 == 0 and k % 4 >= 2
                )
                expected = {
                    sid: md
                    for k, result in enumerate(results)
                    if result is not None and k % 3 != 0
                    for sid, md in [result]
                }
                expected.update({counter: {"n": 10} for counter in counters})
                return expected

        expected = asyncio.run(main())
        with SessionManager("sqlitedict", durable(path), cleanup_interval=0) as reopened:
            assert {sid: reopened.peek(sid).metadata for sid in reopened.list()} == expected

    def test_closing_leaves_no_committer_thread(self, tmp_path: Path) -> None:
        """The thread that commits the tasks' groups ends when the manager closes: nothing of
        the store is left running (it would hold the closed store, and count as a leak)."""

        def committers() -> list[threading.Thread]:
            return [t for t in threading.enumerate() if t.name == COMMITTER + "closing"]

        async def main() -> None:
            opts = {**durable(tmp_path / "s.sqlite"), "table_name": "closing"}
            sessions = await AsyncSessionManager.open("sqlitedict", opts)
            async with sessions:
                await sessions.create()
                assert len(committers()) == 1
            assert committers() == []

        asyncio.run(main())

    def test_the_manager_runs_on_any_loop(self, tmp_path: Path) -> None:
        """The durable engine holds nothing of a loop's (each wait is a future of the running
        loop): its manager works across consecutive asyncio.run calls and closes on another
        loop without a warning."""
        sessions = AsyncSessionManager("sqlitedict", durable(tmp_path / "s.sqlite"))
        session = asyncio.run(sessions.create(metadata={"n": 1}))
        updated = asyncio.run(sessions.update(session.id, lambda md: {"n": 2}))
        assert updated.metadata == {"n": 2}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            asyncio.run(sessions.aclose())
        assert sessions.sync.closed


@pytest.mark.sessionkeeper_slow
def test_tasks_killed_at_random_points_lose_nothing_acknowledged(tmp_path: Path) -> None:
    """A process whose twenty tasks store durably through AsyncSessionManager, SIGKILLed at
    random points again and again (``SESSIONKEEPER_CRASH_KILLS`` / 4 times, at least 3): the
    file always reopens, passes SQLite's integrity check and holds every session whose store
    had returned, with its metadata."""
    path = tmp_path / "durable.sqlite"
    rng = random.Random(SEED)
    tasks = 20
    acknowledged: set[int] = set()
    start = 0
    for round_ in range(max(3, KILLS // 4)):
        worker = WorkerProcess(WRITER, path, start, tasks, stdin=False)
        try:
            target = rng.choice([0, 1, 5, 20, 60, 150])
            if target == 0:
                time.sleep(rng.uniform(0.0, 0.4))  # while opening, or just after
            else:
                worker.next_expected("ready")
                for _ in range(target):
                    acknowledged.add(int(worker.next_expected("ack").split()[1]))
                time.sleep(rng.uniform(0.0, 0.01))  # land anywhere in the next commits
            worker.kill()
            while (line := worker.next_line()) is not None:
                if line.startswith("ack"):
                    acknowledged.add(int(line.split()[1]))
        finally:
            worker.close()
        where = f"round {round_} (seed {SEED})"
        connection = sqlite3.connect(path)
        try:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)], where
        finally:
            connection.close()
        with SessionManager("sqlitedict", durable(path), cleanup_interval=0) as reopened:
            stored = {s.id: s for s in reopened.iter_sessions(include_expired=True)}
        missing = sorted(i for i in acknowledged if f"s{i:07d}" not in stored)
        assert not missing, f"{where}: acknowledged sessions lost: {missing[:20]}"
        for i in acknowledged:
            assert stored[f"s{i:07d}"].metadata["i"] == i
        start = max(acknowledged, default=-1) + tasks
    assert acknowledged, "no write was acknowledged in any round"
