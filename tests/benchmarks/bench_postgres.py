"""Benchmarks of the ``postgres`` backend through :class:`~sessionkeeper.SessionManager`.

Run ``python tests/benchmarks/bench_postgres.py [--quick] [--durable] [--json PATH] [--strict]``
(``nox -s bench`` runs it; pytest never does). The script starts its own throwaway PostgreSQL
cluster (``contrib/postgres/tests/skpg_cluster.py``: the machine's PostgreSQL, else the
``pgserver`` wheel's) on a free loopback port and removes it at the end. Each figure is
measured beside a *floor*: raw psycopg 3 sending the very statements the backend sends, on one
autocommit connection over the same loopback TCP, through one cursor kept for the whole run
and reading binary results, as the backend does (the cheapest way psycopg sends a statement: a
new cursor per statement, what ``Connection.execute`` does, costs the client about as much as
decoding the record), to a second table made ``LIKE`` the backend's (same columns and indexes),
with the same rows:

- fetch and peek against the primary-key ``SELECT`` (no target: the floor does not even decode
  what it read), and fetch against that ``SELECT`` plus the core codec's validating decode, the
  least any psycopg session store must do; a fetch that writes a touch back against the
  ``SELECT`` and decode, then the touch ``UPDATE … RETURNING`` and the decode of the session it
  returns (the touch hook returns the session as stored: another host may have written it);
- store (on an atomic backend: the upsert that counts the version) against that upsert of the
  encoded session; ``store_many`` in batches of 500 against the ``INSERT … SELECT FROM unnest``
  of the same batches; delete against the ``DELETE``;
- ``update`` (issue 14: one read, then one conditional write) against the raw ``SELECT``,
  decode, new session, encode and the ``UPDATE … WHERE version = N AND <live>``, and against
  the manager's own ``fetch`` + ``store`` of the same change; ``store(if_version=)`` against
  ``store``; ``take`` against the raw ``DELETE … RETURNING`` plus decode;
- cleanup of ``expired`` sessions among ``stored`` against the same batched
  ``DELETE … FOR UPDATE SKIP LOCKED`` statements sent in a loop;
- through :class:`~sessionkeeper.AsyncSessionManager`: fetch, store and update on the native
  path (the backend's ``sessionkeeper_async_*`` hooks on psycopg's async pool) against raw
  psycopg's ``AsyncConnection`` sending the same statements (plus the decode, and for update
  the encode), and the thread path (the same manager made to send every operation to its
  worker threads) beside them; then ``tasks`` concurrent tasks fetching, native against raw
  psycopg's ``AsyncConnectionPool`` of as many connections, and against the native path with
  its connections not kept between calls (every call through the pool's ``getconn``).

Rounds: the machine's two cores are shared, and single timings of a round trip move by a third
either way from one second to the next. So each comparison runs many short rounds (a few hundred
calls a side), the backend and the floor back to back in each, the side going first alternating;
the figure is the median of the rounds' ratios (the value and floor columns are the medians of
each side), and the note gives the quartiles of those ratios: a target is met when the median
ratio is within it, and the quartiles say how far one run can be trusted.

The targets (issue 17): within 1.2x of the floor. The floor leaves out only what the
backend adds: the pool, the codec where the floor has none, and the manager. Beside them, when a
``redis-server`` is found (``sessionkeeper_redis.testing.find_redis_server``), the redis
backend's fetch, store, update and cleanup on the same machine, with the postgres figure as the
"floor" column (no target: a comparison, not a check).

Commits: by default both sides run with ``synchronous_commit = off``, so a write's figure is what
the client and the server do, not the disk's flush (``fsync`` stays on; the flush is the same
for the backend and the floor, and on a slow disk its milliseconds drown the difference being
measured). ``--durable`` runs with ``synchronous_commit = on`` (the backend's default).
``--quick`` uses fewer sessions and rounds (well under a minute); the full run loads 1,000,000
rows (COPY) and takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import timeit
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import _bench
import attrs
import psycopg
from _bench import TIMEOUT, Clock, Figure, figure, manager_settings, touch_due
from _redis_server import find_binary, redis_server
from _rounds import RatioFigure, Rounds, rounds

from sessionkeeper import AsyncSessionManager, Session, SessionManager, __version__, generate_id
from sessionkeeper.backend import decode_session, encode_session

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "contrib" / "postgres" / "tests"))

from skpg_cluster import PostgresCluster

from sessionkeeper_postgres import CLEANUP_BATCH
from sessionkeeper_postgres import __version__ as backend_version

TABLE = "bench"
RAW = "bench_raw"
METADATA = {"user_id": "user_456", "roles": ["reader"], "n": 1}
BATCH_SIZE = 500  # sessions per store_many call
RATIO = 1.2


@attrs.frozen
class Sizes:
    """How big each benchmark is."""

    ops: int  # sessions for the per-operation timings (calls per side in a round)
    stored: int  # rows in the table for the cleanup
    expired: int  # expired sessions per cleanup
    rounds: int  # rounds of each per-operation comparison (the median ratio is reported)
    cleanup_rounds: int  # rounds of the cleanup comparison


FULL = Sizes(ops=400, stored=1_000_000, expired=10_000, rounds=41, cleanup_rounds=15)
QUICK = Sizes(ops=200, stored=50_000, expired=2_000, rounds=11, cleanup_rounds=5)

Row = tuple[str, bytes, int, int | None]


def sessions(count: int, now: int, timeout: int | None = TIMEOUT) -> list[Session]:
    return [Session(generate_id(), now, now, timeout, METADATA) for _ in range(count)]


def row(session: Session) -> Row:
    timeout = session.timeout_ms
    deadline = None if timeout is None else session.last_accessed + timeout
    return (session.id, encode_session(session), session.last_accessed, deadline)


def params(session: Session, **extra: Any) -> dict[str, Any]:
    """The named parameters of a write of ``session`` (no absolute timeout, no owner here)."""
    timeout = session.timeout_ms
    return {
        "id": session.id,
        "record": encode_session(session),
        "last_accessed": session.last_accessed,
        "deadline": None if timeout is None else session.last_accessed + timeout,
        "absolute_deadline": None,
        "version": session.version,
        "owner": session.owner,
        **extra,
    }


def columns(batch: Sequence[Session]) -> tuple[list[Any], ...]:
    """The ``unnest`` arrays of ``store_many`` for ``batch``."""
    rows = [tuple(params(s).values()) for s in batch]
    return tuple(list(column) for column in zip(*rows, strict=True))


def add_one(metadata: dict[str, Any]) -> dict[str, Any]:
    return {**metadata, "n": metadata["n"] + 1}


def compared(
    operation: str,
    timed: Rounds,
    floor_name: str,
    *,
    unit: str = "us",
    per_call: float = 1.0,
    ratio: float | None = None,
) -> Figure:
    """The row of ``timed``: the median value and floor (times ``per_call``), the median of
    the rounds' ratios against ``ratio`` (no target when ``None``), and in the note the middle
    half of those ratios (quartiles) and the number of rounds."""
    ratios = sorted(timed.ratios)
    middle = statistics.median(ratios)
    low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    note = f"{len(ratios)} rounds, quartiles {low:.2f}-{high:.2f}x"
    return RatioFigure(
        operation,
        timed.value * per_call,
        unit,
        timed.floor * per_call,
        floor_name,
        "-" if ratio is None else f"median ratio <= {ratio:g}x",
        None if ratio is None else middle <= ratio,
        note=note,
        median_ratio=middle,
    )


def raw_statement(manager: SessionManager, name: str) -> bytes:
    """The backend's statement ``name``, aimed at the raw table instead."""
    statement: bytes = getattr(manager.backend.statements, name)
    return statement.replace(f'"{TABLE}"'.encode(), f'"{RAW}"'.encode())


