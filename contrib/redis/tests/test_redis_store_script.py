"""The ``redis`` backend's store script (issue 15): one key and four arguments, the record's
fields read on the server, and over a stored record only the index entries that change.

Whatever sequence of plain and conditional stores, owners, deadlines and keys Redis dropped
through their TTL, the record is the codec's record with the version the script decided, and
the id index, the deadline index, the owner hash and the owner sets are exactly what the stored
sessions imply (the model below computes them from scratch after every step).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionkeeper import (
    AsyncSessionManager,
    Session,
    SessionManager,
    StorageError,
    VersionConflict,
)
from sessionkeeper.backend import encode_session
from sessionkeeper.testing import ManualClock
from sessionkeeper_redis import _scripts

START = 1_700_000_000_000
MARGIN = 60_000
#: The owners of the examples (the last: 32 UTF-8 bytes, a wider msgpack string header).
OWNERS = ("ann", "bob", "é" * 16)


@attrs.define
class Table:
    """A manager on a table of its own, a raw client and the sessions as the model holds
    them: what each id last stored, and whether Redis dropped its key since."""

    manager: SessionManager
    raw: redis.Redis
    clock: ManualClock
    stored: dict[str, Session] = attrs.Factory(dict)
    dropped: set[str] = attrs.Factory(set)
    #: The ids of one example end with it (the examples share the table).
    suffix: str = ""

    def start(self) -> None:
        """A new example: new ids, an empty model."""
        self.suffix = "-" + uuid.uuid4().hex[:8]
        self.stored.clear()
        self.dropped.clear()

    def _ours(self, members: Any) -> set[str]:
        return {m.decode() for m in members if m.decode().endswith(self.suffix)}

    @property
    def backend(self) -> Any:
        return self.manager.backend

    def expected_version(self, session_id: str) -> int:
        """The version a store writes: the live stored one + 1, else 1."""
        old = self.stored.get(session_id)
        if old is None or session_id in self.dropped or old.is_expired(self.clock.now):
            return 1
        return old.version + 1

    def check(self) -> None:
        """Records and every index as the model implies them."""
        backend = self.backend
        ids, exp = backend.index_keys
        assert self._ours(self.raw.zrange(ids, 0, -1)) == set(self.stored)
        scores = dict(self.raw.zrange(exp, 0, -1, withscores=True))
        assert {m.decode(): scores[m] for m in scores if m.decode().endswith(self.suffix)} == {
            i: s.expires_at for i, s in self.stored.items() if s.expires_at is not None
        }
        owners = {i: s.owner for i, s in self.stored.items() if s.owner is not None}
        held = self.raw.hgetall(backend.owner_hash_key)
        assert {k.decode(): held[k].decode() for k in held if k.decode().endswith(self.suffix)} == (
            owners
        )
        for owner in {*owners.values(), *OWNERS}:
            members = self._ours(self.raw.smembers(backend.owner_key(owner)))
            assert members == {i for i, o in owners.items() if o == owner}
        for session_id, session in self.stored.items():
            key = backend.session_key(session_id)
            if session_id in self.dropped:
                assert self.raw.get(key) is None
                continue
            assert self.raw.get(key) == encode_session(session)
            ttl = self.raw.pttl(key)
            if session.expires_at is None:
                assert ttl == -1
            else:
                left = max(session.expires_at - session.last_accessed, 0) + MARGIN
                assert 0 < ttl <= left


@pytest.fixture(scope="module")
def table(redis_server: Any) -> Iterator[Table]:
    """One manager for every example (the examples use tables of their own ids)."""
    clock = ManualClock(START)
    opts = {"url": redis_server.url, "table_name": f"store-{uuid.uuid4().hex}"}
    manager = SessionManager(
        backend="redis", backend_opts={**opts, "ttl_margin_ms": MARGIN}, clock=clock,
        cleanup_interval=0,
    )  # fmt: skip
    raw = redis.Redis.from_url(redis_server.url)
    try:
        yield Table(manager, raw, clock)
    finally:
        manager.close()
        raw.close()


_STEP = st.tuples(
    st.sampled_from(["a", "b", "c"]),  # id
    st.sampled_from([None, *OWNERS]),
    st.sampled_from([None, 1_000, 300_000]),  # timeout_ms
    st.sampled_from([None, 2_000, 10**12]),  # absolute_timeout_ms
    st.integers(0, 3_000),  # clock advance before the step
    st.sampled_from(["plain", "conditional", "stale", "drop"]),
)


@pytest.mark.fuzz
@settings(deadline=None)
@given(steps=st.lists(_STEP, min_size=1, max_size=12))
def test_every_store_leaves_the_record_and_the_indexes_exact(
    table: Table, steps: list[tuple[Any, ...]]
) -> None:
    """Plain stores, conditional stores (right and stale versions) and keys dropped by Redis,
    in any order: after each step the record is the codec's record at the version the script
    decided (the live one + 1, else 1), its TTL follows ``expires_at``, and the id index, the
    deadline index, the owner hash and the owner sets are exactly what the stored sessions
    imply, whichever entries the script skipped writing."""
    table.start()
    for name, owner, timeout, absolute, advance, action in steps:
        session_id = name + table.suffix
        table.clock.advance(advance)
        now = table.clock.now
        if action == "drop":
            if session_id in table.stored:  # as Redis's TTL would
                table.raw.delete(table.backend.session_key(session_id))
                table.dropped.add(session_id)
            continue
        session = Session(
            session_id, now - 500, now, timeout, {"n": advance}, owner=owner,
            absolute_timeout_ms=absolute,
        )  # fmt: skip
        version = table.expected_version(session_id)
        if action == "plain":
            stored = table.manager.store(session)
        else:
            live = version - 1
            condition = live if action == "conditional" else live + 1
            if action == "stale":
                with pytest.raises(VersionConflict):
                    table.manager.store(session, if_version=condition)
                table.check()
                continue
            stored = table.manager.store(session, if_version=condition)
        assert stored.version == version
        table.stored[session_id] = session.with_version(version)
        table.dropped.discard(session_id)
        table.check()


@pytest.mark.parametrize("version", [1, 126, 127, 255, 65_535, 2**32 - 1, 2**53 + 1])
@pytest.mark.parametrize("owner", [None, "x" * 31, "x" * 32, "é" * 127 + "x", "é" * 128])
def test_the_script_splices_every_width_of_version_and_owner(
    table: Table, version: int, owner: str | None
) -> None:
    """Over a stored version of every msgpack width, and owners whose UTF-8 length crosses the
    string header widths (31/32, 255/256 bytes), the conditional store writes exactly the
    codec's record of the session at the next version."""
    session_id = f"w-{uuid.uuid4().hex[:8]}"
    now = table.clock.now
    first = Session(session_id, now, now, None, version=version, owner=owner)
    table.manager.store_many([first])
    second = Session(session_id, now, now, 5_000, {"k": 1}, owner=owner, absolute_timeout_ms=7)
    assert table.manager.store(second, if_version=version).version == version + 1
    key = table.backend.session_key(session_id)
    assert table.raw.get(key) == encode_session(second.with_version(version + 1))
    assert table.manager.delete(session_id)


