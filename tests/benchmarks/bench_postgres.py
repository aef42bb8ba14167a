"""Benchmarks of the ``postgres`` backend through :class:`~sessionkeeper.SessionManager`.

Run ``python tests/benchmarks/bench_postgres.py [--quick] [--json PATH] [--strict]`` (``nox -s
bench`` runs it; pytest never does). The script starts its own throwaway PostgreSQL cluster
(``contrib/postgres/tests/skpg_cluster.py``: the machine's PostgreSQL, else the ``pgserver``
wheel's) on a free loopback port, with the server's default durability (``fsync`` on) and the
backend's (``synchronous_commit = on``), and removes it at the end. Each figure is the median of
several repeats, measured beside a *floor*: raw psycopg 3 sending the very statements the
backend sends, on one autocommit connection over the same loopback TCP, to a second table made
``LIKE`` the backend's (same columns and indexes), with the same rows:

- fetch and peek against the primary-key ``SELECT``; a fetch that writes a touch back against
  that ``SELECT`` then the touch ``UPDATE … RETURNING``;
- store against the upsert; ``store_many`` in batches of 500 against the ``INSERT … SELECT FROM
  unnest`` of the same batches; delete against the ``DELETE``;
- cleanup of ``expired`` sessions among ``stored`` against the same batched
  ``DELETE … FOR UPDATE SKIP LOCKED`` statements sent in a loop.

The floor leaves out only what the backend adds: the pool, the codec and the manager. Reads
are shown twice: beside the bare ``SELECT`` (no target: the floor does not even decode what it
read), and beside the ``SELECT`` plus the core codec's validating decode, the least any psycopg
session store must do (target within 1.2x). Writes: within 1.2x of the same statement (DESIGN
§5, "postgres fetch / store / update"). ``--quick`` uses
fewer sessions and repeats (a few seconds); the full run loads 1,000,000 rows (COPY) and takes
a few minutes.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _bench
import attrs
import psycopg
from _bench import Clock, Figure, figure, paired

from sessionkeeper import (
    Session,
    SessionManager,
    __version__,
    decode_session,
    encode_session,
    generate_id,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "contrib" / "postgres" / "tests"))

from skpg_cluster import PostgresCluster

from sessionkeeper_postgres import CLEANUP_BATCH
from sessionkeeper_postgres import __version__ as backend_version

TIMEOUT = 1_800_000  # the default timeout: 30 minutes
TOUCH_RESOLUTION = 1_000
TABLE = "bench"
RAW = "bench_raw"
METADATA = {"user_id": "user_456", "roles": ["reader"], "n": 1}
BATCH_SIZE = 500  # sessions per store_many call
RATIO = 1.2


@attrs.frozen
class Sizes:
    """How big each benchmark is."""

    ops: int  # sessions for the per-operation timings
    stored: int  # rows in the table for the cleanup
    expired: int  # expired sessions per cleanup
    repeats: int  # repeats of each timing (the median is reported)


FULL = Sizes(ops=2_000, stored=1_000_000, expired=10_000, repeats=5)
QUICK = Sizes(ops=500, stored=50_000, expired=2_000, repeats=3)

Row = tuple[str, bytes, int, int | None]


def sessions(count: int, now: int, timeout: int | None = TIMEOUT) -> list[Session]:
    return [Session(generate_id(), now, now, timeout, METADATA) for _ in range(count)]


def row(session: Session) -> Row:
    timeout = session.timeout_ms
    deadline = None if timeout is None else session.last_accessed + timeout
    return (session.id, encode_session(session), session.last_accessed, deadline)


def raw_statement(manager: SessionManager, name: str) -> bytes:
    """The backend's statement ``name``, aimed at the raw table instead."""
    statement: bytes = getattr(manager.backend.statements, name)
    return statement.replace(f'"{TABLE}"'.encode(), f'"{RAW}"'.encode())