def bench_operations(manager: SessionManager, raw: Any, clock: Clock, sizes: Sizes) -> list[Figure]:
    """Each operation and its floor mapped over the same sessions (two tables, same rows)."""
    stored = sessions(sizes.ops, clock.now)
    rows = [row(s) for s in stored]
    counted_sql, fetch_sql, touch_sql, delete_sql, many_sql, if_version_sql, take_sql = (
        raw_statement(manager, name)
        for name in (
            "store_counted", "fetch", "touch", "delete", "store_many", "store_if_version", "take",
        )
    )  # fmt: skip
    cursor = raw.cursor(binary=True)  # as the backend reads
    execute = cursor.execute
    figures: list[Figure] = []
    count = sizes.rounds

    def raw_store(session: Session) -> object:
        return execute(counted_sql, params(session, now=clock.now)).fetchone()

    def raw_fetch(r: Row) -> object:
        return execute(fetch_sql, (r[0],)).fetchone()

    def raw_read(session_id: str) -> Session:
        record, last_accessed, version = execute(fetch_sql, (session_id,)).fetchone()
        session = decode_session(record)
        if version != session.version:
            session = session.with_version(version)
        return session.touched(last_accessed)

    def raw_fetch_touch(r: Row) -> object:
        raw_read(r[0])  # decoded, to decide that the touch is due
        record, last_accessed, version = execute(
            touch_sql, {"at": clock.now, "id": r[0]}
        ).fetchone()
        return decode_session(record).with_version(version).touched(last_accessed)

    def raw_delete(r: Row) -> object:
        return execute(delete_sql, (r[0],))

    store, fetch, peek = manager.store, manager.fetch, manager.peek
    timed = rounds(store, raw_store, stored, repeats=count, alternate=True)
    figures.append(compared("store", timed, "raw counting upsert", ratio=RATIO))
    batches = [stored[i : i + BATCH_SIZE] for i in range(0, len(stored), BATCH_SIZE)]
    raw_batches = [columns(batch) for batch in batches]

    def raw_many(arrays: tuple[list[Any], ...]) -> object:
        return execute(many_sql, arrays)

    timed = rounds(manager.store_many, raw_many, batches, floor_arguments=(raw_batches,),
                   repeats=count, alternate=True)  # fmt: skip
    figures.append(
        compared(f"store_many, batches of {BATCH_SIZE} (per session)", timed,
                 "raw INSERT ... unnest", per_call=len(batches) / len(stored), ratio=RATIO)
    )  # fmt: skip
    ids = [s.id for s in stored]
    timed = rounds(fetch, raw_fetch, ids, floor_arguments=(rows,), repeats=count, alternate=True)
    figures.append(compared("fetch (no write-back)", timed, "raw SELECT"))
    timed = rounds(peek, raw_fetch, ids, floor_arguments=(rows,), repeats=count, alternate=True)
    figures.append(compared("peek", timed, "raw SELECT"))
    timed = rounds(fetch, raw_read, ids, repeats=count, alternate=True)
    figures.append(compared("fetch (no write-back)", timed, "raw SELECT + decode", ratio=RATIO))

    timed = rounds(fetch, raw_fetch_touch, ids, floor_arguments=(rows,), repeats=count,
                   alternate=True, setup=touch_due(clock))  # fmt: skip
    figures.append(
        compared(
            "fetch writing a touch back",
            timed,
            "raw SELECT + decode + UPDATE ... RETURNING + decode",
            ratio=RATIO,
        )
    )
    figures += bench_concurrent(manager, execute, clock, ids, if_version_sql, raw_read, count)
    stored_now = [manager.peek(session_id) for session_id in ids]

    def raw_take(session: Session) -> object:
        record, last_accessed, version, deadline = execute(take_sql, (session.id,)).fetchone()
        taken = decode_session(record)  # what the hook does with the row it removed
        if version != taken.version:
            taken = taken.with_version(version)
        if last_accessed > taken.last_accessed:
            taken = taken.touched(last_accessed)
        return None if deadline is not None and deadline < clock.now else taken

    def restore() -> None:  # both tables hold every session again before each round
        manager.store_many(stored_now)
        execute(many_sql, columns(stored_now))

    timed = rounds(manager.take, raw_take, ids, floor_arguments=(stored_now,), repeats=count,
                   alternate=True, setup=restore)  # fmt: skip
    figures.append(compared("take", timed, "raw DELETE ... RETURNING + decode", ratio=RATIO))
    timed = rounds(manager.delete, raw_delete, ids, floor_arguments=(rows,), repeats=count,
                   alternate=True, setup=restore)  # fmt: skip
    figures.append(compared("delete", timed, "raw DELETE", ratio=RATIO))
    return figures