def test_a_record_under_another_key_is_refused_and_nothing_written(table: Table) -> None:
    """The script reads the id from the record and the table's keys from the session key: a
    record sent under the key of another id (a client bug) is an error, and nothing changes."""
    now = table.clock.now
    record = encode_session(Session("mine", now, now, 1_000, owner="ann"))
    key = table.backend.session_key("other")
    table.raw.script_load(_scripts.STORE_IF.source)
    with pytest.raises(redis.ResponseError, match="BAD RECORD the key is not the one of session"):
        table.raw.evalsha(_scripts.STORE_IF.sha, 1, key, record, now, "", MARGIN)
    assert table.raw.get(key) is None
    assert table.raw.zscore(table.backend.index_keys[0], "mine") is None


#: (id length, created_at, last_accessed, timeout_ms, metadata string length, version):
#: between them, every msgpack width of each integer field (fixint, 0xcc-0xcf), of the id
#: (fixstr, 0xd9, 0xda) and of the metadata (bin 8/16/32) that the script's parser reads.
_WIDTHS = [
    (1, 5, 100, None, 0, 1),
    (31, 200, 300, 127, 10, 128),
    (32, 60_000, 65_535, 255, 300, 65_535),
    (255, 2**20, 2**32 - 1, 65_536, 65_530, 2**32 - 1),  # metadata of 65,536 bytes: bin 32
    (256, START, START, 2**33, 0, 2**40),
]


