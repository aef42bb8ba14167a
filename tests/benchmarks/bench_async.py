"""Async vs sync per operation (issue 15): AsyncSessionManager beside SessionManager, one run.

Rows: memory fetch, store and update (every operation inline on the loop: target <= 1.2x the sync
path); sqlitedict interval mode (``auto_save > 0``) fetch, store and update, which it declares
inline (``sessionkeeper_inline_hooks``): the same 1.2x target, and fetch <= 2 us; a row that ran
in a worker thread says so in its name and note, and misses; 100 concurrent tasks doing
fetch+store against one task doing the same, on memory and sqlitedict. Each inline row times
the async and the sync call back to back in rounds (which goes first alternates) and holds the
median of the rounds' ratios.

The floor of every inline row is measured too: awaiting a coroutine that returns at once (what
``await sessions.fetch(...)`` costs before any work). Each inline row says its ratio net of it.

sqlitedict durable mode (``auto_save = 0``): 100 concurrent tasks storing against one task
(target >= 3x: the worker threads' concurrent commits share one group commit).

redis (a ``redis-server`` of our own, when one is found): fetch and store awaited on
``redis.asyncio`` (the native path) against raw ``redis.asyncio`` GET of the session's key and
SET ... PX of its record (target <= 1.15x), the worker-thread path (what a backend without async
hooks takes) and the sync manager; 100 concurrent tasks of fetch+store on both paths against raw
``redis.asyncio`` GET+SET (target: >= 0.9x its pairs/s). The redis rows alternate the backend
and its floor in rounds and hold the median of the rounds' ratios (``_rounds``), all on one
event loop (a native manager stays on the loop it first ran on).

What a user could pick instead, in the same run (``_async_peers``): py-key-value's ``DiskStore``
beside sqlitedict (fetch against ``DiskStore.get``, target >= 10x faster; store against
``DiskStore.put``) and its ``RedisStore`` beside redis on the same server (fetch, store and 100
tasks; target: ahead on each). zmq: a one-node cluster's async local read against its sync one
(target <= 1.2x).

Run ``python tests/benchmarks/bench_async.py [--quick] [--json PATH] [--strict]``.
"""

from __future__ import annotations

import asyncio
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _async_peers
import _bench
import _redis_server
import _rounds
import attrs

from sessionkeeper import AsyncSessionManager, __version__
from sessionkeeper.backend import encode_session

#: Asyncio operations served from memory: at most this many times the sync path.
INLINE_RATIO = 1.2
#: sqlitedict's async fetch (issue 15), in µs.
SQLITEDICT_FETCH_US = 2.0
#: redis's native async fetch and store: at most this many times raw redis.asyncio GET and SET.
REDIS_RATIO = 1.15
#: 100 concurrent tasks on redis: at least this share of raw redis.asyncio's pairs per second.
REDIS_TASKS_SHARE = 0.9
#: sqlitedict durable: 100 concurrent storing tasks, at least this many times one task.
DURABLE_TASKS_GAIN = 3.0


@attrs.frozen
class Sizes:
    sessions: int
    repeats: int
    tasks: int
    pairs_per_task: int


def _within(row: _rounds.RatioFigure, absolute: float | None) -> _rounds.RatioFigure:
    """``row`` also held to ``value <= absolute`` µs, when given."""
    if absolute is None:
        return row
    return attrs.evolve(
        row,
        target=f"<= {absolute:g} us, {row.target}",
        passed=bool(row.passed and row.value is not None and row.value <= absolute),
    )


def _pairs_per_second(
    sessions: AsyncSessionManager,
    ids: list[str],
    tasks: int,
    n: int,
    *,
    fetch: bool = True,
    loop: asyncio.AbstractEventLoop | None = None,
) -> float:
    """fetch+store pairs (stores alone without ``fetch``) per second of ``tasks`` concurrent
    tasks, ``n`` each (on ``loop`` when given, else in a new one)."""

    async def worker(k: int) -> None:
        for i in range(n):
            session_id = ids[(k * n + i) % len(ids)]
            if fetch:
                await sessions.store(await sessions.fetch(session_id))
            else:
                await sessions.store(sessions.sync.peek(session_id))

    return _per_second(worker, tasks, n, loop=loop)