def bench_concurrent(
    manager: SessionManager,
    execute: Callable[..., Any],
    clock: Clock,
    ids: list[str],
    if_version_sql: bytes,
    raw_read: Callable[[str], Session],
    count: int,
) -> list[Figure]:
    """``update`` against the raw statements and against ``fetch`` + ``store``;
    ``store(if_version=)`` against ``store``."""

    def raw_update(session_id: str) -> object:
        read = raw_read(session_id)
        now = clock.now
        changed = Session(
            read.id, read.created_at, max(now, read.last_accessed), read.timeout_ms,
            add_one(read.metadata), version=read.version + 1,
        )  # fmt: skip
        done = execute(if_version_sql, params(changed, now=now, expected=read.version))
        if done.rowcount != 1:
            raise SystemExit(f"the raw conditional UPDATE of {session_id} found another version")
        return changed

    def update(session_id: str) -> object:
        return manager.update(session_id, add_one)

    def fetch_and_store(session_id: str) -> object:
        read = manager.fetch(session_id)
        return manager.store(read.replace(metadata=add_one(read.metadata)))

    figures = []
    timed = rounds(update, raw_update, ids, repeats=count, alternate=True)
    figures.append(
        compared("update (a read, one conditional write)", timed,
                 "raw SELECT + decode + encode + UPDATE ... WHERE version", ratio=RATIO)
    )  # fmt: skip
    timed = rounds(update, fetch_and_store, ids, repeats=count, alternate=True)
    figures.append(compared("update", timed, "fetch + store, same backend", ratio=RATIO))
    current = [manager.peek(session_id) for session_id in ids]
    versions = {s.id: s.version for s in current}

    def store_if(session: Session) -> object:
        stored = manager.store(session, if_version=versions[session.id])
        versions[session.id] = stored.version
        return stored

    def store(session: Session) -> object:
        stored = manager.store(session)
        versions[session.id] = stored.version
        return stored

    timed = rounds(store_if, store, current, repeats=count, alternate=True)
    figures.append(compared("store(if_version=)", timed, "store, same backend", ratio=RATIO))
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
    for number in range(sizes.cleanup_rounds):
        doomed = [(generate_id(), template, now, now + 1_000) for _ in range(sizes.expired)]
        clock.now = now + 2_000
        removed = 0

        def cleanup() -> None:
            nonlocal removed
            removed = manager.cleanup_expired()

        def raw_cleanup() -> None:
            while raw.execute(cleanup_sql, (now + 2_000, CLEANUP_BATCH)).rowcount == CLEANUP_BATCH:
                pass

        # Each side's expired rows are loaded right before its own sweep: two tables of a
        # million rows do not fit in shared_buffers, and rows loaded before the other side's
        # sweep would be colder (loading both first favoured the side loaded last).
        sides = [(TABLE, cleanup, values), (RAW, raw_cleanup, floors)]
        for table, sweep, timings in sides if number % 2 == 0 else sides[::-1]:
            copy_rows(raw, table, doomed)
            timings.append(once(sweep))
        if removed != sizes.expired:
            raise SystemExit(f"cleanup removed {removed}, expected {sizes.expired}")
    clock.now = now
    return [
        compared(
            f"cleanup of {sizes.expired:,} expired among {sizes.stored:,}",
            Rounds(values, floors),
            f"raw batched DELETE ({CLEANUP_BATCH} a statement)",
            unit="ms",
            ratio=RATIO,
        )
    ]


