"""Benchmarks of the ``sqlitedict`` backend through :class:`~sessionkeeper.SessionManager`.

Run ``python tests/benchmarks/bench_sqlitedict.py [--quick] [--json PATH] [--dir DIR]`` (``nox -s
bench`` runs it; pytest never does). Every figure is a median, measured in the same run beside a
*floor* — what the storage underneath costs for the same work — and checked against the
performance targets of docs/backends.md:

- fetch (random order) against a raw ``sqlite3`` point select on the same table (target
  ≤ 10 µs, stretch ≤ 2 µs); plain ``sqlitedict`` get and ``diskcache`` get for comparison;
- store in interval mode, amortised over the stores *and* the flush that commits them, against a
  raw ``sqlite3`` batched upsert of the same records (target ≤ 20 µs);
- store in durable mode against a raw ``sqlite3`` commit with ``journal_mode=WAL`` and
  ``synchronous=FULL`` (target ≤ 1.5×). Disk flushes on a shared virtual disk vary by 10×
  from one second to the next, so the two are measured in alternating blocks, and the ratio is
  the median of the per-block ratios;
- durable stores per second from one thread and from eight threads at once (whose writes share
  commits: group commit), against raw fsynced commits per second, the three measured in turn
  (target: eight threads ≥ 1.5× one thread);
- plain ``sqlitedict`` set (``autocommit=False``, committed once at the end; and
  ``autocommit=True``) and ``diskcache`` set for comparison;
- reopening a file of 1,000,000 sessions (the load into the in-memory copy) against a raw full
  scan, and the memory the copy takes per session.

Every manager runs with ``cleanup_interval=0`` and an injected clock. ``--quick`` shrinks every
size tenfold (under a minute); the full run takes two to four minutes. Files go to a temporary
directory on the same disk as ``--dir`` (default: the system's temporary directory).
"""

from __future__ import annotations

import argparse
import functools
import gc
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _bench
import attrs
from _bench import START, TIMEOUT, Clock, NotedFigure
from _rounds import blocks

from sessionkeeper import Session, SessionManager, __version__
from sessionkeeper.backend import decode_session, encode_session
from sessionkeeper_sqlitedict import SessionDict, open_sqlitedict

try:
    import diskcache  # type: ignore[import-untyped]
except ImportError:
    diskcache = None

TABLE = "sessions"
CREATE = f'CREATE TABLE IF NOT EXISTS "{TABLE}" (key TEXT PRIMARY KEY, value BLOB)'
UPSERT = (
    f'INSERT INTO "{TABLE}" (key, value) VALUES (?, ?) '
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)
SELECT = f'SELECT value FROM "{TABLE}" WHERE key = ?'


@attrs.frozen
class Sizes:
    """How big each benchmark is."""

    ops: int  # sessions for fetch and interval-store timings
    durable: int  # durable commits per side (backend, raw) in total
    block: int  # durable commits per alternating block
    threaded: int  # durable stores per timing of 1 and of THREADS threads
    others: int  # operations for sqlitedict and diskcache
    reopen: int  # sessions in the file that is reopened
    repeats: int


FULL = Sizes(
    ops=100_000, durable=400, block=25, threaded=1_600, others=5_000, reopen=1_000_000, repeats=5
)
QUICK = Sizes(
    ops=10_000, durable=100, block=20, threaded=800, others=1_000, reopen=100_000, repeats=3
)
#: Writer threads of the concurrent durable-store figure.
THREADS = 8


def make_sessions(count: int, prefix: str = "") -> list[Session]:
    """Sessions with a 43-character id and a small metadata map, as ``create`` makes them."""
    rng = random.Random(7)
    return [
        Session(
            f"{prefix}{i:08d}-{rng.getrandbits(160):040x}"[:43],
            START,
            START,
            TIMEOUT,
            {"user_id": f"user_{i}"},
        )
        for i in range(count)
    ]


def manager(path: Path, clock: Clock, auto_save: int) -> SessionManager:
    return SessionManager(
        backend="sqlitedict",
        backend_opts={"file_path": str(path), "auto_save": auto_save},
        cleanup_interval=0,
        clock=clock,
    )


