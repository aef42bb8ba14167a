"""Benchmarks of the ``memory`` backend through :class:`~sessionkeeper.SessionManager`.

Run ``python tests/benchmarks/bench_memory.py [--quick] [--json PATH]`` (``nox -s bench`` runs it;
pytest never does). Each figure is the median of several repeats, measured beside a *floor* — the
least plain Python can do for the same work — and checked against the performance targets
(docs/backends.md, "Performance targets"):

- fetch (in order and in random order over 200,000 sessions) against a function doing the
  ``dict`` lookup plus the expiry check (with the same clock call);
- store against a function doing the ``dict`` set; create, touch (a fetch that writes back) and
  peek for reference;
- bytes per session at 1,000,000 sessions (tracemalloc) against a "dict of dicts";
- cleanup of 10,000 expired among 1,000,000 against a full scan;
- the concurrent-state operations of issue 14: ``update`` against ``fetch`` + ``store`` doing the
  same change (target <= 1.3x), ``store(if_version=)`` against ``store``, and ``list(owner=)`` of
  10 sessions among 1,000,000 against the same among 10,000 (target: independent of the store's
  size, <= 1.5x) and against a full scan.

Every manager runs with ``cleanup_interval=0`` and an injected clock, so nothing runs behind the
measurements and "now" is the same for the manager and its floor. ``--quick`` shrinks every size
tenfold and takes fewer repeats (under 30 s) and checks only the absolute targets (the ratio
targets are set for 200,000 sessions); the full run takes about a minute.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import timeit
import tracemalloc
from collections import deque
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

import _bench
import attrs
from _bench import (
    OWNED,
    START,
    TIMEOUT,
    Clock,
    Figure,
    cleanup_figure,
    figure,
    manager_settings,
    paired,
    time_cleanups,
    time_owner_lists,
    time_store_if,
    time_update,
    touch_due,
)

from sessionkeeper import Session, SessionManager, __version__, generate_id


@attrs.frozen
class Sizes:
    """How big each benchmark is."""

    ops: int  # sessions for the per-operation timings
    creates: int  # sessions created per repeat of the create timing
    memory: int  # sessions for the memory and cleanup figures
    expired: int  # expired sessions per cleanup
    repeats: int  # repeats of each timing (the median is reported)
    cleanup_repeats: int


FULL = Sizes(
    ops=200_000, creates=100_000, memory=1_000_000, expired=10_000, repeats=7, cleanup_repeats=5
)
QUICK = Sizes(
    ops=20_000, creates=10_000, memory=100_000, expired=1_000, repeats=5, cleanup_repeats=3
)


def manager(clock: Clock, table: str) -> SessionManager:
    return SessionManager(
        backend="memory", backend_opts={"table_name": table}, **manager_settings(clock)
    )


def fetch_floor(table: dict[str, Session], clock: Clock) -> Callable[[str], Session]:
    """The least a fetch can be in Python: the clock, one lookup and the expiry check."""
    get = table.get

    def fetch(session_id: str) -> Session:
        session = get(session_id)
        if session is None:
            raise KeyError(session_id)
        timeout = session.timeout_ms
        if timeout is not None and clock() - session.last_accessed > timeout:
            raise KeyError(session_id)
        return session

    return fetch


def store_floor(table: dict[str, Session]) -> Callable[[Session], None]:
    """The least a store can be in Python: one ``dict`` set."""

    def store(session: Session) -> None:
        table[session.id] = session

    return store


def bench_operations(sizes: Sizes) -> list[Figure]:
    """fetch, store, create, touch and peek over ``sizes.ops`` sessions."""
    n, repeats = sizes.ops, sizes.repeats
    clock = Clock()
    figures: list[Figure] = []
    with manager(clock, "bench-operations") as sessions:
        # All created at one instant, so that a fetch never has a touch to write back.
        ids = [sessions.create(metadata={"user_id": f"user_{i}"}).id for i in range(n)]
        shuffled = ids[:]
        random.Random(42).shuffle(shuffled)
        stored = [sessions.peek(sid) for sid in ids]
        table = {s.id: s for s in stored}
        floor_fetch, floor_store = fetch_floor(table, clock), store_floor(table)
        by_id = {s.id: s for s in stored}
        random_sessions = [by_id[sid] for sid in shuffled]

        for order, keys, objects in (
            ("in order", ids, stored),
            ("random", shuffled, random_sessions),
        ):
            fetch, floor = paired(sessions.fetch, floor_fetch, keys, repeats=repeats)
            # The ratio targets are set for random order over 200,000 sessions: a smaller table
            # fits in the CPU caches, which flatters the floor.
            ratios = order == "random" and sizes.ops >= FULL.ops
            figures.append(
                figure(
                    f"fetch, {order}",
                    fetch,
                    floor,
                    "lookup + expiry check",
                    absolute=1.0,
                    ratio=3.0 if ratios else None,
                    stretch=1.5 if ratios else None,
                )
            )
            store, floor = paired(sessions.store, floor_store, objects, repeats=repeats)
            figures.append(
                figure(
                    f"store, {order}",
                    store,
                    floor,
                    "dict set",
                    absolute=1.5,
                    ratio=5.0 if ratios else None,
                )
            )

        peek, floor = paired(sessions.peek, floor_fetch, shuffled, repeats=repeats)
        figures.append(figure("peek, random", peek, floor, "lookup + expiry check"))

        later = touch_due(clock)
        touch, floor = paired(sessions.fetch, floor_fetch, shuffled, repeats=repeats, setup=later)
        assert sessions.peek(shuffled[0]).last_accessed == clock.now, "fetch did not write back"
        figures.append(
            figure("touch (fetch writing back), random", touch, floor, "lookup + expiry check")
        )
        explicit, floor = paired(
            sessions.touch, floor_fetch, shuffled, repeats=repeats, setup=later
        )
        figures.append(figure("touch(), random", explicit, floor, "lookup + expiry check"))

    figures.append(bench_create(sizes))
    figures.extend(bench_atomic(sizes))
    return figures


def bench_atomic(sizes: Sizes) -> list[Figure]:
    """update against fetch + store, store(if_version=) against store, over ``sizes.ops``."""
    n, repeats = sizes.ops, sizes.repeats
    clock = Clock()
    figures: list[Figure] = []
    with manager(clock, "bench-atomic") as sessions:
        ids = [sessions.create(metadata={"user_id": f"user_{i}", "n": 0}).id for i in range(n)]
        random.Random(7).shuffle(ids)
        updated, floor = time_update(sessions, ids, repeats)
        figures.append(
            figure("update, random", updated, floor, "fetch + store, same change", ratio=1.3)
        )
        timed, floor = time_store_if(sessions, ids, repeats)
        figures.append(figure("store(if_version=), random", timed, floor, "store"))
    return figures


def bench_create(sizes: Sizes) -> Figure:
    """create() with metadata, each repeat into a fresh table, against building + dict set."""
    n = sizes.creates
    clock = Clock()
    metadata = [{"user_id": f"user_{i}"} for i in range(n)]
    timings, floors = [], []
    for attempt in range(sizes.repeats):
        with manager(clock, f"bench-create-{attempt}") as sessions:

            def create_all(sessions: SessionManager = sessions) -> None:
                deque(map(sessions.create, repeat(TIMEOUT, n), metadata), 0)

            timings.append(timeit.Timer(create_all).timeit(number=1) / n * 1e6)
        table: dict[str, Session] = {}

        def floor_create(md: dict[str, Any], table: dict[str, Session] = table) -> None:
            now = clock()
            session = Session(generate_id(), now, now, TIMEOUT, md)
            table[session.id] = session

        floor_timer = timeit.Timer(lambda: deque(map(floor_create, metadata), 0))
        floors.append(floor_timer.timeit(number=1) / n * 1e6)
        del table
    return figure(
        "create (with metadata)",
        statistics.median(timings),
        statistics.median(floors),
        "Session(...) + dict set",
    )


def traced(build: Callable[[], object]) -> tuple[object, int]:
    """Run ``build`` under tracemalloc; return what it built and the bytes still held."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        gc.collect()
        return built, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def bench_memory_and_cleanup(sizes: Sizes) -> list[Figure]:
    """Bytes per session at ``sizes.memory`` sessions, then cleanup among them."""
    n = sizes.memory
    clock = Clock()

    def fill() -> SessionManager:
        sessions = manager(clock, "bench-memory")
        create = sessions.create
        for i in range(n):
            clock.now += 1  # created over time: distinct timestamps, spread deadlines
            create(metadata={"user_id": f"user_{i}"})
        return sessions

    built, used = traced(fill)
    assert isinstance(built, SessionManager)
    sessions = built

    def fill_floor() -> dict[str, dict[str, Any]]:
        now = START
        table: dict[str, dict[str, Any]] = {}
        for i in range(n):
            now += 1
            sid = generate_id()
            table[sid] = {
                "id": sid,
                "created_at": now,
                "last_accessed": now,
                "timeout_ms": TIMEOUT,
                "metadata": {"user_id": f"user_{i}"},
            }
        return table

    floor_table, floor_used = traced(fill_floor)
    del floor_table
    figures = [
        Figure(
            f"memory per session at {n:,}",
            used / n,
            "B",
            floor_used / n,
            "dict of dicts",
            "<= 400 B",
            used / n <= 400,
        )
    ]
    try:
        figures.extend(bench_owner(sizes, sessions, clock))
        figures.append(bench_cleanup(sizes, sessions, clock))
    finally:
        sessions.close()
    return figures