@pytest.mark.parametrize(("size", "created", "last", "timeout", "meta", "version"), _WIDTHS)
def test_every_field_width_parses_and_every_cut_of_it_is_damage(
    table: Table, size: int, created: int, last: int, timeout: int | None, meta: int, version: int
) -> None:
    """The store script reads a stored record with each msgpack width of every field: the
    conditional store counts on from its version when it is live (else from 0) and writes the
    codec's record. The same record cut at every byte of its headers and fields, or with a byte
    appended, is damage: the conditional store raises ``StorageError`` naming the key and keeps
    the bytes."""
    session_id = (uuid.uuid4().hex * 9)[:size]
    now = table.clock.now
    metadata = {"m": "x" * meta} if meta else {}
    first = Session(session_id, created, last, timeout, metadata, version=version)
    table.manager.store_many([first])
    current = 0 if first.is_expired(now) else version
    second = Session(session_id, now, now, None, {"k": 1})
    key = table.backend.session_key(session_id)
    assert table.manager.store(second, if_version=current).version == current + 1
    assert table.raw.get(key) == encode_session(second.with_version(current + 1))
    record = encode_session(first)
    cuts = {*range(min(len(record), 80)), *range(max(len(record) - 40, 0), len(record))}
    for damaged in [record[:n] for n in sorted(cuts)] + [record + b"\x00"]:
        table.raw.set(key, damaged)
        with pytest.raises(StorageError, match="damaged") as info:
            table.manager.store(second, if_version=current + 1)
        assert repr(key) in str(info.value)
        assert table.raw.get(key) == damaged
    assert table.manager.delete(session_id)


def _calls(raw: redis.Redis, command: str) -> int:
    """How many times the server ran ``command`` (``INFO commandstats``) since its start."""
    stats = raw.info("commandstats")
    entry = stats.get(f"cmdstat_{command}", {})
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


def _store_twice_each_path(url: str, table_name: str) -> list[int]:
    """Store one session twice through a sync and twice through an async manager; the
    versions they return."""
    opts = {"url": url, "table_name": table_name}
    sync = SessionManager(backend="redis", backend_opts=opts, cleanup_interval=0)
    session = sync.create(timeout_ms=60_000, owner="ann")
    versions = [sync.store(session).version, sync.store(session).version]
    sync.close()

    async def stores() -> list[int]:
        manager = AsyncSessionManager(backend="redis", backend_opts=opts, cleanup_interval=0)
        try:
            return [(await manager.store(session)).version for _ in range(2)]
        finally:
            await manager.aclose()

    return versions + asyncio.run(stores())


def _major(server: Any) -> int:
    """The major version of the Redis that ``server`` runs."""
    return int(server.client().info("server")["redis_version"].split(".")[0])


def test_the_store_script_runs_as_a_function_loaded_again_when_lost(
    redis_server: Any, table_name: str
) -> None:
    """On Redis 7 the store script is the function ``STORE_IF.function`` (``FCALL``): the
    sync and async paths load its library on first use, load it again after ``FUNCTION
    FLUSH`` (or a restart) took it, and count versions on as the script does."""
    if _major(redis_server) < 7:
        pytest.skip("Redis before 7 has no functions (the script path is tested beside)")
    raw = redis_server.client()
    raw.function_flush()
    fcalls = _calls(raw, "fcall")
    assert _store_twice_each_path(redis_server.url, table_name) == [2, 3, 4, 5]
    assert _calls(raw, "fcall") - fcalls >= 4
    libraries = [entry[1].decode() for entry in raw.function_list()]
    assert _scripts.STORE_IF.function in libraries
    raw.function_flush()
    assert _store_twice_each_path(redis_server.url, table_name + "-again") == [2, 3, 4, 5]
    assert _scripts.STORE_IF.function in [entry[1].decode() for entry in raw.function_list()]


def test_a_server_without_functions_stores_through_the_script(
    redis_server: Any, redis_servers: Any, table_name: str
) -> None:
    """A server without ``FCALL`` and ``FUNCTION`` (Redis 6.2; on Redis 7 both commands
    renamed away): the sync and async paths fall back to ``EVALSHA`` of the same code, and a
    conditional store still conflicts on a stale version."""
    renamed = ["--rename-command", "FCALL", "no-fcall", "--rename-command", "FUNCTION", "no-fn"]
    server = redis_servers(renamed if _major(redis_server) >= 7 else [])
    raw = server.client()
    scripts = _calls(raw, "evalsha")
    assert _store_twice_each_path(server.url, table_name) == [2, 3, 4, 5]
    assert _calls(raw, "evalsha") - scripts >= 4
    opts = {"url": server.url, "table_name": table_name}
    with SessionManager(backend="redis", backend_opts=opts, cleanup_interval=0) as manager:
        (stored,) = [manager.peek(i) for i in manager.list()]
        assert stored is not None
        assert stored.version == 5
        with pytest.raises(VersionConflict):
            manager.store(stored, if_version=4)