def bench_operations(manager: SessionManager, raw: Any, clock: Clock, sizes: Sizes) -> list[Figure]:
    """Each operation and its floor mapped over the same sessions (two tables, same rows)."""
    stored = sessions(sizes.ops, clock.now)
    rows = [row(s) for s in stored]
    store_sql, fetch_sql, touch_sql, delete_sql, many_sql = (
        raw_statement(manager, name) for name in ("store", "fetch", "touch", "delete", "store_many")
    )
    execute = raw.execute
    figures: list[Figure] = []
    repeats = sizes.repeats

    def raw_store(r: Row) -> object:
        return execute(store_sql, r)

    def raw_fetch(r: Row) -> object:
        return execute(fetch_sql, (r[0],)).fetchone()

    def raw_fetch_touch(r: Row) -> object:
        execute(fetch_sql, (r[0],)).fetchone()
        return execute(touch_sql, {"at": clock.now, "id": r[0]}).fetchone()

    def raw_delete(r: Row) -> object:
        return execute(delete_sql, (r[0],))

    store, fetch, peek = manager.store, manager.fetch, manager.peek
    value, floor = paired(store, raw_store, stored, floor_arguments=(rows,), repeats=repeats)
    figures.append(figure("store", value, floor, "raw upsert", ratio=RATIO))
    batches = [stored[i : i + BATCH_SIZE] for i in range(0, len(stored), BATCH_SIZE)]
    raw_batches = [
        tuple(list(column) for column in zip(*map(row, batch), strict=True)) for batch in batches
    ]

    def raw_many(columns: tuple[list[Any], ...]) -> object:
        return execute(many_sql, columns)

    value, floor = paired(
        manager.store_many, raw_many, batches, floor_arguments=(raw_batches,), repeats=repeats
    )
    per_session = len(batches) / len(stored)
    figures.append(
        figure(f"store_many, batches of {BATCH_SIZE} (per session)", value * per_session,
               floor * per_session, "raw INSERT ... unnest", ratio=RATIO)
    )  # fmt: skip
    ids = [s.id for s in stored]
    value, floor = paired(fetch, raw_fetch, ids, floor_arguments=(rows,), repeats=repeats)
    figures.append(figure("fetch (no write-back)", value, floor, "raw SELECT"))
    value, floor = paired(peek, raw_fetch, ids, floor_arguments=(rows,), repeats=repeats)
    figures.append(figure("peek", value, floor, "raw SELECT"))

    def raw_fetch_decode(r: Row) -> object:
        record, last_accessed = execute(fetch_sql, (r[0],)).fetchone()
        return decode_session(record).touched(last_accessed)

    value, floor = paired(fetch, raw_fetch_decode, ids, floor_arguments=(rows,), repeats=repeats)
    figures.append(
        figure("fetch (no write-back)", value, floor, "raw SELECT + decode", ratio=RATIO)
    )

    def later() -> None:
        clock.now += TOUCH_RESOLUTION + 1

    value, floor = paired(
        fetch, raw_fetch_touch, ids, floor_arguments=(rows,), repeats=repeats, setup=later
    )
    figures.append(
        figure("fetch writing a touch back", value, floor, "raw SELECT + UPDATE", ratio=RATIO)
    )
    value, floor = paired(manager.delete, raw_delete, ids, floor_arguments=(rows,), repeats=1)
    figures.append(figure("delete", value, floor, "raw DELETE", ratio=RATIO))
    return figures


def copy_rows(conn: Any, table: str, rows: Sequence[Row]) -> None:
    """Load ``rows`` into ``table`` with one COPY."""
    with (
        conn.cursor() as cursor,
        cursor.copy(
            f"COPY {table} (id, record, last_accessed, deadline) FROM STDIN"  # type: ignore[arg-type]
        ) as copy,
    ):
        for values in rows:
            copy.write_row(values)


def once(function: Callable[[], object]) -> float:
    """Milliseconds one call of ``function`` takes."""
    began = time.perf_counter()
    function()
    return (time.perf_counter() - began) * 1e3