#: Concurrent tasks (and pooled connections on both sides) in the async throughput rows.
TASKS = 20
ASYNC_TABLE = "bench_async"


async def timed_rounds(
    sides: dict[str, Callable[[str], Awaitable[object]]],
    ids: Sequence[str],
    count: int,
    *,
    tasks: int = 1,
) -> dict[str, list[float]]:
    """µs per call of each side, one figure per round, sides back to back in each round in an
    order that rotates by round; with ``tasks``, the ids are shared out among that many
    concurrent tasks (then the figure is wall time per call: the inverse of throughput)."""
    timings: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for number in range(count):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            call = sides[name]

            async def worker(
                part: Sequence[str], call: Callable[[str], Awaitable[object]] = call
            ) -> None:
                for session_id in part:
                    await call(session_id)

            began = time.perf_counter()
            await asyncio.gather(*(worker(ids[i::tasks]) for i in range(tasks)))
            timings[name].append((time.perf_counter() - began) / len(ids) * 1e6)
    return timings


async def bench_async(dsn: str, commit: str, sizes: Sizes) -> list[Figure]:
    """The async rows (see the module): native, thread path and raw psycopg async."""
    from psycopg_pool import AsyncConnectionPool

    clock = Clock()
    options = {"dsn": dsn, "table_name": ASYNC_TABLE, "synchronous_commit": commit,
               "pool_max_size": TASKS}  # fmt: skip
    kwargs: dict[str, Any] = {"backend_opts": options, **manager_settings(clock)}
    native = await AsyncSessionManager.open("postgres", **kwargs)
    threaded = await AsyncSessionManager.open("postgres", **kwargs)
    threaded._natives = {}  # every operation to the worker threads: the thread path
    raw = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, kwargs={"autocommit": True}, min_size=TASKS, max_size=TASKS, open=False
    )
    await pool.open(wait=True)
    figures: list[Figure] = []
    try:
        await raw.execute(f"SET synchronous_commit = {commit}")  # type: ignore[arg-type]
        statements = native.sync.backend.statements
        fetch_sql, counted_sql, if_version_sql = (
            statements.fetch,
            statements.store_counted,
            statements.store_if_version,
        )  # the same table: each side reads and writes the same rows
        stored = sessions(sizes.ops, clock.now)
        await native.store_many(stored)
        ids = [s.id for s in stored]
        by_id = {s.id: s for s in stored}
        cursor = raw.cursor(binary=True)

        async def raw_read(session_id: str) -> Session:
            await cursor.execute(fetch_sql, (session_id,))
            record, last_accessed, version = await cursor.fetchone()  # type: ignore[misc]
            session = decode_session(record)
            if version != session.version:
                session = session.with_version(version)
            return session.touched(last_accessed)

        async def raw_store(session_id: str) -> object:
            await cursor.execute(counted_sql, params(by_id[session_id], now=clock.now))
            return await cursor.fetchone()

        async def raw_update(session_id: str) -> object:
            read = await raw_read(session_id)
            changed = Session(
                read.id, read.created_at, max(clock.now, read.last_accessed), read.timeout_ms,
                add_one(read.metadata), version=read.version + 1,
            )  # fmt: skip
            await cursor.execute(
                if_version_sql, params(changed, now=clock.now, expected=read.version)
            )
            return changed

        def store_of(manager: AsyncSessionManager) -> Callable[[str], Awaitable[object]]:
            return lambda session_id: manager.store(by_id[session_id])

        def update_of(manager: AsyncSessionManager) -> Callable[[str], Awaitable[object]]:
            return lambda session_id: manager.update(session_id, add_one)

        rows = (
            ("fetch (no write-back)", native.fetch, threaded.fetch, raw_read,
             "raw async SELECT + decode"),
            ("store", store_of(native), store_of(threaded), raw_store,
             "raw async counting upsert"),
            ("update", update_of(native), update_of(threaded), raw_update,
             "raw async SELECT + decode + encode + UPDATE ... WHERE version"),
        )  # fmt: skip
        for name, native_call, thread_call, raw_call, floor_name in rows:
            timings = await timed_rounds(
                {"native": native_call, "thread": thread_call, "raw": raw_call}, ids, sizes.rounds
            )
            floor = timings["raw"]
            figures.append(compared(f"async {name}: native", Rounds(timings["native"], floor),
                                    floor_name, ratio=RATIO))  # fmt: skip
            figures.append(compared(f"async {name}: thread path", Rounds(timings["thread"], floor),
                                    floor_name))  # fmt: skip

        async def pooled_read(session_id: str) -> object:
            async with pool.connection() as conn:
                cur = conn.cursor(binary=True)
                await cur.execute(fetch_sql, (session_id,))
                record, last_accessed, version = await cur.fetchone()  # type: ignore[misc]
                return decode_session(record).with_version(version).touched(last_accessed)

        unkept = await AsyncSessionManager.open("postgres", **kwargs)
        try:
            await unkept.count()  # opens its async pool
            unkept.sync.backend._alender._closed = True  # every call through the pool's getconn
            timings = await timed_rounds(
                {"native": native.fetch, "unkept": unkept.fetch, "raw": pooled_read},
                ids, sizes.rounds, tasks=TASKS,
            )  # fmt: skip
        finally:
            await unkept.aclose()
        floor = timings["raw"]
        floor_name = f"raw AsyncConnectionPool of {TASKS}, SELECT + decode"
        native_row = f"async fetch, {TASKS} tasks: native (wall time per call)"
        unkept_row = f"async fetch, {TASKS} tasks: native, connections not kept"
        figures.append(compared(native_row, Rounds(timings["native"], floor), floor_name,
                                ratio=RATIO))  # fmt: skip
        figures.append(compared(unkept_row, Rounds(timings["unkept"], floor), floor_name))
    finally:
        await pool.close()
        await raw.close()
        await threaded.aclose()
        await native.aclose()
    return figures