def bench_owner(sizes: Sizes, sessions: SessionManager, clock: Clock) -> list[Figure]:
    """list(owner=) of 10 sessions among ``sizes.memory`` (the filled ``sessions``), against
    the same among 1/100 as many (independent of size) and against a full scan; then
    delete_owner removes the 10."""
    n, small = sizes.memory, sizes.memory // 100
    owner = "user-owner@example.com"
    for _ in range(OWNED):
        sessions.create(metadata={"user_id": owner}, owner=owner)
    with manager(clock, "bench-owner-small") as few:
        few.store_many(
            Session(generate_id(), clock.now, clock.now, TIMEOUT, {"user_id": f"user_{i}"})
            for i in range(small - OWNED)
        )
        for _ in range(OWNED):
            few.create(metadata={"user_id": owner}, owner=owner)
        large, base = time_owner_lists(sessions, few, owner, sizes.repeats)

    table = {s.id: s for s in sessions.iter_sessions(include_expired=True)}
    now = clock.now

    def full_scan() -> list[str]:
        return [
            sid
            for sid, s in table.items()
            if s.owner == owner
            and not (s.timeout_ms is not None and now - s.last_accessed > s.timeout_ms)
        ]

    assert len(full_scan()) == OWNED
    scans = []
    for _ in range(sizes.cleanup_repeats):
        gc.collect()
        began = time.perf_counter()
        full_scan()
        scans.append((time.perf_counter() - began) * 1e6)
    table.clear()
    assert sessions.delete_owner(owner) == OWNED
    return [
        figure(
            f"list(owner=) of {OWNED} among {n:,}",
            large,
            base,
            f"the same among {small:,}",
            ratio=1.5,
        ),
        figure(
            f"list(owner=) of {OWNED} among {n:,} vs a scan",
            large,
            statistics.median(scans),
            "full scan",
        ),
    ]


