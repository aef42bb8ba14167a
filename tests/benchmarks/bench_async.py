"""Async vs sync per operation (issue 15): AsyncSessionManager beside SessionManager, one run.

Rows: memory fetch, store and update (every operation inline on the loop: target <= 1.2x the sync
path); sqlitedict interval mode (``auto_save > 0``) fetch, store and update, which it declares
inline (``sessionkeeper_inline_hooks``): the same 1.2x target, and fetch <= 2 us; a row that ran
in a worker thread says so in its name and note, and misses; 100 concurrent tasks doing
fetch+store against one task doing the same, on memory and sqlitedict.

The floor of every inline row is measured too: awaiting a coroutine that returns at once (what
``await sessions.fetch(...)`` costs before any work). The fetch rows say their ratio net of it.

sqlitedict durable mode (``auto_save = 0``): 100 concurrent tasks storing against one task
(target >= 3x: the worker threads' concurrent commits share one group commit).

redis (a ``redis-server`` of our own, when one is found): fetch and store awaited on
``redis.asyncio`` (the native path) against raw ``redis.asyncio`` GET and SET (target <= 1.15x),
the worker-thread path (what a backend without async hooks takes) and the sync manager; 100
concurrent tasks of fetch+store on both paths against raw ``redis.asyncio`` GET+SET (target:
>= 0.9x its pairs/s).

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

import _bench
import _redis_server
import attrs

from sessionkeeper import AsyncSessionManager, __version__

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


def _median_us(
    sync_call: Callable[[str], object],
    async_call: Callable[[str], Awaitable[object]],
    ids: list[str],
    repeats: int,
) -> tuple[float, float]:
    """Median µs per call of ``async_call`` (awaited in one coroutine, as a handler does) and of
    ``sync_call``, timed alternately."""

    async def run_async() -> float:
        began = time.perf_counter()
        for session_id in ids:
            await async_call(session_id)
        return time.perf_counter() - began

    loop = asyncio.new_event_loop()
    timings: tuple[list[float], list[float]] = ([], [])
    try:
        for _ in range(repeats):
            timings[0].append(loop.run_until_complete(run_async()) / len(ids) * 1e6)
            began = time.perf_counter()
            for session_id in ids:
                sync_call(session_id)
            timings[1].append((time.perf_counter() - began) / len(ids) * 1e6)
    finally:
        loop.close()
    return statistics.median(timings[0]), statistics.median(timings[1])


def _pairs_per_second(
    sessions: AsyncSessionManager, ids: list[str], tasks: int, n: int, *, fetch: bool = True
) -> float:
    """fetch+store pairs (stores alone without ``fetch``) per second of ``tasks`` concurrent
    tasks, ``n`` each."""

    async def worker(k: int) -> None:
        for i in range(n):
            session_id = ids[(k * n + i) % len(ids)]
            if fetch:
                await sessions.store(await sessions.fetch(session_id))
            else:
                await sessions.store(sessions.sync.peek(session_id))

    return _per_second(worker, tasks, n)


def _per_second(
    worker: Callable[[int], Awaitable[None]],
    tasks: int,
    n: int,
    after: Callable[[], Awaitable[object]] | None = None,
) -> float:
    """``tasks * n`` divided by the seconds ``tasks`` concurrent ``worker(k)`` take (then
    ``after()`` is awaited in the same loop)."""

    async def main() -> float:
        began = time.perf_counter()
        try:
            await asyncio.gather(*(worker(k) for k in range(tasks)))
            return time.perf_counter() - began
        finally:
            if after is not None:
                await after()

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
) -> list[_bench.Figure]:
    """The rows of one backend: each operation async against sync (target: :data:`INLINE_RATIO`,
    plus ``absolute`` µs per operation named there), then 100 tasks against one."""
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
            value, floor = _median_us(sync_call, async_call, ids, sizes.repeats)
            where = "inline" if operation in inline else "worker thread"
            row = _bench.figure(
                f"{label} async {operation} ({where})",
                value,
                floor,
                "sync manager",
                absolute=absolute.get(operation),
                ratio=INLINE_RATIO,
            )
            note = f"net of the await floor: {(value - await_us) / floor:.2f}x"
            if operation not in inline:
                note = (
                    f"{name} does not declare every hook of {operation} in "
                    "sessionkeeper_inline_hooks (it is served from memory)"
                )
            rows.append(_bench.NotedFigure(**attrs.asdict(row), note=note))
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
        )
        figures += _durable_rows(Path(tmp) / "durable.sqlite", sizes, clock)
        figures += _redis_rows(Path(tmp) / "redis", sizes, clock)
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
        one = _pairs_per_second(sessions, ids, 1, per_task * 5, fetch=False)
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
            note="store is not inline in durable mode: each task hops to a worker thread",
        )
    ]


def _redis_rows(directory: Path, sizes: Sizes, clock: _bench.Clock) -> list[_bench.Figure]:
    """redis: the native path against raw redis.asyncio, the worker-thread path and sync."""
    binary = _redis_server.find_binary()
    if binary is None:
        return [_bench.NotedFigure("redis", None, "us", None, "-", "-", None, note="no server")]
    import redis.asyncio as aioredis

    with _redis_server.redis_server(binary, directory) as url:
        opts = {"url": url, "table_name": "bench-async", "ttl_margin_ms": 3_600_000}
        native = AsyncSessionManager("redis", opts, cleanup_interval=0, clock=clock)
        threaded = AsyncSessionManager("redis", opts, cleanup_interval=0, clock=clock)
        threaded._natives = {}  # the worker-thread path of a backend without async hooks
        count = max(sizes.sessions // 10, 200)
        try:
            ids = [native.sync.create(timeout_ms=None).id for _ in range(count)]
            by_id = {i: native.sync.peek(i) for i in ids}
            keys = {i: native.sync.backend.session_key(i) for i in ids}
            values = {i: b"x" * 120 for i in ids}
            return _redis_measure(native, threaded, aioredis, url, ids, by_id, keys, values, sizes)
        finally:
            asyncio.run(native.aclose())
            asyncio.run(threaded.aclose())


def _redis_measure(
    native: AsyncSessionManager,
    threaded: AsyncSessionManager,
    aioredis: Any,
    url: str,
    ids: list[str],
    by_id: dict[str, Any],
    keys: dict[str, str],
    values: dict[str, bytes],
    sizes: Sizes,
) -> list[_bench.Figure]:
    repeats = sizes.repeats

    async def timed(call: Callable[[str], Awaitable[object]]) -> float:
        began = time.perf_counter()
        for session_id in ids:
            await call(session_id)
        return (time.perf_counter() - began) / len(ids) * 1e6

    async def measure_all() -> dict[str, list[float]]:
        raw = aioredis.Redis.from_url(url)
        calls: dict[str, Callable[[str], Awaitable[object]]] = {
            "raw GET": lambda i: raw.get(keys[i]),
            "raw SET": lambda i: raw.set(keys[i] + ":raw", values[i]),
            "native fetch": native.fetch,
            "native store": lambda i: native.store(by_id[i]),
            "thread fetch": threaded.fetch,
            "thread store": lambda i: threaded.store(by_id[i]),
        }
        found: dict[str, list[float]] = {name: [] for name in calls}
        try:
            for _ in range(repeats):
                for name, call in calls.items():  # alternating, repeat by repeat
                    found[name].append(await timed(call))
        finally:
            await raw.aclose()
        return found

    found = asyncio.run(measure_all())
    sync_us = {
        op: _median_us(call, call_async, ids, repeats)[0]
        for op, call, call_async in (
            ("fetch", native.sync.fetch, native.fetch),
            ("store", lambda i: native.sync.store(by_id[i]), lambda i: native.store(by_id[i])),
        )
    }
    us = {name: statistics.median(times) for name, times in found.items()}
    rows: list[_bench.Figure] = []
    for op, raw in (("fetch", "raw GET"), ("store", "raw SET")):
        rows.append(
            _bench.figure(
                f"redis async {op} (native, redis.asyncio)",
                us[f"native {op}"],
                us[raw],
                f"{raw} redis.asyncio",
                ratio=REDIS_RATIO,
            )
        )
        rows.append(
            _bench.NotedFigure(
                f"redis async {op} (worker thread)",
                us[f"thread {op}"],
                "us",
                us[f"native {op}"],
                "native path",
                "-",
                None,
                note=f"sync manager in the same run: {sync_us[op]:.1f} us",
            )
        )
    rows += _redis_tasks(native, threaded, aioredis, url, ids, by_id, keys, values, sizes)
    return rows


def _redis_tasks(
    native: AsyncSessionManager,
    threaded: AsyncSessionManager,
    aioredis: Any,
    url: str,
    ids: list[str],
    by_id: dict[str, Any],
    keys: dict[str, str],
    values: dict[str, bytes],
    sizes: Sizes,
) -> list[_bench.Figure]:
    tasks, n = sizes.tasks, sizes.pairs_per_task

    def raw_pairs() -> float:
        raw = aioredis.Redis.from_url(url, max_connections=tasks)

        async def worker(k: int) -> None:
            for i in range(n):
                session_id = ids[(k * n + i) % len(ids)]
                await raw.get(keys[session_id])
                await raw.set(keys[session_id] + ":raw", values[session_id])

        return _per_second(worker, tasks, n, raw.aclose)

    runs: dict[str, list[float]] = {"raw": [], "native": [], "thread": []}
    for _ in range(sizes.repeats):
        runs["raw"].append(raw_pairs())
        runs["native"].append(_pairs_per_second(native, ids, tasks, n))
        runs["thread"].append(_pairs_per_second(threaded, ids, tasks, n))
    pairs = {name: statistics.median(values_) for name, values_ in runs.items()}
    return [
        _bench.Figure(
            f"redis {tasks} tasks fetch+store, native (pairs/s)",
            pairs["native"],
            "/s",
            pairs["raw"],
            "raw redis.asyncio GET+SET",
            f">= {REDIS_TASKS_SHARE:g}x floor",
            pairs["native"] >= REDIS_TASKS_SHARE * pairs["raw"],
        ),
        _bench.Figure(
            f"redis {tasks} tasks fetch+store, worker thread (pairs/s)",
            pairs["thread"],
            "/s",
            pairs["native"],
            "native path",
            "-",
            None,
        ),
    ]


def main() -> int:
    args = _bench.arguments(
        __doc__, "async", quick_help="fewer sessions and repeats (a smoke run)"
    ).parse_args()
    return _bench.run(args, "async", measure, digits={"us": 2, "/s": 0})


if __name__ == "__main__":
    sys.exit(main())