def bench_redis(sizes: Sizes, postgres: dict[str, float]) -> list[Figure]:
    """The redis backend's fetch, store, update and cleanup beside the postgres backend's
    (the "floor" column holds the postgres figure; no target)."""
    names = ("fetch (no write-back)", "store", "update", "cleanup")
    units = {"cleanup": "ms"}
    binary = find_binary()
    if binary is None:
        return [
            Figure(f"redis backend: {name}", None, units.get(name, "us"), postgres[name],
                   "postgres backend; no redis-server found", "-", None)
            for name in names
        ]  # fmt: skip
    figures = []
    clock = Clock()
    with (
        tempfile.TemporaryDirectory(prefix="skbench-redis-") as directory,
        redis_server(binary, Path(directory)) as url,
        SessionManager(
            backend="redis",
            backend_opts={"url": url, "table_name": TABLE},
            **manager_settings(clock),
        ) as manager,
    ):
        stored = sessions(sizes.ops, clock.now)
        ids = [s.id for s in stored]
        timings = {
            "store": _median(min(sizes.rounds, 7), lambda: deque(map(manager.store, stored), 0)),
            "fetch (no write-back)": _median(
                min(sizes.rounds, 7), lambda: deque(map(manager.fetch, ids), 0)
            ),
            "update": _median(
                min(sizes.rounds, 7), lambda: deque((manager.update(i, add_one) for i in ids), 0)
            ),
        }
        for name in names[:3]:
            value = timings[name] / len(ids) * 1e6
            figures.append(
                figure(f"redis backend: {name}", value, postgres[name], "postgres backend")
            )
        figures.append(redis_cleanup(manager, clock, sizes, postgres["cleanup"]))
    return figures


