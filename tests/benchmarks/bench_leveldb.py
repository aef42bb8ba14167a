"""Benchmarks of the ``leveldb`` backend through :class:`~sessionkeeper.SessionManager`.

Run ``python tests/benchmarks/bench_leveldb.py [--quick] [--json PATH] [--strict]`` (``nox -s
bench`` runs it; pytest never does). Each figure is the median of several repeats, measured beside
a *floor*: plyvel itself doing the storage part of the same work, on the same database, keys and
records, in the same run. The ratio is what the backend adds (the codec, the expiry index, the
manager):

- fetch (random order) against a raw ``get`` of the same key;
- store replacing each session, with ``sync = false``, against a raw ``put`` of the same record;
- store with ``sync = true`` (every write fsynced) against a raw ``put(sync=True)``;
- touch (a fetch that writes back) against a raw ``get`` plus ``put``;
- cleanup of the expired sessions among all, against a full scan that decodes every record
  (the target: cheaper than that scan; it reads only the expired part of the index).

Every manager runs with ``cleanup_interval=0`` and an injected clock, so nothing runs behind the
measurements and the benchmark decides when a fetch writes a touch back. Targets are the disk
targets of DESIGN §5 (fetch <= 10 us, store in interval mode <= 20 us, durable store <= 1.5x the
raw fsynced write). ``--quick`` shrinks every size tenfold (a few seconds).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import platform
import random
import statistics
import sys
import tempfile
import time
import timeit
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from sessionkeeper import Session, SessionManager, __version__, decode_session, encode_session

try:
    import plyvel  # type: ignore[import-untyped]

    from sessionkeeper_leveldb import LevelDBBackend
    from sessionkeeper_leveldb import __version__ as leveldb_version
except ImportError:  # pragma: no cover - the plugin is optional
    sys.exit("bench_leveldb.py needs sessionkeeper-leveldb: pip install -e contrib/leveldb")

START = 1_700_000_000_000
TIMEOUT = 1_800_000  # the default timeout: 30 minutes
TOUCH_RESOLUTION = 1_000


class Clock:
    """An injected clock: integer ms that only the benchmark moves."""

    __slots__ = ("now",)

    def __init__(self, start: int = START) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


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


@attrs.frozen
class Figure:
    """One row of the report."""

    operation: str
    value: float
    unit: str  # "us" per operation or "ms" per sweep
    floor: float | None
    floor_name: str
    target: str  # human-readable
    passed: bool | None  # None: no target

    @property
    def ratio(self) -> float | None:
        return self.value / self.floor if self.floor else None


def manager(clock: Clock, directory: Path, *, sync: bool, table: str = "bench") -> SessionManager:
    return SessionManager(
        backend="leveldb",
        backend_opts={
            "db_path": str(directory / "sessions.leveldb"),
            "table_name": table,
            "sync": sync,
        },
        cleanup_interval=0,
        touch_resolution=TOUCH_RESOLUTION,
        default_timeout=TIMEOUT,
        clock=clock,
    )


def backend_of(sessions: SessionManager) -> LevelDBBackend:
    backend = sessions.backend
    assert isinstance(backend, LevelDBBackend)
    return backend


def paired(
    function: Callable[..., object],
    arguments: tuple[Sequence[Any], ...],
    floor: Callable[..., object],
    floor_arguments: tuple[Sequence[Any], ...],
    *,
    repeats: int,
    setup: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """Median µs per call of ``function`` mapped over ``arguments`` and of ``floor`` mapped over
    ``floor_arguments`` (as many calls), timed alternately repeat by repeat so that load from
    elsewhere on the machine weighs on both alike. GC is off while timing (``timeit``)."""
    count = len(arguments[0])
    assert len(floor_arguments[0]) == count
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        if setup is not None:
            setup()
        for results, callable_, args in (
            (timings[0], function, arguments),
            (timings[1], floor, floor_arguments),
        ):

            def run(callable_: Callable[..., object] = callable_, args: Any = args) -> None:
                deque(map(callable_, *args), 0)

            results.append(timeit.Timer(run).timeit(number=1) / count * 1e6)
    return statistics.median(timings[0]), statistics.median(timings[1])


def _timed(
    operation: str,
    value: float,
    floor: float,
    floor_name: str,
    *,
    absolute: float | None = None,
    ratio: float | None = None,
) -> Figure:
    parts, passed = [], None
    if absolute is not None:
        parts.append(f"<= {absolute:g} us")
        passed = value <= absolute
    if ratio is not None:
        parts.append(f"<= {ratio:g}x floor")
        passed = bool(passed is not False and value <= ratio * floor)
    return Figure(operation, value, "us", floor, floor_name, ", ".join(parts) or "-", passed)


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

        fetch, floor = paired(sessions.fetch, (ids,), get, (raw_keys,), repeats=repeats)
        figures.append(_timed("fetch, random", fetch, floor, "plyvel get", absolute=10.0))

        # The floor puts the same record under the same key.
        store, floor = paired(
            sessions.store, (shuffled,), put, (raw_keys, records), repeats=repeats
        )
        figures.append(
            _timed("store (sync off), random", store, floor, "plyvel put", absolute=20.0)
        )

        def later() -> None:  # every fetch now moves last_accessed by more than the resolution
            clock.now += TOUCH_RESOLUTION + 1

        # The floor reads the session and writes a record of the same size, beside the table
        # (writing over the table's records would undo the touches the backend measured).
        shadow_keys = [b"floor\0" + key for key in raw_keys]

        def raw_touch(key: bytes, shadow: bytes, record: bytes) -> None:
            get(key)
            put(shadow, record)

        touch, floor = paired(
            sessions.fetch,
            (ids,),
            raw_touch,
            (raw_keys, shadow_keys, records),
            repeats=repeats,
            setup=later,
        )
        assert sessions.peek(ids[0]).last_accessed == clock.now, "fetch did not write back"
        figures.append(_timed("touch (fetch writing back)", touch, floor, "plyvel get + put"))
    return figures


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
            (stored,),
            functools.partial(put, sync=True),
            (raw_keys, records),
            repeats=max(3, sizes.repeats // 2),
        )
    return _timed("store (sync on, fsync)", store, floor, "plyvel put(sync=True)", ratio=1.5)


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
        timings = []
        for attempt in range(sizes.cleanup_repeats):
            clock.now = START + TIMEOUT + expired * (attempt + 1)
            gc.collect()
            began = time.perf_counter()
            removed = sessions.cleanup_expired()
            timings.append((time.perf_counter() - began) * 1e3)
            assert removed == expired, f"cleanup removed {removed}, expected {expired}"

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
    value = statistics.median(timings)
    return Figure(
        f"cleanup of {expired:,} expired among {n:,}",
        value,
        "ms",
        statistics.median(floors),
        "full scan, decode only",
        "O(expired): < floor",
        value < statistics.median(floors),
    )


def report(figures: Sequence[Figure], sizes: Sizes, seconds: float) -> str:
    header = ("operation", "value", "floor", "ratio", "target", "result")
    rows = []
    for f in figures:
        digits = 2 if f.unit == "us" else 1
        value = f"{f.value:.{digits}f} {f.unit}"
        floor = f"{f.floor:.{digits}f} {f.unit} ({f.floor_name})" if f.floor else "-"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        result = {True: "pass", False: "MISS", None: "-"}[f.passed]
        rows.append((f.operation, value, floor, ratio, f.target, result))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        f"sessionkeeper {__version__}, leveldb backend {leveldb_version} (plyvel "
        f"{plyvel.__version__}, LevelDB {plyvel.__leveldb_version__}); Python "
        f"{platform.python_version()} on {platform.machine()}, {sizes.ops:,} sessions for "
        f"timings, medians of {sizes.repeats}; {seconds:.0f} s",
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a few seconds")
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="also write the figures as JSON (a directory gets leveldb.json)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-leveldb-") as scratch:
        directory = Path(scratch)
        figures = bench_operations(sizes, directory)
        figures.append(bench_sync_store(sizes, directory))
        figures.append(bench_cleanup(sizes, directory))
    seconds = time.perf_counter() - began
    print(report(figures, sizes, seconds))
    if args.json is not None:
        path = args.json / "leveldb.json" if args.json.is_dir() else args.json
        payload = {
            "benchmark": "leveldb",
            "sessionkeeper": __version__,
            "sessionkeeper_leveldb": leveldb_version,
            "plyvel": plyvel.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "sizes": attrs.asdict(sizes),
            "seconds": round(seconds, 1),
            "figures": [{**attrs.asdict(f), "ratio": f.ratio} for f in figures],
        }
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {path}")
    missed = [f.operation for f in figures if f.passed is False]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
