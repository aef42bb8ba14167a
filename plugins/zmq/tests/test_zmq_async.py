"""A zmq node tells the async manager which hooks it serves from its own memory (issue 15): the
local reads always, and the writes when one node's acknowledgement is enough; what waits on
peers (or on an fsync per write) runs in a worker thread. Checked on real nodes by a wrapper
plugin recording the thread of every hook call."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

from sessionkeeper import AsyncSessionManager, Session, SessionManager
from sessionkeeper.backend import hookimpl
from sessionkeeper.testing import ManualClock
from sessionkeeper_zmq.testing import cluster_opts, wait_ready


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
    def sessionkeeper_delete(self, session_id: str) -> Generator[None, Any, Any]:
        self._note("delete")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_list(self, now: int) -> Generator[None, Any, Any]:
        self._note("list")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_count(self, now: int) -> Generator[None, Any, Any]:
        self._note("count")
        return (yield)


async def exercise(sessions: AsyncSessionManager, clock: ManualClock) -> None:
    """store, fetch (with a touch written back), list, count and delete, checking results."""
    session = await sessions.create(metadata={"n": 1})
    clock.advance(5_000)
    assert (await sessions.fetch(session.id)).last_accessed == clock.now
    assert await sessions.list() == [session.id]
    assert await sessions.count() == 1
    assert await sessions.delete(session.id) is True
    assert await sessions.count() == 0


def where(threads: Threads, loop_thread: int) -> dict[str, str]:
    """Each hook seen: ``"loop"`` when all its calls ran on the loop's thread, else
    ``"worker"`` when none did."""
    result = {}
    for hook, ids in threads.seen.items():
        assert ids == {loop_thread} or loop_thread not in ids, hook
        result[hook] = "loop" if ids == {loop_thread} else "worker"
    return result


def test_single_node_runs_reads_and_local_writes_on_the_loop(key_dir: Path) -> None:
    """On a node whose writes need only its own acknowledgement (a single-node cluster,
    ``ack = "local"``), store, fetch, touch, list, count and delete all run on the event loop's
    thread."""
    (opts,) = cluster_opts(key_dir, 1, curve=False, ack="local")
    threads, clock = Threads(), ManualClock()

    async def main() -> int:
        sessions = await AsyncSessionManager.open(
            "zmq", opts, cleanup_interval=0, clock=clock, plugins=[threads]
        )
        async with sessions:
            assert {"create", "fetch", "store", "delete", "list", "count"} <= (
                sessions.inline_operations
            )
            await exercise(sessions, clock)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert where(threads, loop_thread) == dict.fromkeys(
        ("store", "fetch", "touch", "list", "count", "delete"), "loop"
    )


def test_writes_waiting_on_peers_run_in_a_worker(key_dir: Path) -> None:
    """In a two-node cluster with ``ack = "all"`` (stores and deletes wait for the peer) and
    ``touch_ack = "local"``, the writes that wait run in a worker thread, while fetch, the
    touch written back, list and count stay on the loop."""
    opts_a, opts_b = cluster_opts(key_dir, 2, curve=False, ack="all", touch_ack="local")
    threads, clock = Threads(), ManualClock()
    with SessionManager("zmq", opts_b, cleanup_interval=0, clock=clock) as node_b:

        async def main() -> int:
            sessions = await AsyncSessionManager.open(
                "zmq", opts_a, cleanup_interval=0, clock=clock, plugins=[threads]
            )
            async with sessions:
                await asyncio.to_thread(wait_ready, [sessions.sync, node_b])
                assert "store" not in sessions.inline_operations
                await exercise(sessions, clock)
            return threading.get_ident()

        loop_thread = asyncio.run(main())
    assert where(threads, loop_thread) == {
        "store": "worker",
        "fetch": "loop",
        "touch": "loop",
        "list": "loop",
        "count": "loop",
        "delete": "worker",
    }


def test_touch_waiting_on_peers_and_fsync_per_write(key_dir: Path, tmp_path: Path) -> None:
    """``touch_ack`` above one node keeps the touch (and so ``fetch``) off the loop while local
    stores stay on it; a write-ahead log that fsyncs each record (``fsync = "always"``) leaves
    only the lock-free ``fetch`` inline, since writes hold the replica's lock across the
    fsync."""
    opts_a, opts_b = cluster_opts(key_dir, 2, curve=False, ack="local", touch_ack="all")
    with (
        SessionManager("zmq", opts_b, cleanup_interval=0) as node_b,
        SessionManager("zmq", opts_a, cleanup_interval=0) as node_a,
    ):
        wait_ready([node_a, node_b])
        assert node_a.inline_hooks == {
            "sessionkeeper_" + name
            for name in (
                "fetch",
                "list",
                "count",
                "list_owner",
                "count_owner",
                "store",
                "store_if",
                "delete",
            )
        }
    (opts,) = cluster_opts(
        key_dir, 1, curve=False, disc_copies=True, data_dir=str(tmp_path), fsync="always"
    )
    with SessionManager("zmq", opts, cleanup_interval=0) as durable:
        assert durable.inline_hooks == {"sessionkeeper_fetch"}
