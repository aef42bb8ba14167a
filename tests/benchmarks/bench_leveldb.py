"""Benchmarks of the ``leveldb`` backend through :class:`~sessionkeeper.SessionManager`.

Run ``python tests/benchmarks/bench_leveldb.py [--quick] [--json PATH] [--strict]`` (``nox -s
bench`` runs it; pytest never does). Each figure is the median of several repeats, measured beside
a *floor*: plyvel itself doing the storage part of the same work, on the same database, keys and
records, in the same run. The ratio is what the backend adds (the codec, the expiry index, the
manager):

- fetch (random order) against a raw ``get`` of the same key;
- store replacing each session, with ``sync = false``, against a raw ``put`` of the same record;
- ``store_many`` of the same sessions in batches of 500 (one write batch each), per session,
  against ``store`` of each session of the same batches one by one;
- store with ``sync = true`` (every write fsynced) against a raw ``put(sync=True)``;
- touch (a fetch that writes back) against a raw ``get`` plus ``put``;
- cleanup of the expired sessions among all, against a full scan that decodes every record
  (the target: cheaper than that scan; it reads only the expired part of the index);
- the concurrent-state operations of issue 14 (sync off): ``update`` against the ``fetch`` +
  ``store`` doing the same change that it replaces (target <= 1.3x, as on memory and
  sqlitedict), ``store(if_version=)`` against ``store``, and ``list(owner=)`` of 10 sessions
  among all against the same among 1,000 (target: independent of the store's size, <= 1.5x;
  it reads only the owner's key range).

Every manager runs with ``cleanup_interval=0`` and an injected clock, so nothing runs behind the
measurements and the benchmark decides when a fetch writes a touch back. Targets are the disk
targets of docs/backends.md ("Performance targets": fetch <= 10 us, store in interval mode
<= 20 us, durable store <= 1.5x the raw fsynced write). ``--quick`` shrinks every size tenfold
(a few seconds).
"""

from __future__ import annotations

import argparse
import functools
import gc
import random
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

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

from sessionkeeper import Session, SessionManager, __version__
from sessionkeeper.backend import decode_session, encode_session

try:
    import plyvel  # type: ignore[import-untyped]

    from sessionkeeper_leveldb import LevelDBBackend
    from sessionkeeper_leveldb import __version__ as leveldb_version
except ImportError:  # pragma: no cover - the plugin is optional
    sys.exit("bench_leveldb.py needs sessionkeeper-leveldb: pip install -e contrib/leveldb")

BATCH_SIZE = 500  # sessions per store_many call


@attrs.frozen
class Sizes:
    """How big each benchmark is."""

    ops: int  # sessions for the per-operation timings
    sync_ops: int  # writes per repeat with fsync
    cleanup: int  # sessions stored for the cleanup figure
    expired: int  # of which expired per sweep
    repeats: int  # repeats of each timing (the median is reported)
    cleanup_repeats: int


FULL = Sizes(
    ops=200_000, sync_ops=2_000, cleanup=200_000, expired=10_000, repeats=7, cleanup_repeats=5
)
QUICK = Sizes(ops=20_000, sync_ops=300, cleanup=20_000, expired=1_000, repeats=5, cleanup_repeats=3)


def manager(clock: Clock, directory: Path, *, sync: bool, table: str = "bench") -> SessionManager:
    return SessionManager(
        backend="leveldb",
        backend_opts={
            "db_path": str(directory / "sessions.leveldb"),
            "table_name": table,
            "sync": sync,
        },
        **manager_settings(clock),
    )


def backend_of(sessions: SessionManager) -> LevelDBBackend:
    backend = sessions.backend
    assert isinstance(backend, LevelDBBackend)
    return backend


def make_sessions(count: int, clock: Clock) -> list[Session]:
    return [
        Session(f"s{i:09}-{'x' * 32}", clock.now, clock.now, TIMEOUT, {"user_id": f"user_{i}"})
        for i in range(count)
    ]


def bench_operations(sizes: Sizes, directory: Path) -> list[Figure]:
    """fetch, store and touch (sync off), over ``sizes.ops`` sessions, against raw plyvel."""
    n, repeats = sizes.ops, sizes.repeats
    clock = Clock()
    figures: list[Figure] = []
    with manager(clock, directory, sync=False) as sessions:
        stored = make_sessions(n, clock)
        for session in stored:
            sessions.store(session)
        backend = backend_of(sessions)
        db, keys = backend.db, backend.keys
        order = list(range(n))
        random.Random(42).shuffle(order)
        ids = [stored[i].id for i in order]
        shuffled = [stored[i] for i in order]
        raw_keys = [keys.session(sid) for sid in ids]
        records = [encode_session(s) for s in shuffled]
        get, put = db.get, db.put

        fetch, floor = paired(
            sessions.fetch, get, ids, floor_arguments=(raw_keys,), repeats=repeats
        )
        figures.append(figure("fetch, random", fetch, floor, "plyvel get", absolute=10.0))

        # The floor puts the same record under the same key.
        store, floor = paired(
            sessions.store, put, shuffled, floor_arguments=(raw_keys, records), repeats=repeats
        )
        figures.append(
            figure("store (sync off), random", store, floor, "plyvel put", absolute=20.0)
        )
        figures.append(bench_store_many(sessions, shuffled, repeats))

        # The floor reads the session and writes a record of the same size, beside the table
        # (writing over the table's records would undo the touches the backend measured).
        shadow_keys = [b"floor\0" + key for key in raw_keys]

        def raw_touch(key: bytes, shadow: bytes, record: bytes) -> None:
            get(key)
            put(shadow, record)

        touch, floor = paired(
            sessions.fetch,
            raw_touch,
            ids,
            floor_arguments=(raw_keys, shadow_keys, records),
            repeats=repeats,
            setup=touch_due(clock),
        )
        assert sessions.peek(ids[0]).last_accessed == clock.now, "fetch did not write back"
        figures.append(figure("touch (fetch writing back)", touch, floor, "plyvel get + put"))
    return figures