def bench_cleanup(manager: SessionManager, raw: Any, clock: Clock, sizes: Sizes) -> list[Figure]:
    """Cleanup of ``expired`` among ``stored``: the backend's table against the raw table."""
    for table in (TABLE, RAW):
        raw.execute(f"TRUNCATE {table}")  # type: ignore[arg-type]
    now = clock.now
    template = encode_session(Session("x" * 43, now, now, TIMEOUT, METADATA))
    live = [
        (generate_id(), template, now, now + TIMEOUT) for _ in range(sizes.stored - sizes.expired)
    ]
    for table in (TABLE, RAW):
        copy_rows(raw, table, live)
        raw.execute(f"VACUUM ANALYZE {table}")  # type: ignore[arg-type]
    cleanup_sql = raw_statement(manager, "cleanup")
    values, floors = [], []
    for _ in range(sizes.repeats):
        doomed = [(generate_id(), template, now, now + 1_000) for _ in range(sizes.expired)]
        for table in (TABLE, RAW):
            copy_rows(raw, table, doomed)
        clock.now = now + 2_000
        removed = 0

        def cleanup() -> None:
            nonlocal removed
            removed = manager.cleanup_expired()

        def raw_cleanup() -> None:
            while raw.execute(cleanup_sql, (now + 2_000, CLEANUP_BATCH)).rowcount == CLEANUP_BATCH:
                pass

        if len(values) % 2:  # alternate which goes first, as paired() does
            floors.append(once(raw_cleanup))
            values.append(once(cleanup))
        else:
            values.append(once(cleanup))
            floors.append(once(raw_cleanup))
        if removed != sizes.expired:
            raise SystemExit(f"cleanup removed {removed}, expected {sizes.expired}")
    clock.now = now
    return [
        figure(
            f"cleanup of {sizes.expired:,} expired among {sizes.stored:,}",
            statistics.median(values),
            statistics.median(floors),
            f"raw batched DELETE ({CLEANUP_BATCH} a statement)",
            unit="ms",
            ratio=RATIO,
        )
    ]


def measure(args: argparse.Namespace) -> _bench.Run:
    sizes = QUICK if args.quick else FULL
    cluster = PostgresCluster()
    try:
        cluster.start()
        clock = Clock()
        with (
            SessionManager(
                backend="postgres",
                backend_opts={"dsn": cluster.dsn(), "table_name": TABLE},
                cleanup_interval=0,
                touch_resolution=TOUCH_RESOLUTION,
                default_timeout=TIMEOUT,
                clock=clock,
            ) as manager,
            psycopg.connect(cluster.dsn(), autocommit=True) as raw,
        ):
            raw.execute(f"CREATE TABLE {RAW} (LIKE {TABLE} INCLUDING ALL)")  # type: ignore[arg-type]
            raw.execute("SET synchronous_commit = on")
            server = raw.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            figures = bench_operations(manager, raw, clock, sizes)
            figures += bench_cleanup(manager, raw, clock, sizes)
    finally:
        cluster.destroy()
    return _bench.Run(
        figures,
        sizes,
        title=f"sessionkeeper {__version__}, postgres backend {backend_version} (PostgreSQL "
        f"{server}, psycopg {psycopg.__version__}, fsync on, synchronous_commit on); Python "
        f"{platform.python_version()} on {platform.machine()}, {sizes.ops:,} sessions for "
        f"timings, medians of {sizes.repeats}",
        about={
            "sessionkeeper": __version__,
            "sessionkeeper_postgres": backend_version,
            "postgresql": server,
            "psycopg": psycopg.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _bench.arguments(__doc__, "postgres", quick_help="smaller sizes, a few seconds")
    return _bench.run(
        parser.parse_args(argv), "postgres", measure, digits={"ms": 2, "us": 1, "B": 1}
    )


if __name__ == "__main__":
    sys.exit(main())