def _per_second(
    worker: Callable[[int], Awaitable[None]],
    tasks: int,
    n: int,
    after: Callable[[], Awaitable[object]] | None = None,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
) -> float:
    """``tasks * n`` divided by the seconds ``tasks`` concurrent ``worker(k)`` take (then
    ``after()`` is awaited in the same loop): on ``loop`` when given (a manager with a native
    asyncio client stays on the loop it first ran on), else in a new one."""

    async def main() -> float:
        began = time.perf_counter()
        try:
            await asyncio.gather(*(worker(k) for k in range(tasks)))
            return time.perf_counter() - began
        finally:
            if after is not None:
                await after()

    if loop is not None:
        return tasks * n / loop.run_until_complete(main())
    return tasks * n / asyncio.run(main())


def await_floor_us(count: int, repeats: int) -> float:
    """Median µs of awaiting a coroutine that returns at once: the least an awaited operation
    costs on top of its work."""

    async def nothing(_: str) -> None:
        return None

    async def run() -> float:
        began = time.perf_counter()
        for _ in range(count):
            await nothing("id")
        return time.perf_counter() - began

    loop = asyncio.new_event_loop()
    try:
        return statistics.median(
            loop.run_until_complete(run()) / count * 1e6 for _ in range(repeats)
        )
    finally:
        loop.close()


