"""What a user could pick instead of ``AsyncSessionManager`` (issue 15): py-key-value's stores,
measured in the same run as our rows, and the zmq backend's local read.

Not a benchmark itself (``nox -s bench`` runs only ``bench_*.py``); ``bench_async.py`` calls it.
py-key-value (``py-key-value-aio[disk,redis]``) is the async key-value library FastMCP stores
state in: its ``DiskStore`` (diskcache, one SQLite file) is the peer of our sqlitedict backend,
its ``RedisStore`` (``redis.asyncio``, JSON values) the peer of our redis backend on the same
``redis-server``. Both sides hold the same sessions: py-key-value stores each session's fields
as the mapping it takes (what a user would put there), we store our record; the notes give the
bytes each side keeps per session. Each row alternates ours and the peer in rounds on one event
loop and holds the median of the rounds' ratios (:mod:`_rounds`).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import _bench
import _rounds

from sessionkeeper import AsyncSessionManager, Session
from sessionkeeper.backend import encode_session

#: sqlitedict's async fetch: at most this share of DiskStore.get's time (>= 10x faster).
DISK_FETCH_SHARE = 0.1
#: The zmq backend's async local read: at most this many times its sync local read.
ZMQ_READ_RATIO = 1.2
#: The py-key-value collection the sessions go to.
COLLECTION = "sessions"


def as_value(session: Session) -> dict[str, Any]:
    """The session as the mapping a py-key-value user would store: its fields."""
    return {
        "id": session.id,
        "created_at": session.created_at,
        "last_accessed": session.last_accessed,
        "timeout_ms": session.timeout_ms,
        "metadata": dict(session.metadata),
        "version": session.version,
        "owner": session.owner,
        "absolute_timeout_ms": session.absolute_timeout_ms,
    }


def _sizes_note(by_id: dict[str, Session]) -> str:
    """The bytes per session each side stores (py-key-value's JSON: the mapping alone)."""
    one = next(iter(by_id.values()))
    ours = len(encode_session(one))
    theirs = len(json.dumps(as_value(one), separators=(",", ":")))
    return f"per session: our record {ours} B, their JSON value >= {theirs} B"


def _missing(name: str) -> list[_bench.Figure]:
    return [
        _bench.NotedFigure(
            name, None, "us", None, "-", "-", None, note="py-key-value-aio[disk,redis] missing"
        )
    ]


def disk_rows(sessions: AsyncSessionManager, ids: list[str], repeats: int) -> list[_bench.Figure]:
    """sqlitedict (interval mode, ``sessions``) against py-key-value's ``DiskStore`` in a
    directory of its own: async fetch against ``DiskStore.get`` (target: >= 10x faster) and
    store against ``DiskStore.put``."""
    try:
        from key_value.aio.stores.disk import DiskStore
    except ImportError:
        return _missing("sqlitedict async fetch vs py-key-value DiskStore.get")
    by_id = {i: sessions.sync.peek(i) for i in ids}
    values = {i: as_value(s) for i, s in by_id.items()}
    with tempfile.TemporaryDirectory() as directory:

        async def measure() -> dict[str, _rounds.Rounds]:
            store = DiskStore(directory=directory)
            try:
                for session_id, value in values.items():
                    await store.put(session_id, value, collection=COLLECTION)
                return {
                    "fetch": await _rounds.arounds(
                        sessions.fetch,
                        lambda i: store.get(i, collection=COLLECTION),
                        ids,
                        repeats=repeats,
                    ),
                    "store": await _rounds.arounds(
                        lambda i: sessions.store(by_id[i]),
                        lambda i: store.put(i, values[i], collection=COLLECTION),
                        ids,
                        repeats=repeats,
                    ),
                }
            finally:
                await store.close()

        found = asyncio.run(measure())
    note = _sizes_note(by_id)
    return [
        _rounds.ratio_figure(
            "sqlitedict async fetch vs py-key-value DiskStore.get",
            found["fetch"],
            "DiskStore.get",
            ratio=DISK_FETCH_SHARE,
            note=f"{1 / found['fetch'].ratio:.1f}x faster; {note}",
        ),
        _rounds.ratio_figure(
            "sqlitedict interval async store vs py-key-value DiskStore.put",
            found["store"],
            "DiskStore.put",
            note=f"{1 / found['store'].ratio:.1f}x faster; {note}",
        ),
    ]


async def redis_rounds(
    url: str,
    native: AsyncSessionManager,
    by_id: dict[str, Session],
    ids: list[str],
    repeats: int,
) -> tuple[dict[str, _rounds.Rounds], Callable[[], Awaitable[None]]] | None:
    """Our native redis fetch and store against py-key-value's ``RedisStore`` on the same
    server, in rounds (on the running loop: the native manager's); also returns its close.
    ``None`` without py-key-value."""
    try:
        from key_value.aio.stores.redis import RedisStore
    except ImportError:
        return None
    store = RedisStore(url=url)
    values = {i: as_value(s) for i, s in by_id.items()}
    for session_id, value in values.items():
        await store.put(session_id, value, collection=COLLECTION)
    found = {
        "fetch": await _rounds.arounds(
            native.fetch, lambda i: store.get(i, collection=COLLECTION), ids, repeats=repeats
        ),
        "store": await _rounds.arounds(
            lambda i: native.store(by_id[i]),
            lambda i: store.put(i, values[i], collection=COLLECTION),
            ids,
            repeats=repeats,
        ),
    }
    return found, store.close


def redis_rows(found: dict[str, _rounds.Rounds] | None, by_id: dict[str, Session]) -> list[Any]:
    """The rows of :func:`redis_rounds` (target: ahead, a ratio below 1)."""
    if found is None:
        return _missing("redis async vs py-key-value RedisStore")
    note = _sizes_note(by_id)
    return [
        _rounds.ratio_figure(
            f"redis async {op} (native) vs py-key-value RedisStore.{peer}",
            found[op],
            f"RedisStore.{peer}",
            ratio=1.0,
            note=f"{1 / found[op].ratio:.2f}x faster; {note}",
        )
        for op, peer in (("fetch", "get"), ("store", "put"))
    ]


def redis_tasks_peer(
    url: str,
    by_id: dict[str, Session],
    ids: list[str],
    tasks: int,
    n: int,
    loop: asyncio.AbstractEventLoop,
) -> Callable[[], float] | None:
    """A function measuring py-key-value ``RedisStore`` get+put pairs per second of ``tasks``
    concurrent tasks, ``n`` each, on ``loop`` (a new store each time, as the raw floor does);
    ``None`` without py-key-value."""
    try:
        from key_value.aio.stores.redis import RedisStore
    except ImportError:
        return None
    values = {i: as_value(s) for i, s in by_id.items()}

    def pairs() -> float:
        store = RedisStore(url=url)

        async def main() -> float:
            try:
                await store.get(ids[0], collection=COLLECTION)  # set up before the clock
                began = time.perf_counter()
                await asyncio.gather(*(worker(k) for k in range(tasks)))
                return time.perf_counter() - began
            finally:
                await store.close()

        async def worker(k: int) -> None:
            for i in range(n):
                session_id = ids[(k * n + i) % len(ids)]
                await store.get(session_id, collection=COLLECTION)
                await store.put(session_id, values[session_id], collection=COLLECTION)

        return tasks * n / loop.run_until_complete(main())

    return pairs


def zmq_rows(repeats: int, count: int, await_us: float) -> list[_bench.Figure]:
    """A one-node zmq cluster on 127.0.0.1: async ``fetch`` against the sync manager's, both
    served from the node's memory (target: :data:`ZMQ_READ_RATIO`; the note gives the ratio
    net of ``await_us``, what awaiting any coroutine costs)."""
    try:
        from sessionkeeper_zmq.testing import cluster_opts
    except ImportError:
        return [_bench.NotedFigure("zmq", None, "us", None, "-", "-", None, note="not installed")]
    with tempfile.TemporaryDirectory() as directory:
        (opts,) = cluster_opts(Path(directory), 1, curve=False, ack="local")
        sessions = AsyncSessionManager("zmq", opts, cleanup_interval=0, clock=_bench.Clock())
        try:
            ids = [sessions.sync.create(timeout_ms=None).id for _ in range(count)]
            where = "inline" if "fetch" in sessions.inline_operations else "not inline"
            timed = alternate(sessions.sync.fetch, sessions.fetch, ids, repeats)
        finally:
            asyncio.run(sessions.aclose())
    return [
        _rounds.ratio_figure(
            f"zmq async local read ({where}, one node)",
            timed,
            "sync manager fetch",
            ratio=ZMQ_READ_RATIO,
            note=f"{repeats} rounds; net of the await floor: "
            f"{(timed.value - await_us) / timed.floor:.2f}x",
        )
    ]


def alternate(
    sync_call: Callable[[str], object],
    async_call: Callable[[str], Awaitable[object]],
    ids: Sequence[str],
    repeats: int,
) -> _rounds.Rounds:
    """µs per call of ``async_call`` (awaited in one coroutine, as a handler does; the value)
    and of ``sync_call`` (the floor) over ``ids``, back to back in ``repeats`` rounds; which
    of the two goes first alternates, so neither always runs on the other's warm caches."""

    async def run_async() -> float:
        began = time.perf_counter()
        for session_id in ids:
            await async_call(session_id)
        return (time.perf_counter() - began) / len(ids) * 1e6

    def run_sync() -> float:
        began = time.perf_counter()
        for session_id in ids:
            sync_call(session_id)
        return (time.perf_counter() - began) / len(ids) * 1e6

    values: list[float] = []
    floors: list[float] = []
    loop = asyncio.new_event_loop()
    try:
        for round_ in range(repeats):
            if round_ % 2:
                floors.append(run_sync())
                values.append(loop.run_until_complete(run_async()))
            else:
                values.append(loop.run_until_complete(run_async()))
                floors.append(run_sync())
    finally:
        loop.close()
    return _rounds.Rounds(values, floors)
