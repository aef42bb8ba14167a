"""Async vs sync per operation (issue 15): AsyncSessionManager beside SessionManager, one run.

Rows: memory fetch, store and update (every operation inline on the loop: target <= 1.2x the sync
path); sqlitedict interval mode (``auto_save > 0``) fetch, store and update, which it declares
inline (``sessionkeeper_inline_hooks``): the same 1.2x target, and fetch <= 2 us; a row that ran
in a worker thread says so in its name and note, and misses; 100 concurrent tasks doing
fetch+store against one task doing the same, on memory and sqlitedict.

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
import attrs

from sessionkeeper import AsyncSessionManager, __version__

#: Asyncio operations served from memory: at most this many times the sync path.
INLINE_RATIO = 1.2
#: sqlitedict's async fetch (issue 15), in µs.
SQLITEDICT_FETCH_US = 2.0


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


def _pairs_per_second(sessions: AsyncSessionManager, ids: list[str], tasks: int, n: int) -> float:
    """fetch+store pairs per second of ``tasks`` concurrent tasks, ``n`` pairs each."""

    async def worker(k: int) -> None:
        for i in range(n):
            session = await sessions.fetch(ids[(k * n + i) % len(ids)])
            await sessions.store(session)

    async def main() -> float:
        began = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(tasks)))
        return time.perf_counter() - began

    return tasks * n / asyncio.run(main())


def _backend_rows(
    name: str,
    opts: dict[str, Any],
    sizes: Sizes,
    clock: _bench.Clock,
    *,
    label: str | None = None,
    absolute: dict[str, float] | None = None,
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
            note = ""
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
    figures = _backend_rows("memory", {"table_name": "bench-async"}, sizes, clock)
    with tempfile.TemporaryDirectory() as tmp:
        opts = {"file_path": str(Path(tmp) / "s.sqlite"), "auto_save": 60_000}
        figures += _backend_rows(
            "sqlitedict",
            opts,
            sizes,
            clock,
            label="sqlitedict interval",
            absolute={"fetch": SQLITEDICT_FETCH_US},
        )
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


def main() -> int:
    args = _bench.arguments(
        __doc__, "async", quick_help="fewer sessions and repeats (a smoke run)"
    ).parse_args()
    return _bench.run(args, "async", measure, digits={"us": 2, "/s": 0})


if __name__ == "__main__":
    sys.exit(main())