def _median(repeats: int, run: Callable[[], object]) -> float:
    """Median seconds of ``run`` over ``repeats`` runs."""
    return statistics.median(timeit.Timer(run).timeit(number=1) for _ in range(repeats))


def redis_cleanup(manager: SessionManager, clock: Clock, sizes: Sizes, postgres: float) -> Figure:
    """Cleanup of ``expired`` among ``stored`` on the redis backend (loaded with store_many)."""
    now = clock.now
    template = Session("x" * 43, now, now, TIMEOUT, METADATA)
    live = sizes.stored - sizes.expired
    for start in range(0, live, 5_000):
        manager.store_many(
            [template.replace(id=generate_id()) for _ in range(min(5_000, live - start))]
        )
    values = []
    for _ in range(min(sizes.rounds, 7)):
        manager.store_many(
            [Session(generate_id(), now, now, 1_000, METADATA) for _ in range(sizes.expired)]
        )
        clock.now = now + 2_000
        removed = 0

        def cleanup() -> None:
            nonlocal removed
            removed = manager.cleanup_expired()

        values.append(once(cleanup))
        clock.now = now
        if removed != sizes.expired:
            raise SystemExit(f"redis cleanup removed {removed}, expected {sizes.expired}")
    return figure(
        f"redis backend: cleanup of {sizes.expired:,} expired among {sizes.stored:,}",
        statistics.median(values), postgres, "postgres backend", unit="ms",
    )  # fmt: skip