def _backend_rows(
    name: str,
    opts: dict[str, Any],
    sizes: Sizes,
    clock: _bench.Clock,
    *,
    label: str | None = None,
    absolute: dict[str, float] | None = None,
    await_us: float = 0.0,
    peers: Callable[[AsyncSessionManager, list[str]], list[_bench.Figure]] | None = None,
) -> list[_bench.Figure]:
    """The rows of one backend: each operation async against sync (target: :data:`INLINE_RATIO`,
    plus ``absolute`` µs per operation named there), then 100 tasks against one, then the rows
    ``peers`` measures on the same manager and sessions."""
    label = label or name
    absolute = absolute or {}
    rows: list[_bench.Figure] = []
    sessions = AsyncSessionManager(name, opts, cleanup_interval=0, clock=clock)
    try:
        ids = [sessions.sync.create(timeout_ms=None).id for _ in range(sizes.sessions)]
        inline = sessions.inline_operations
        by_id = {i: sessions.sync.peek(i) for i in ids}

        def store_sync(session_id: str) -> object:
            return sessions.sync.store(by_id[session_id])

        def store_async(session_id: str) -> Awaitable[object]:
            return sessions.store(by_id[session_id])

        def bump(md: dict[str, Any]) -> dict[str, Any]:
            return {"n": md.get("n", 0) + 1}

        operations: list[tuple[str, Callable[[str], object], Callable[[str], Awaitable[object]]]]
        operations = [
            ("fetch", sessions.sync.fetch, sessions.fetch),
            ("store", store_sync, store_async),
        ]
        if sessions.sync.capabilities.atomic:
            operations.append(
                (
                    "update",
                    lambda i: sessions.sync.update(i, bump),
                    lambda i: sessions.update(i, bump),
                )
            )
        for operation, sync_call, async_call in operations:
            timed = _async_peers.alternate(sync_call, async_call, ids, 2 * sizes.repeats + 1)
            where = "inline" if operation in inline else "worker thread"
            note = (
                f"{len(timed.values)} rounds; net of the await floor: "
                f"{(timed.value - await_us) / timed.floor:.2f}x"
            )
            if operation not in inline:
                note = (
                    f"{name} does not declare every hook of {operation} in "
                    "sessionkeeper_inline_hooks (it is served from memory)"
                )
            rows.append(
                _within(
                    _rounds.ratio_figure(
                        f"{label} async {operation} ({where})",
                        timed,
                        "sync manager",
                        ratio=INLINE_RATIO,
                        note=note,
                    ),
                    absolute.get(operation),
                )
            )
        one = _pairs_per_second(sessions, ids, 1, sizes.tasks * sizes.pairs_per_task // 10)
        many = _pairs_per_second(sessions, ids, sizes.tasks, sizes.pairs_per_task)
        rows.append(
            _bench.NotedFigure(
                f"{label} {sizes.tasks} tasks fetch+store (pairs/s)",
                many,
                "/s",
                one,
                "1 task (pairs/s)",
                "-",
                None,
                note=f"{many / one:.2f}x one task",
            )
        )
        if peers is not None:
            rows += peers(sessions, ids)
    finally:
        asyncio.run(sessions.aclose())
    return rows


def measure(args: Any) -> _bench.Run:
    sizes = Sizes(
        sessions=2_000 if args.quick else 20_000,
        repeats=3 if args.quick else 5,
        tasks=100,
        pairs_per_task=20 if args.quick else 100,
    )
    clock = _bench.Clock()
    await_us = await_floor_us(sizes.sessions * 10, sizes.repeats)
    figures: list[_bench.Figure] = [
        _bench.NotedFigure(
            "await of a coroutine returning at once",
            await_us,
            "us",
            None,
            "-",
            "-",
            None,
            note="the floor under every awaited operation",
        )
    ]
    figures += _backend_rows(
        "memory", {"table_name": "bench-async"}, sizes, clock, await_us=await_us
    )
    with tempfile.TemporaryDirectory() as tmp:
        opts = {"file_path": str(Path(tmp) / "s.sqlite"), "auto_save": 60_000}
        figures += _backend_rows(
            "sqlitedict",
            opts,
            sizes,
            clock,
            label="sqlitedict interval",
            absolute={"fetch": SQLITEDICT_FETCH_US},
            await_us=await_us,
            peers=lambda sessions, ids: _async_peers.disk_rows(
                sessions, ids[: max(len(ids) // 10, 200)], 2 * sizes.repeats + 1
            ),
        )
        figures += _durable_rows(Path(tmp) / "durable.sqlite", sizes, clock)
        figures += _redis_rows(Path(tmp) / "redis", sizes, clock)
    figures += _async_peers.zmq_rows(2 * sizes.repeats + 1, max(sizes.sessions // 4, 500), await_us)
    title = (
        f"bench_async: sessionkeeper {__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}; {sizes.sessions} sessions"
    )
    return _bench.Run(
        figures=figures,
        sizes=sizes,
        title=title,
        about={"sessionkeeper": __version__, "python": platform.python_version()},
    )


def _durable_rows(path: Path, sizes: Sizes, clock: _bench.Clock) -> list[_bench.Figure]:
    """sqlitedict durable: stores per second of 100 concurrent tasks against one task."""
    sessions = AsyncSessionManager(
        "sqlitedict", {"file_path": str(path), "auto_save": 0}, cleanup_interval=0, clock=clock
    )
    try:
        ids = [sessions.sync.create(timeout_ms=None).id for _ in range(sizes.tasks)]
        per_task = max(sizes.pairs_per_task // 5, 4)
        # At least 200 commits: one task's rate is one fsync per store, noisy over fewer.
        one = _pairs_per_second(sessions, ids, 1, max(per_task * 5, 200), fetch=False)
        many = _pairs_per_second(sessions, ids, sizes.tasks, per_task, fetch=False)
    finally:
        asyncio.run(sessions.aclose())
    return [
        _bench.NotedFigure(
            f"sqlitedict durable {sizes.tasks} tasks store (stores/s)",
            many,
            "/s",
            one,
            "1 task (stores/s)",
            f">= {DURABLE_TASKS_GAIN:g}x floor",
            many >= DURABLE_TASKS_GAIN * one,
            note="each task's store joins the pending group commit from the loop (no thread)",
        )
    ]


def _redis_rows(directory: Path, sizes: Sizes, clock: _bench.Clock) -> list[_bench.Figure]:
    """redis: the native path against raw redis.asyncio, the worker-thread path and sync. Every
    async step runs on one event loop: a manager with a native asyncio client stays on the loop
    it first ran on."""
    binary = _redis_server.find_binary()
    if binary is None:
        return [_bench.NotedFigure("redis", None, "us", None, "-", "-", None, note="no server")]
    import redis.asyncio as aioredis

    loop = asyncio.new_event_loop()
    with _redis_server.redis_server(binary, directory) as url:
        opts = {"url": url, "table_name": "bench-async", "ttl_margin_ms": 3_600_000}
        native = AsyncSessionManager("redis", opts, cleanup_interval=0, clock=clock)
        threaded = AsyncSessionManager("redis", opts, cleanup_interval=0, clock=clock)
        threaded._natives = {}  # the worker-thread path of a backend without async hooks
        count = max(sizes.sessions // 10, 200)
        try:
            ids = [native.sync.create(timeout_ms=None).id for _ in range(count)]
            by_id = {i: native.sync.peek(i) for i in ids}
            floor = _RawFloor(
                aioredis,
                url,
                {i: native.sync.backend.session_key(i) for i in ids},
                {i: encode_session(by_id[i]) for i in ids},
            )
            rows = _redis_measure(loop, native, threaded, floor, ids, by_id, sizes)
            return rows + _redis_tasks(loop, native, threaded, floor, ids, sizes)
        finally:
            loop.run_until_complete(native.aclose())
            loop.run_until_complete(threaded.aclose())
            loop.close()


@attrs.frozen
class _RawFloor:
    """What the redis rows are measured against: raw ``redis.asyncio`` on the same server,
    ``GET`` of each session's key and ``SET ... PX`` of its record under a key beside it."""

    aioredis: Any
    url: str
    keys: dict[str, str]
    values: dict[str, bytes]
    ttl: int = 3_600_000

    def client(self, **options: Any) -> Any:
        return self.aioredis.Redis.from_url(self.url, **options)


def _redis_measure(
    loop: asyncio.AbstractEventLoop,
    native: AsyncSessionManager,
    threaded: AsyncSessionManager,
    floor: _RawFloor,
    ids: list[str],
    by_id: dict[str, Any],
    sizes: Sizes,
) -> list[_bench.Figure]:
    """Each native operation against its raw redis.asyncio floor in alternating rounds (the
    row holds the median of the rounds' ratios); the worker-thread path against the native
    one the same way."""
    repeats = 2 * sizes.repeats + 1
    keys, values = floor.keys, floor.values

    async def measure_all() -> tuple[dict[str, _rounds.Rounds], dict[str, _rounds.Rounds] | None]:
        raw = floor.client()
        try:
            await raw.get(keys[ids[0]])  # connected before the first round
            await native.count()
            found = {
                "fetch": await _rounds.arounds(
                    native.fetch, lambda i: raw.get(keys[i]), ids, repeats=repeats
                ),
                "store": await _rounds.arounds(
                    lambda i: native.store(by_id[i]),
                    lambda i: raw.set(keys[i] + ":raw", values[i], px=floor.ttl),
                    ids,
                    repeats=repeats,
                ),
                "thread fetch": await _rounds.arounds(
                    threaded.fetch, native.fetch, ids, repeats=sizes.repeats
                ),
                "thread store": await _rounds.arounds(
                    lambda i: threaded.store(by_id[i]),
                    lambda i: native.store(by_id[i]),
                    ids,
                    repeats=sizes.repeats,
                ),
            }
            peer = await _async_peers.redis_rounds(floor.url, native, by_id, ids, repeats)
            if peer is None:
                return found, None
            await peer[1]()
            return found, peer[0]
        finally:
            await raw.aclose()

    found, peer = loop.run_until_complete(measure_all())
    sync = native.sync
    sync_us = {
        "fetch": _sync_us(sync.fetch, ids, sizes.repeats),
        "store": _sync_us(lambda i: sync.store(by_id[i]), ids, sizes.repeats),
    }
    rows: list[_bench.Figure] = []
    for op, raw_name in (("fetch", "raw GET"), ("store", "raw SET ... PX")):
        rows.append(
            _rounds.ratio_figure(
                f"redis async {op} (native, redis.asyncio)",
                found[op],
                f"{raw_name} redis.asyncio",
                ratio=REDIS_RATIO,
            )
        )
        rows.append(
            _rounds.ratio_figure(
                f"redis async {op} (worker thread)",
                found[f"thread {op}"],
                "native path",
                note=f"sync manager in the same run: {sync_us[op]:.1f} us",
            )
        )
    return rows + _async_peers.redis_rows(peer, by_id)


def _sync_us(call: Callable[[str], object], ids: list[str], repeats: int) -> float:
    """Median µs per sync ``call`` over ``ids``."""
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        for session_id in ids:
            call(session_id)
        timings.append((time.perf_counter() - began) / len(ids) * 1e6)
    return statistics.median(timings)


def _redis_tasks(
    loop: asyncio.AbstractEventLoop,
    native: AsyncSessionManager,
    threaded: AsyncSessionManager,
    floor: _RawFloor,
    ids: list[str],
    sizes: Sizes,
) -> list[_bench.Figure]:
    """100 tasks of fetch+store: native against raw redis.asyncio GET+SET, the worker-thread
    path against native, round by round (the rows hold the median of the rounds' ratios)."""
    tasks, n = sizes.tasks, sizes.pairs_per_task
    keys, values = floor.keys, floor.values

    def raw_pairs() -> float:
        raw = floor.client(max_connections=tasks)

        async def worker(k: int) -> None:
            for i in range(n):
                session_id = ids[(k * n + i) % len(ids)]
                await raw.get(keys[session_id])
                await raw.set(keys[session_id] + ":raw", values[session_id], px=floor.ttl)

        return _per_second(worker, tasks, n, raw.aclose, loop=loop)

    by_id = {i: native.sync.peek(i) for i in ids}
    peer = _async_peers.redis_tasks_peer(floor.url, by_id, ids, tasks, n, loop)
    runs: dict[str, list[float]] = {"raw": [], "native": [], "thread": [], "peer": []}
    for _ in range(2 * sizes.repeats + 1):
        runs["raw"].append(raw_pairs())
        runs["native"].append(_pairs_per_second(native, ids, tasks, n, loop=loop))
        runs["thread"].append(_pairs_per_second(threaded, ids, tasks, n, loop=loop))
        if peer is not None:
            runs["peer"].append(peer())
    rows: list[_bench.Figure] = [
        _rounds.ratio_figure(
            f"redis {tasks} tasks fetch+store, native (pairs/s)",
            _rounds.Rounds(runs["native"], runs["raw"]),
            "raw redis.asyncio GET+SET",
            ratio=REDIS_TASKS_SHARE,
            at_least=True,
            unit="/s",
        ),
        _rounds.ratio_figure(
            f"redis {tasks} tasks fetch+store, worker thread (pairs/s)",
            _rounds.Rounds(runs["thread"], runs["native"]),
            "native path",
            unit="/s",
        ),
    ]
    if peer is not None:
        rows.append(
            _rounds.ratio_figure(
                f"redis {tasks} tasks fetch+store, native vs py-key-value RedisStore (pairs/s)",
                _rounds.Rounds(runs["native"], runs["peer"]),
                "RedisStore get+put",
                ratio=1.0,
                at_least=True,
                unit="/s",
            )
        )
    return rows


def main() -> int:
    return _bench.main(
        __doc__,
        "async",
        measure,
        quick_help="fewer sessions and repeats (a smoke run)",
        digits={"us": 2, "/s": 0},
    )


if __name__ == "__main__":
    sys.exit(main())