def test_a_user_not_allowed_functions_stores_through_the_script(
    redis_server: Any, table_name: str
) -> None:
    """A Redis 7 user whose ACL allows scripts but not ``FCALL`` and ``FUNCTION``: the sync
    and async paths store through ``EVALSHA`` instead of failing."""
    if _major(redis_server) < 7:
        pytest.skip("Redis before 7 has no functions")
    raw = redis_server.client()
    user = f"nofn-{uuid.uuid4().hex[:8]}"
    raw.execute_command(
        "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-fcall", "-function"
    )
    try:
        url = f"redis://{user}:pw@{redis_server.address}/0"
        assert _store_twice_each_path(url, table_name) == [2, 3, 4, 5]
    finally:
        raw.execute_command("ACL", "DELUSER", user)


@pytest.mark.parametrize(
    ("renamed", "warned"),
    [(("FCALL",), False), (("FUNCTION",), True)],
    ids=["fcall-renamed", "function-renamed"],
)
def test_a_server_with_one_function_command_renamed_stores_through_the_script(
    redis_server: Any,
    redis_servers: Any,
    table_name: str,
    renamed: tuple[str, ...],
    warned: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis 7 server where ``FCALL`` alone is renamed away (it answers "unknown command")
    or ``FUNCTION`` alone is (the library cannot be loaded): the sync and async paths store
    through ``EVALSHA``, versions counting on; a library the server could not load is said
    once, as a warning."""
    if _major(redis_server) < 7:
        pytest.skip("Redis before 7 has no functions")
    arguments = [word for name in renamed for word in ("--rename-command", name, f"no-{name}")]
    server = redis_servers(arguments)
    raw = server.client()
    with caplog.at_level(logging.WARNING, logger="sessionkeeper.redis"):
        assert _store_twice_each_path(server.url, table_name) == [2, 3, 4, 5]
    assert _calls(raw, "evalsha") >= 4
    warnings = [r.getMessage() for r in caplog.records if r.name == "sessionkeeper.redis"]
    if warned:
        assert len(warnings) == 2  # once per manager (sync, then async)
        assert all("FUNCTION LOAD" in w and "EVALSHA" in w for w in warnings)
    else:
        assert warnings == []


def test_functions_false_loads_nothing_on_the_server(redis_server: Any, table_name: str) -> None:
    """``functions = false``: the store script runs by ``EVALSHA`` and no library is loaded."""
    if _major(redis_server) < 7:
        pytest.skip("Redis before 7 has no functions")
    raw = redis_server.client()
    raw.function_flush()
    opts = {"url": redis_server.url, "table_name": table_name, "functions": False}
    with SessionManager(backend="redis", backend_opts=opts, cleanup_interval=0) as manager:
        session = manager.create()
        assert manager.store(session).version == 2
    assert raw.function_list() == []


def test_a_library_lost_between_two_stores_of_one_manager_is_loaded_again(
    redis_server: Any, table_name: str
) -> None:
    """A manager that already runs the store as a function keeps storing when the server
    loses the library under it (``FUNCTION FLUSH``, a restart without persistence), on the
    sync and the async path: it loads the library again."""
    if _major(redis_server) < 7:
        pytest.skip("Redis before 7 has no functions")
    raw = redis_server.client()
    opts = {"url": redis_server.url, "table_name": table_name}
    with SessionManager(backend="redis", backend_opts=opts, cleanup_interval=0) as manager:
        session = manager.create()
        assert manager.store(session).version == 2
        raw.function_flush()
        assert manager.store(session).version == 3
    assert _scripts.STORE_IF.function in [entry[1].decode() for entry in raw.function_list()]

    async def stores() -> list[int]:
        async with AsyncSessionManager(
            backend="redis", backend_opts=opts, cleanup_interval=0
        ) as manager:
            first = (await manager.store(session)).version
            raw.function_flush()
            return [first, (await manager.store(session)).version]

    assert asyncio.run(stores()) == [4, 5]
    assert _scripts.STORE_IF.function in [entry[1].decode() for entry in raw.function_list()]