def bench_cleanup(sizes: Sizes, sessions: SessionManager, clock: Clock) -> Figure:
    """cleanup_expired() of ``sizes.expired`` among ``sizes.memory``, against a full scan."""
    n, expired = sizes.memory, sizes.expired
    # Session j (1..n) was last accessed at START + j; at START + TIMEOUT + e + 1 the first e
    # sessions are expired. Each repeat moves on by ``expired`` and sweeps exactly that many.
    timings = time_cleanups(
        sessions, clock, start=START + TIMEOUT + 1, expired=expired, repeats=sizes.cleanup_repeats
    )
    remaining = n - expired * sizes.cleanup_repeats
    table = {s.id: s for s in sessions.iter_sessions(include_expired=True)}
    assert len(table) == remaining

    def full_scan(table: dict[str, Session], now: int) -> int:
        gone = [
            sid
            for sid, s in table.items()
            if s.timeout_ms is not None and now - s.last_accessed > s.timeout_ms
        ]
        for sid in gone:
            del table[sid]
        return len(gone)

    floors = []
    now = clock.now + expired
    for _ in range(sizes.cleanup_repeats):
        copy = dict(table)
        gc.collect()
        began = time.perf_counter()
        removed = full_scan(copy, now)
        floors.append((time.perf_counter() - began) * 1e3)
        assert removed == expired
        del copy
    return cleanup_figure(expired, n, timings, floors, "full scan", limit_ms=20)


def measure(args: argparse.Namespace) -> _bench.Run:
    sizes = QUICK if args.quick else FULL
    figures = bench_operations(sizes) + bench_memory_and_cleanup(sizes)
    return _bench.Run(
        figures,
        sizes,
        title=f"sessionkeeper {__version__}, memory backend; {_bench.platform_line()}, "
        f"{sizes.ops:,} sessions for timings, medians of {sizes.repeats}",
        about=_bench.about(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return _bench.main(
        __doc__,
        "memory",
        measure,
        quick_help="smaller sizes, under 30 s",
        digits={"us": 3, "B": 1, "ms": 1},
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