def measure(args: argparse.Namespace) -> _bench.Run:
    sizes = QUICK if args.quick else FULL
    commit = "on" if args.durable else "off"
    cluster = PostgresCluster()
    try:
        cluster.start()
        clock = Clock()
        with (
            SessionManager(
                backend="postgres",
                backend_opts={
                    "dsn": cluster.dsn(),
                    "table_name": TABLE,
                    "synchronous_commit": commit,
                },
                **manager_settings(clock),
            ) as manager,
            psycopg.connect(cluster.dsn(), autocommit=True) as raw,
        ):
            raw.execute(f"CREATE TABLE {RAW} (LIKE {TABLE} INCLUDING ALL)")  # type: ignore[arg-type]
            raw.execute(f"SET synchronous_commit = {commit}")  # type: ignore[arg-type]
            server = raw.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            figures = bench_operations(manager, raw, clock, sizes)
            figures += bench_cleanup(manager, raw, clock, sizes)
            figures += asyncio.run(bench_async(cluster.dsn(), commit, sizes))
    finally:
        cluster.destroy()
    postgres = {f.operation: f.value for f in figures if f.value is not None}
    postgres["update"] = next(
        f.value for f in figures if f.operation.startswith("update (") and f.value is not None
    )
    postgres["cleanup"] = next(
        f.value for f in figures if f.operation.startswith("cleanup") and f.value is not None
    )
    figures += bench_redis(sizes, postgres)
    return _bench.Run(
        figures,
        sizes,
        title=f"sessionkeeper {__version__}, postgres backend {backend_version} (PostgreSQL "
        f"{server}, psycopg {psycopg.__version__}, fsync on, synchronous_commit {commit}); "
        f"{_bench.platform_line()}, {sizes.ops:,} sessions "
        f"a side per round, median ratio of {sizes.rounds} rounds ({sizes.cleanup_rounds} for "
        "the cleanup)",
        about=_bench.about(
            sessionkeeper_postgres=backend_version,
            postgresql=server,
            psycopg=psycopg.__version__,
            synchronous_commit=commit,
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    def flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--durable",
            action="store_true",
            help="synchronous_commit = on (each write waits for its WAL flush) on both sides",
        )

    return _bench.main(
        __doc__,
        "postgres",
        measure,
        quick_help="smaller sizes, a few seconds",
        digits={"ms": 2, "us": 1, "B": 1},
        argv=argv,
        flags=flags,
    )


if __name__ == "__main__":
    sys.exit(main())
