"""A zmq node tells the async manager which hooks it serves from its own memory (issue 15): the
local reads always, and the writes when one node's acknowledgement is enough; what waits on
peers (or on an fsync per write) runs in a worker thread. Checked on real nodes by a wrapper
plugin recording the thread of every hook call."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sessionkeeper import AsyncSessionManager, SessionManager
from sessionkeeper.testing import HookThreads, ManualClock, exercise_operations
from sessionkeeper_zmq.testing import cluster_opts, wait_ready

#: The hooks the tests watch.
WATCHED = ("fetch", "touch", "store", "delete", "list", "count")
#: The operations the tests call: store (by create), fetch (with a touch written back), list,
#: count and delete.
OPERATIONS = ("create", "fetch", "list", "count", "delete")


def test_single_node_runs_reads_and_local_writes_on_the_loop(key_dir: Path) -> None:
    """On a node whose writes need only its own acknowledgement (a single-node cluster,
    ``ack = "local"``), store, fetch, touch, list, count and delete all run on the event loop's
    thread."""
    (opts,) = cluster_opts(key_dir, 1, curve=False, ack="local")
    threads, clock = HookThreads(WATCHED), ManualClock()

    async def main() -> int:
        sessions = await AsyncSessionManager.open(
            "zmq", opts, cleanup_interval=0, clock=clock, plugins=[threads]
        )
        async with sessions:
            assert {"create", "fetch", "store", "delete", "list", "count"} <= (
                sessions.inline_operations
            )
            await exercise_operations(sessions, clock, OPERATIONS)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads.where(loop_thread) == dict.fromkeys(
        ("store", "fetch", "touch", "list", "count", "delete"), "loop"
    )


def test_writes_waiting_on_peers_run_in_a_worker(key_dir: Path) -> None:
    """In a two-node cluster with ``ack = "all"`` (stores and deletes wait for the peer) and
    ``touch_ack = "local"``, the writes that wait run in a worker thread, while fetch, the
    touch written back, list and count stay on the loop."""
    opts_a, opts_b = cluster_opts(key_dir, 2, curve=False, ack="all", touch_ack="local")
    threads, clock = HookThreads(WATCHED), ManualClock()
    with SessionManager("zmq", opts_b, cleanup_interval=0, clock=clock) as node_b:

        async def main() -> int:
            sessions = await AsyncSessionManager.open(
                "zmq", opts_a, cleanup_interval=0, clock=clock, plugins=[threads]
            )
            async with sessions:
                await asyncio.to_thread(wait_ready, [sessions.sync, node_b])
                assert "store" not in sessions.inline_operations
                await exercise_operations(sessions, clock, OPERATIONS)
            return threading.get_ident()

        loop_thread = asyncio.run(main())
    assert threads.where(loop_thread) == {
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