def bench_store_many(sessions: SessionManager, stored: list[Session], repeats: int) -> Figure:
    """``store_many`` of ``stored`` in batches of ``BATCH_SIZE``, per session, against ``store``
    of each session of the same batches (the two replace the same records alternately)."""
    batches = [stored[i : i + BATCH_SIZE] for i in range(0, len(stored), BATCH_SIZE)]
    store = sessions.store

    def one_by_one(batch: list[Session]) -> None:
        deque(map(store, batch), 0)

    many, floor = paired(sessions.store_many, one_by_one, batches, repeats=repeats)
    per_session = len(batches) / len(stored)  # paired() gives us per batch
    return figure(
        f"store_many (sync off), batches of {BATCH_SIZE}",
        many * per_session,
        floor * per_session,
        "store, one by one",
    )


def bench_sync_store(sizes: Sizes, directory: Path) -> Figure:
    """store with ``sync = true`` (fsync per write) against a raw ``put(sync=True)``."""
    clock = Clock()
    with manager(clock, directory, sync=True, table="sync") as sessions:
        stored = make_sessions(sizes.sync_ops, clock)
        backend = backend_of(sessions)
        put = backend.db.put
        raw_keys = [b"floor\0" + s.id.encode() for s in stored]
        records = [encode_session(s) for s in stored]
        store, floor = paired(
            sessions.store,
            functools.partial(put, sync=True),
            stored,
            floor_arguments=(raw_keys, records),
            repeats=max(3, sizes.repeats // 2),
        )
    return figure("store (sync on, fsync)", store, floor, "plyvel put(sync=True)", ratio=1.5)


def bench_cleanup(sizes: Sizes, directory: Path) -> Figure:
    """cleanup_expired() of ``sizes.expired`` among ``sizes.cleanup``, against a full scan."""
    n, expired = sizes.cleanup, sizes.expired
    clock = Clock()
    with manager(clock, directory, sync=False, table="cleanup") as sessions:
        for i in range(n):  # session i last accessed at START + i: they expire in order
            clock.now = START + i
            sessions.create(metadata={"user_id": f"user_{i}"})
        backend = backend_of(sessions)
        db, keys = backend.db, backend.keys
        timings = time_cleanups(
            sessions, clock, start=START + TIMEOUT, expired=expired, repeats=sizes.cleanup_repeats
        )

        def full_scan(now: int) -> int:
            """What a backend without an expiry index does: decode every record."""
            found = 0
            with db.iterator(start=keys.sessions, stop=keys.sessions_end) as records:
                for _key, record in records:
                    if decode_session(record).is_expired(now):
                        found += 1
            return found

        floors = []
        for _ in range(sizes.cleanup_repeats):
            gc.collect()
            began = time.perf_counter()
            full_scan(clock.now + expired)
            floors.append((time.perf_counter() - began) * 1e3)
    return cleanup_figure(expired, n, timings, floors, "full scan, decode only")


def bench_atomic(sizes: Sizes, directory: Path) -> list[Figure]:
    """update against fetch + store, store(if_version=) against store, over ``sizes.ops``
    sessions (sync off); then list(owner=) among them against a table of 1,000."""
    n, repeats = sizes.ops, sizes.repeats
    clock = Clock()
    figures: list[Figure] = []
    with manager(clock, directory, sync=False, table="atomic") as sessions:
        stored = [
            Session(s.id, s.created_at, s.last_accessed, s.timeout_ms, {**s.metadata, "n": 0})
            for s in make_sessions(n, clock)
        ]
        sessions.store_many(stored)
        ids = [s.id for s in stored]
        random.Random(7).shuffle(ids)
        updated, floor = time_update(sessions, ids, repeats)
        figures.append(
            figure("update (sync off), random", updated, floor, "fetch + store", ratio=1.3)
        )
        timed, floor = time_store_if(sessions, ids, repeats)
        figures.append(figure("store(if_version=) (sync off), random", timed, floor, "store"))

        with manager(clock, directory, sync=False, table="atomic-small") as small:
            small.store_many(make_sessions(1_000, clock))
            for table in (sessions, small):
                for _ in range(OWNED):
                    table.create(owner="owner-1")
            large_us, small_us = time_owner_lists(sessions, small, "owner-1", repeats)
        figures.append(
            figure(
                f"list(owner=) of {OWNED} among {n:,}",
                large_us,
                small_us,
                f"the same among {1_000 + OWNED:,}",
                ratio=1.5,
            )
        )
    return figures


def measure(args: argparse.Namespace) -> _bench.Run:
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench-leveldb-") as scratch:
        directory = Path(scratch)
        figures = bench_operations(sizes, directory)
        figures.append(bench_sync_store(sizes, directory))
        figures.append(bench_cleanup(sizes, directory))
        figures.extend(bench_atomic(sizes, directory))
    return _bench.Run(
        figures,
        sizes,
        title=f"sessionkeeper {__version__}, leveldb backend {leveldb_version} (plyvel "
        f"{plyvel.__version__}, LevelDB {plyvel.__leveldb_version__}); "
        f"{_bench.platform_line()}, {sizes.ops:,} sessions for timings, medians of "
        f"{sizes.repeats}",
        about=_bench.about(sessionkeeper_leveldb=leveldb_version, plyvel=plyvel.__version__),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return _bench.main(
        __doc__,
        "leveldb",
        measure,
        quick_help="smaller sizes, a few seconds",
        digits={"us": 2, "ms": 1},
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