def raw_connection(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    connection.execute(CREATE)
    return connection


def per_op(function: Callable[[Any], object], items: Sequence[Any], repeats: int) -> float:
    """Median µs per call of ``function`` over ``items``."""
    results = []
    for _ in range(repeats):
        began = time.perf_counter()
        deque(map(function, items), 0)
        results.append((time.perf_counter() - began) / len(items) * 1e6)
    return statistics.median(results)


def _check(value: float, *, absolute: float | None = None) -> bool | None:
    return None if absolute is None else value <= absolute


# --- fetch ---------------------------------------------------------------------------------------


def bench_fetch(sizes: Sizes, directory: Path) -> list[NotedFigure]:
    """fetch through the manager vs a raw point select; sqlitedict and diskcache gets."""
    n, repeats = sizes.ops, sizes.repeats
    clock = Clock()
    path = directory / "fetch.sqlite"
    sessions = make_sessions(n)
    ids = [s.id for s in sessions]
    shuffled = ids[:]
    random.Random(42).shuffle(shuffled)
    with manager(path, clock, 600_000) as store:
        for session in sessions:
            store.store(session)
        store.backend.flush()
        fetch = per_op(store.fetch, shuffled, repeats)
        peek = per_op(store.peek, shuffled, repeats)
    reader = sqlite3.connect(path)
    try:
        execute = reader.execute

        def raw_select(key: str) -> object:
            return execute(SELECT, (key,)).fetchone()

        floor = per_op(raw_select, shuffled, repeats)

        def raw_select_decode(key: str) -> object:
            return decode_session(execute(SELECT, (key,)).fetchone()[0])

        floor_decoded = per_op(raw_select_decode, shuffled, repeats)
    finally:
        reader.close()
    figures = [
        NotedFigure(
            f"fetch, random over {n:,}",
            fetch,
            "us",
            floor,
            "sqlite3 point select",
            "<= 10 us (stretch 2 us)",
            fetch <= 10,
            "served from the in-memory copy",
        ),
        NotedFigure(
            f"peek, random over {n:,}", peek, "us", floor, "sqlite3 point select", "-", None
        ),
        NotedFigure(
            "sqlite3 point select + decode_session",
            floor_decoded,
            "us",
            floor,
            "sqlite3 point select",
            "-",
            None,
            "what a fetch without the copy would cost",
        ),
    ]
    others = shuffled[: sizes.others]
    figures.append(_sqlitedict_get(path, others, repeats, floor))
    figures.append(_diskcache_get(directory, sessions[: sizes.others], repeats, floor))
    return figures


def _sqlitedict_get(path: Path, keys: Sequence[str], repeats: int, floor: float) -> NotedFigure:
    name = "plain sqlitedict get (+ decode_session)"
    # open_sqlitedict: a SqliteDict(flag="r", decode=decode_session) that cannot hang on close.
    with open_sqlitedict(path, TABLE) as plain:
        value = per_op(plain.__getitem__, keys, repeats)
    return NotedFigure(name, value, "us", floor, "sqlite3 point select", "-", None, "worker thread")


@contextmanager
def _cache(directory: Path) -> Iterator[Any]:
    folder = directory / "diskcache"
    cache = diskcache.Cache(str(folder))
    try:
        yield cache
    finally:
        cache.close()
        shutil.rmtree(folder, ignore_errors=True)


def _diskcache_get(
    directory: Path, sessions: Sequence[Session], repeats: int, floor: float
) -> NotedFigure:
    name = "diskcache get (+ decode_session)"
    if diskcache is None:
        return NotedFigure(
            name, None, "us", floor, "sqlite3 point select", "-", None, "not installed"
        )
    with _cache(directory) as cache:
        for session in sessions:
            cache.set(session.id, encode_session(session))
        get = cache.get

        def fetch(key: str) -> object:
            return decode_session(get(key))

        value = per_op(fetch, [s.id for s in sessions], repeats)
    return NotedFigure(name, value, "us", floor, "sqlite3 point select", "-", None)


# --- store, interval mode ----------------------------------------------------------------------


def bench_interval_store(sizes: Sizes, directory: Path) -> list[NotedFigure]:
    """Stores plus the flush that commits them, per session, vs a raw batched upsert."""
    n, repeats = sizes.ops, sizes.repeats
    clock = Clock()
    totals, calls, floors = [], [], []
    for attempt in range(repeats):
        sessions = make_sessions(n, prefix=f"{attempt}-")
        path = directory / f"interval-{attempt}.sqlite"
        with manager(path, clock, 600_000) as store:
            gc.collect()
            began = time.perf_counter()
            deque(map(store.store, sessions), 0)
            stored = time.perf_counter()
            committed = store.backend.flush()
            flushed = time.perf_counter()
            assert committed == n, f"flushed {committed}, expected {n}"
        calls.append((stored - began) / n * 1e6)
        totals.append((flushed - began) / n * 1e6)
        raw_path = directory / f"raw-batch-{attempt}.sqlite"
        connection = raw_connection(raw_path)
        try:
            gc.collect()
            began = time.perf_counter()
            records = [(s.id, encode_session(s)) for s in sessions]
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(UPSERT, records)
            connection.execute("COMMIT")
            floors.append((time.perf_counter() - began) / n * 1e6)
        finally:
            connection.close()
    total, call, floor = (statistics.median(x) for x in (totals, calls, floors))
    figures = [
        NotedFigure(
            "store, interval mode, amortised (store + flush)",
            total,
            "us",
            floor,
            "sqlite3 batched upsert (+ encode)",
            "<= 20 us",
            total <= 20,
        ),
        NotedFigure(
            "store, interval mode, the call alone",
            call,
            "us",
            floor,
            "sqlite3 batched upsert (+ encode)",
            "-",
            None,
            "what the caller waits for",
        ),
    ]
    figures += _sqlitedict_set(directory, sizes, floor)
    figures.append(_diskcache_set(directory, sizes, floor))
    return figures


def _sqlitedict_set(directory: Path, sizes: Sizes, floor: float) -> list[NotedFigure]:
    names = ("plain sqlitedict set, one commit at the end", "plain sqlitedict set, autocommit")
    sessions = make_sessions(sizes.others, prefix="sd-")
    figures = []
    for name, autocommit in zip(names, (False, True), strict=True):
        results = []
        for attempt in range(sizes.repeats):
            path = directory / f"sqlitedict-{autocommit}-{attempt}.sqlite"
            with SessionDict(  # a SqliteDict whose close cannot hang
                str(path),
                tablename=TABLE,
                autocommit=autocommit,
                journal_mode="WAL",
                encode=encode_session,
                outer_stack=False,
            ) as plain:
                began = time.perf_counter()
                for session in sessions:
                    plain[session.id] = session
                plain.commit()
                results.append((time.perf_counter() - began) / len(sessions) * 1e6)
        note = "synchronous=OFF: no fsync" + ("" if autocommit else "; amortised")
        figures.append(
            NotedFigure(
                name,
                statistics.median(results),
                "us",
                floor,
                "sqlite3 batched upsert (+ encode)",
                "-",
                None,
                note,
            )
        )
    return figures


def _diskcache_set(directory: Path, sizes: Sizes, floor: float) -> NotedFigure:
    name = "diskcache set (+ encode_session)"
    if diskcache is None:
        return NotedFigure(name, None, "us", floor, "-", "-", None, "not installed")
    sessions = make_sessions(sizes.others, prefix="dc-")
    with _cache(directory) as cache:
        put = cache.set

        def store(session: Session) -> object:
            return put(session.id, encode_session(session))

        value = per_op(store, sessions, sizes.repeats)
    return NotedFigure(
        name,
        value,
        "us",
        floor,
        "sqlite3 batched upsert (+ encode)",
        "-",
        None,
        "a commit per set, synchronous=NORMAL",
    )


# --- store, durable mode -----------------------------------------------------------------------


def bench_durable_store(sizes: Sizes, directory: Path) -> list[NotedFigure]:
    """Durable stores vs raw fsynced commits, in alternating blocks (see the module docstring)."""
    clock = Clock()
    sessions = make_sessions(sizes.durable, prefix="d-")
    raw_records = [(s.id, encode_session(s)) for s in make_sessions(sizes.durable, prefix="r-")]
    store = manager(directory / "durable.sqlite", clock, 0)
    connection = raw_connection(directory / "raw-durable.sqlite")
    try:
        # Warm both files up to their working size (a growing WAL costs a journal commit).
        for session in make_sessions(sizes.block * 4, prefix="warm-"):
            store.store(session)
            connection.execute(UPSERT, (session.id, encode_session(session)))
        raw_store = functools.partial(connection.execute, UPSERT)
        timed = blocks(store.store, raw_store, sessions, raw_records, block=sizes.block)
    finally:
        store.close()
        connection.close()
    ratio = timed.ratio
    figures = [
        NotedFigure(
            "store, durable mode (WAL, synchronous=FULL)",
            timed.value,
            "us",
            timed.floor,
            "sqlite3 WAL+FULL commit",
            "<= 1.5x floor",
            ratio <= 1.5,
            f"median of per-block ratios {ratio:.2f}x; "
            f"p90 {_p90(timed.values):.0f} us vs {_p90(timed.floors):.0f} us",
        )
    ]
    return figures


def bench_durable_threads(sizes: Sizes, directory: Path) -> list[NotedFigure]:
    """Durable stores per second from 1 and from ``THREADS`` threads vs raw fsynced commits.

    Each side has a file of its own (the threads' commits carry more pages, so their file's
    WAL grows and is checkpointed at its own pace), and the three are timed in turn.
    """
    clock = Clock()
    single = manager(directory / "durable-1.sqlite", clock, 0)
    shared = manager(directory / f"durable-{THREADS}.sqlite", clock, 0)
    connection = raw_connection(directory / "raw-durable-threads.sqlite")
    alone: list[float] = []
    together: list[float] = []
    raws: list[float] = []
    commits: list[float] = []
    try:
        for session in make_sessions(sizes.block * 4, prefix="warm-"):
            single.store(session)
            shared.store(session)
            connection.execute(UPSERT, (session.id, encode_session(session)))
        execute = connection.execute
        for attempt in range(sizes.repeats):
            sessions = make_sessions(sizes.threaded, prefix=f"{attempt}-1-")
            alone.append(_stores_per_second(single, sessions, 1))
            sessions = make_sessions(sizes.threaded, prefix=f"{attempt}-{THREADS}-")
            before = shared.backend.sessionkeeper_stats()["commits"]
            together.append(_stores_per_second(shared, sessions, THREADS))
            commits.append(shared.backend.sessionkeeper_stats()["commits"] - before)
            records = [
                (s.id, encode_session(s))
                for s in make_sessions(sizes.threaded, prefix=f"{attempt}-raw-")
            ]
            began = time.perf_counter()
            for record in records:
                execute(UPSERT, record)
            raws.append(len(records) / (time.perf_counter() - began))
    finally:
        single.close()
        shared.close()
        connection.close()
    one, many, floor = (statistics.median(x) for x in (alone, together, raws))
    per_commit = sizes.threaded / statistics.median(commits)
    return [
        NotedFigure(
            "durable stores per second, 1 thread",
            one,
            "/s",
            floor,
            "sqlite3 WAL+FULL commits per second",
            "-",
            None,
            "one commit per store",
        ),
        NotedFigure(
            f"durable stores per second, {THREADS} threads",
            many,
            "/s",
            floor,
            "sqlite3 WAL+FULL commits per second",
            ">= 1.5x 1 thread",
            many >= 1.5 * one,
            f"{many / one:.2f}x 1 thread; group commit: {per_commit:.1f} stores per commit",
        ),
    ]


def _stores_per_second(store: SessionManager, sessions: Sequence[Session], threads: int) -> float:
    """Store ``sessions`` from ``threads`` threads at once (each its share); stores per second."""

    shares = [sessions[t::threads] for t in range(threads)]

    def write(number: int) -> None:
        deque(map(store.store, shares[number]), 0)

    began = _bench.run_together(write, threads)
    return len(sessions) / (time.perf_counter() - began)


def _p90(values: Sequence[float]) -> float:
    return sorted(values)[int(len(values) * 0.9)]


# --- reopen ------------------------------------------------------------------------------------


def bench_reopen(sizes: Sizes, directory: Path) -> list[NotedFigure]:
    """Open (load into the copy) a file of ``sizes.reopen`` sessions; memory of the copy."""
    n = sizes.reopen
    path = directory / "reopen.sqlite"
    connection = raw_connection(path, synchronous="OFF")
    try:
        connection.execute("BEGIN")
        batch = 50_000
        for start in range(0, n, batch):
            chunk = make_sessions(min(batch, n - start), prefix=f"{start:08d}-")
            connection.executemany(UPSERT, [(s.id, encode_session(s)) for s in chunk])
        connection.execute("COMMIT")
    finally:
        connection.close()
    size_mb = path.stat().st_size / 1e6
    clock = Clock()
    opens = []
    for _ in range(max(1, sizes.repeats - 2)):
        gc.collect()
        began = time.perf_counter()
        store = manager(path, clock, 600_000)
        opens.append(time.perf_counter() - began)
        assert store.count() == n
        store.close()
    scans = []
    for _ in range(max(1, sizes.repeats - 2)):
        reader = sqlite3.connect(path)
        began = time.perf_counter()
        count = sum(1 for _ in reader.execute(f'SELECT key, value FROM "{TABLE}"'))
        scans.append(time.perf_counter() - began)
        reader.close()
        assert count == n
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = manager(path, clock, 600_000)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    store.close()
    value = statistics.median(opens)
    return [
        NotedFigure(
            f"reopen a file of {n:,} sessions ({size_mb:.0f} MB)",
            value,
            "s",
            statistics.median(scans),
            "sqlite3 full scan (no decode)",
            "seconds, not minutes (<= 30 s)",
            value <= 30,
            "decode + validate every row, build the copy and the expiry index",
        ),
        NotedFigure(
            f"memory of the in-memory copy at {n:,}",
            used / n,
            "B",
            None,
            "-",
            "-",
            None,
            "per session: Session object, dict entry, index entry, id string",
        ),
    ]


# --- concurrent state (issue 14) -----------------------------------------------------------


def _bump(metadata: dict[str, Any]) -> dict[str, Any]:
    return {**metadata, "n": metadata.get("n", 0) + 1}


def bench_update(sizes: Sizes, directory: Path) -> list[NotedFigure]:
    """``update`` (atomic read-modify-write) against ``fetch`` + ``store`` of the same change,
    and ``store(if_version=)`` against ``store``, in the same run: interval mode (the call
    alone) and durable mode (alternating, each write a commit)."""
    clock = Clock()
    figures: list[NotedFigure] = []
    n, repeats = sizes.ops, sizes.repeats
    sessions = make_sessions(n, prefix="u-")
    ids = [s.id for s in sessions]
    with manager(directory / "update-interval.sqlite", clock, 600_000) as store:
        store.store_many(sessions)

        def fetch_store(session_id: str) -> object:
            current = store.fetch(session_id)
            return store.store(current.replace(metadata=_bump(current.metadata)))

        def update(session_id: str) -> object:
            return store.update(session_id, _bump)

        def conditional(session_id: str) -> object:
            current = store.peek(session_id)
            return store.store(current, if_version=current.version)

        def plain(session_id: str) -> object:
            return store.store(store.peek(session_id))

        pairs = [(per_op(update, ids, 1), per_op(fetch_store, ids, 1)) for _ in range(repeats)]
        conds = [(per_op(conditional, ids, 1), per_op(plain, ids, 1)) for _ in range(repeats)]
    value, floor = (statistics.median(x) for x in zip(*pairs, strict=True))
    ratio = value / floor
    figures.append(
        NotedFigure(
            "update, interval mode",
            value,
            "us",
            floor,
            "fetch + store (interval)",
            "<= 1.3x floor",
            ratio <= 1.3,
            f"{ratio:.2f}x",
        )
    )
    value, floor = (statistics.median(x) for x in zip(*conds, strict=True))
    figures.append(
        NotedFigure(
            "store(if_version=), interval mode (peek + store)",
            value,
            "us",
            floor,
            "peek + store (interval)",
            "-",
            None,
            f"{value / floor:.2f}x",
        )
    )
    durable = make_sessions(sizes.block, prefix="ud-")
    ours: list[float] = []
    theirs: list[float] = []
    with manager(directory / "update-durable.sqlite", clock, 0) as store:
        store.store_many(durable)
        for i in range(sizes.durable):
            session_id = durable[i % len(durable)].id
            began = time.perf_counter()
            store.update(session_id, _bump)
            middle = time.perf_counter()
            current = store.fetch(session_id)
            store.store(current.replace(metadata=_bump(current.metadata)))
            ended = time.perf_counter()
            ours.append((middle - began) * 1e6)
            theirs.append((ended - middle) * 1e6)
    value, floor = statistics.median(ours), statistics.median(theirs)
    figures.append(
        NotedFigure(
            "update, durable mode",
            value,
            "us",
            floor,
            "fetch + store (durable)",
            "<= 1.3x floor",
            value / floor <= 1.3,
            f"{value / floor:.2f}x, alternating",
        )
    )
    return figures


# --- the run ----------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> _bench.Run:
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench-sqlitedict-", dir=args.dir) as name:
        directory = Path(name)
        figures = (
            bench_fetch(sizes, directory)
            + bench_interval_store(sizes, directory)
            + bench_durable_store(sizes, directory)
            + bench_durable_threads(sizes, directory)
            + bench_update(sizes, directory)
            + bench_reopen(sizes, directory)
        )
    notes = []
    if diskcache is None:
        notes.append("diskcache: not installed (pip install diskcache to compare)")
    return _bench.Run(
        figures,
        sizes,
        title=f"sessionkeeper {__version__}, sqlitedict backend; "
        f"{_bench.platform_line(f'SQLite {sqlite3.sqlite_version}')}; medians of {sizes.repeats}",
        about=_bench.about(sqlite=sqlite3.sqlite_version),
        notes=notes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    def flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dir", type=Path, default=None, help="where to put the temporary files (a disk)"
        )

    return _bench.main(
        __doc__,
        "sqlitedict",
        measure,
        quick_help="sizes divided by ten",
        digits={"us": 2, "s": 2, "B": 0, "/s": 0},
        argv=argv,
        flags=flags,
    )


if __name__ == "__main__":
    sys.exit(main())
