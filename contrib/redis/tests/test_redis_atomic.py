"""The ``redis`` backend's concurrent state (issue 14) as it lies in Redis: the owner index,
deadlines at ``expires_at``, data written by the previous release, and the conditional-store
script's record splicing. The races themselves (threads and processes, one server and a
cluster) are the conformance kit's (``test_redis_conformance.py``, ``test_redis_cluster.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Final

import pytest
import redis

from sessionkeeper import Session, SessionManager, SessionNotFound, StorageError, VersionConflict
from sessionkeeper.backend import decode_session
from sessionkeeper.testing import ManualClock

START: Final = 1_700_000_000_000
#: Records exactly as the previous release (record format 1) wrote them: a session with a
#: 5-minute idle timeout and metadata, and one that never expires.
LEGACY_RECORD: Final = (
    b"\x96\x01\xa8legacy-1\xcf\x00\x00\x01\x8b\xcf\xe5h\x00\xcf\x00\x00\x01\x8b\xcf\xe5h\x00"
    b"\xce\x00\x04\x93\xe0\xc4\r\x82\xa4user\xa3ann\xa1n\x01"
)
LEGACY_FOREVER: Final = (
    b"\x96\x01\xa8legacy-2\xcf\x00\x00\x01\x8b\xcf\xe5h\x00\xcf\x00\x00\x01\x8b\xcf\xe5h\x00"
    b"\xc0\xc4\x01\x80"
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def raw(redis_server: Any) -> redis.Redis:
    return redis_server.client()


@pytest.fixture
def manager(redis_server: Any, table_name: str, clock: ManualClock) -> Iterator[SessionManager]:
    opts = {"url": redis_server.url, "table_name": table_name, "ttl_margin_ms": 60_000}
    with SessionManager(
        backend="redis", backend_opts=opts, cleanup_interval=0, clock=clock
    ) as opened:
        yield opened


def _owner_state(raw: redis.Redis, manager: SessionManager, *owners: str) -> tuple[Any, ...]:
    """The owner hash and the set of each owner, as Redis holds them."""
    backend: Any = manager.backend
    return (
        raw.hgetall(backend.owner_hash_key),
        *(raw.smembers(backend.owner_key(owner)) for owner in owners),
    )


class TestOwnerIndex:
    def test_every_write_keeps_the_owner_hash_and_sets_exact(
        self, manager: SessionManager, raw: redis.Redis, clock: ManualClock
    ) -> None:
        """Create, replace under another owner, drop the owner, rotate, take and delete each
        leave the owner hash and the owner sets naming exactly the stored sessions' owners;
        an owner with no session left has no key."""
        a = manager.create(timeout_ms=60_000, owner="ann")
        b = manager.create(timeout_ms=60_000, owner="ann")
        c = manager.create(timeout_ms=60_000, owner="bob")
        assert _owner_state(raw, manager, "ann", "bob") == (
            {a.id.encode(): b"ann", b.id.encode(): b"ann", c.id.encode(): b"bob"},
            {a.id.encode(), b.id.encode()},
            {c.id.encode()},
        )
        manager.store(Session(b.id, clock.now, clock.now, 60_000, owner="bob"))
        manager.store(Session(c.id, clock.now, clock.now, 60_000))
        assert _owner_state(raw, manager, "ann", "bob") == (
            {a.id.encode(): b"ann", b.id.encode(): b"bob"},
            {a.id.encode()},
            {b.id.encode()},
        )
        rotated = manager.rotate(a.id)
        assert _owner_state(raw, manager, "ann") == (
            {rotated.id.encode(): b"ann", b.id.encode(): b"bob"},
            {rotated.id.encode()},
        )
        manager.take(rotated.id)
        assert manager.delete(b.id)
        assert _owner_state(raw, manager, "ann", "bob") == ({}, set(), set())
        backend: Any = manager.backend
        assert not raw.exists(backend.owner_key("ann"), backend.owner_key("bob"))

    def test_cleanup_removes_owner_entries_even_of_sessions_redis_dropped(
        self, manager: SessionManager, raw: redis.Redis, clock: ManualClock
    ) -> None:
        """A session whose key Redis dropped through its TTL leaves its owner entries (the
        owner is found in the owner hash, not in the lost record): ``cleanup_expired`` removes
        them, and the owner's list and count never showed it once expired."""
        kept = manager.create(timeout_ms=600_000, owner="ann")
        dropped = manager.create(timeout_ms=1_000, owner="ann")
        expired = manager.create(timeout_ms=1_000, owner="ann")
        raw.delete(manager.backend.session_key(dropped.id))  # as Redis's TTL would
        clock.advance(2_000)
        assert manager.list(owner="ann") == [kept.id]
        assert manager.count(owner="ann") == 1
        assert manager.cleanup_expired() == 2
        assert _owner_state(raw, manager, "ann") == (
            {kept.id.encode(): b"ann"},
            {kept.id.encode()},
        )
        assert manager.backend.sessionkeeper_list_owner(owner="ann", now=clock.now - 5_000) == [
            kept.id
        ]
        assert expired.id not in manager.list()

    def test_delete_owner_removes_sessions_index_entries_and_owner_keys(
        self, manager: SessionManager, raw: redis.Redis, clock: ManualClock
    ) -> None:
        """``delete_owner`` of an owner holding more sessions than one script call removes
        (expired ones included) deletes every one with its index entries, counts them, and
        leaves the other owner's sessions alone."""
        backend: Any = manager.backend
        many = 1_000 + 7  # OWNER_PAGE + 7: two script calls
        manager.store_many(
            Session(f"ann-{i}", clock.now, clock.now, 1_000 if i % 2 else None, owner="ann")
            for i in range(many)
        )
        other = manager.create(owner="bob")
        clock.advance(5_000)  # half of ann's sessions have expired, none cleaned up
        assert manager.count(owner="ann") == many // 2 + 1
        assert manager.delete_owner("ann") == many
        ids, exp = backend.index_keys
        assert raw.zrange(ids, 0, -1) == [other.id.encode()]
        assert raw.zrange(exp, 0, -1) == [other.id.encode()]
        assert _owner_state(raw, manager, "ann", "bob") == (
            {other.id.encode(): b"bob"},
            set(),
            {other.id.encode()},
        )
        assert manager.delete_owner("ann") == 0

    def test_list_and_count_by_owner_read_only_the_owners_set(
        self, manager: SessionManager, raw: redis.Redis, clock: ManualClock
    ) -> None:
        """``list(owner=)`` finds an owner's sessions among many others of other owners, and
        judges each by its own deadline: the others' keys are never read (a damaged record
        of another owner does not disturb it)."""
        mine = {manager.create(timeout_ms=1_000, owner="ann").id for _ in range(3)}
        manager.store_many(
            Session(f"x{i}", clock.now, clock.now, None, owner=f"o{i % 5}") for i in range(500)
        )
        raw.set(manager.backend.session_key("x1"), b"\xc1 damaged")
        assert set(manager.list(owner="ann")) == mine
        assert manager.count(owner="o1") == 100
        clock.advance(1_001)
        assert manager.list(owner="ann") == []


class TestExpiresAt:
    def test_the_absolute_deadline_sets_the_score_and_the_ttl(
        self, manager: SessionManager, raw: redis.Redis, clock: ManualClock
    ) -> None:
        """A session whose absolute deadline comes before its idle one is scored (deadline
        index) and given a TTL at ``expires_at``; a touch moves neither past it; rotate keeps
        it."""
        backend: Any = manager.backend
        _, exp = backend.index_keys
        session = manager.create(timeout_ms=3_600_000, absolute_timeout_ms=10_000)
        key = backend.session_key(session.id)
        assert raw.zscore(exp, session.id) == START + 10_000
        assert 0 < raw.pttl(key) <= 10_000 + 60_000
        clock.advance(8_000)
        assert manager.touch(session.id).last_accessed == START + 8_000
        assert raw.zscore(exp, session.id) == START + 10_000
        assert 0 < raw.pttl(key) <= 2_000 + 60_000
        rotated = manager.rotate(session.id)
        assert raw.zscore(exp, rotated.id) == START + 10_000
        assert 0 < raw.pttl(backend.session_key(rotated.id)) <= 2_000 + 60_000
        clock.advance(2_001)
        with pytest.raises(SessionNotFound):
            manager.fetch(rotated.id)
        assert manager.cleanup_expired() == 1

    def test_an_absolute_timeout_alone_expires_the_session(
        self, manager: SessionManager, raw: redis.Redis, clock: ManualClock
    ) -> None:
        """Without an idle timeout, the absolute one alone gives the score and a TTL."""
        backend: Any = manager.backend
        session = manager.create(timeout_ms=None, absolute_timeout_ms=5_000)
        assert raw.zscore(backend.index_keys[1], session.id) == START + 5_000
        assert raw.pttl(backend.session_key(session.id)) > 0
        clock.advance(5_001)
        assert manager.count() == 0
        with pytest.raises(VersionConflict):
            manager.store(Session(session.id, clock.now, clock.now, None), if_version=1)
        assert manager.store(Session(session.id, clock.now, clock.now, None)).version == 1


class TestPreviousFormat:
    def _write_legacy(self, raw: redis.Redis, manager: SessionManager) -> None:
        """The keys the previous release's store script wrote for the two legacy sessions."""
        backend: Any = manager.backend
        ids, exp = backend.index_keys
        raw.set(backend.session_key("legacy-1"), LEGACY_RECORD, px=300_000 + 60_000)
        raw.set(backend.session_key("legacy-2"), LEGACY_FOREVER)
        raw.zadd(ids, {"legacy-1": 0, "legacy-2": 0})
        raw.zadd(exp, {"legacy-1": START + 300_000})

    def test_format_1_records_read_touch_and_update(
        self, manager: SessionManager, raw: redis.Redis, clock: ManualClock
    ) -> None:
        """Records written by the previous release read as version 1 without an owner; a
        touch keeps them readable; ``update`` and a conditional store (which name version 1)
        write them anew as format 2, version 2; ``take`` of one gets it."""
        self._write_legacy(raw, manager)
        old = manager.peek("legacy-1")
        assert (old.version, old.owner, old.absolute_timeout_ms) == (1, None, None)
        assert old.metadata == {"user": "ann", "n": 1}
        clock.advance(60_000)
        assert manager.fetch("legacy-1").last_accessed == START + 60_000
        assert manager.peek("legacy-1").version == 1
        key = manager.backend.session_key("legacy-1")
        assert raw.get(key)[:2] == b"\x96\x01"  # touched in place, still format 1
        updated = manager.update("legacy-1", lambda md: {**md, "n": md["n"] + 1})
        assert (updated.version, updated.metadata["n"]) == (2, 2)
        assert raw.get(key)[:2] == b"\x99\x02"
        assert manager.peek("legacy-1") == updated
        replaced = manager.store(
            Session("legacy-2", START, clock.now, None, owner="ann"), if_version=1
        )
        assert replaced.version == 2
        assert manager.list(owner="ann") == ["legacy-2"]
        assert manager.take("legacy-2") == replaced
        assert manager.count() == 1

    def test_format_1_records_rotate_and_delete_owner_nothing(
        self, manager: SessionManager, raw: redis.Redis, clock: ManualClock
    ) -> None:
        """``rotate`` of a format-1 record writes a format-2 record under the new id (version
        2, no owner, no absolute limit, metadata and timeout kept); the old data has no owner,
        so ``delete_owner`` removes none of it."""
        self._write_legacy(raw, manager)
        assert manager.delete_owner("ann") == 0
        clock.advance(1_000)
        rotated = manager.rotate("legacy-1")
        assert rotated == Session(
            rotated.id, START, START + 1_000, 300_000, {"user": "ann", "n": 1}, version=2
        )
        assert decode_session(raw.get(manager.backend.session_key(rotated.id))) == rotated
        assert raw.zscore(manager.backend.index_keys[1], rotated.id) == START + 301_000
        assert sorted(manager.list()) == sorted([rotated.id, "legacy-2"])


class TestConditionalStore:
    def test_a_conflict_names_the_versions_and_writes_nothing(
        self, manager: SessionManager, raw: redis.Redis, clock: ManualClock
    ) -> None:
        """A conditional store naming a version other than the live one raises
        ``VersionConflict`` with the expected and the stored version, and the record (owner
        entries included) is unchanged."""
        stored = manager.store(Session("s", clock.now, clock.now, None, owner="ann"))
        before = raw.get(manager.backend.session_key("s"))
        with pytest.raises(VersionConflict) as info:
            manager.store(Session("s", clock.now, clock.now, None, owner="bob"), if_version=4)
        assert (info.value.expected, info.value.actual) == (4, stored.version)
        assert raw.get(manager.backend.session_key("s")) == before
        assert manager.list(owner="ann") == ["s"]
        assert manager.list(owner="bob") == []

    def test_large_versions_count_on_exactly(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A stored version in every msgpack width (1, 2, 3, 5 and 9 bytes) is read by the
        script and counted on by one, exactly."""
        for version in (127, 255, 65_535, 2**32 - 1, 2**40 + 3):
            manager.store_many([Session("v", clock.now, clock.now, None, version=version)])
            assert manager.store(
                Session("v", clock.now, clock.now, None), if_version=version
            ).version == (version + 1)
            assert manager.peek("v").version == version + 1

    def test_a_damaged_record_refuses_a_conditional_store_and_keeps_the_bytes(
        self, manager: SessionManager, raw: redis.Redis, clock: ManualClock
    ) -> None:
        """Bytes that are no record under a session key: a conditional store, ``update``,
        ``take`` and ``rotate`` raise ``StorageError`` naming the key and leave the bytes; an
        unconditional store replaces them (version 1)."""
        key = manager.backend.session_key("d")
        raw.set(key, b"\x99\x02\xa1d garbage")
        fresh = Session("d", clock.now, clock.now, None)
        for attempt in (
            lambda: manager.store(fresh, if_version=0),
            lambda: manager.update("d", dict),
            lambda: manager.take("d"),
            lambda: manager.rotate("d"),
        ):
            with pytest.raises(StorageError, match="damaged") as info:
                attempt()
            assert repr(key) in str(info.value)
            assert raw.get(key) == b"\x99\x02\xa1d garbage"
        assert manager.store(fresh).version == 1

    def test_threads_updating_many_sessions_lose_nothing(self, manager: SessionManager) -> None:
        """Eight threads ``update`` four sessions round-robin, each adding 1: every counter
        ends exactly at its number of updates, and its version at one more."""
        ids = [manager.create(metadata={"n": 0}).id for _ in range(4)]
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for step in range(40):
                    manager.update(ids[step % 4], lambda md: {"n": md["n"] + 1}, attempts=1_000)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        for session_id in ids:
            session = manager.peek(session_id)
            assert (session.metadata["n"], session.version) == (80, 81)


def test_versions_beyond_two_to_the_53_count_exactly(
    manager: SessionManager, clock: ManualClock
) -> None:
    """Versions past the doubles' exact range (Lua numbers) are counted on by one exactly by
    the conditional store and by rotate (the scripts count on their encodings); at the largest
    version the codec holds, the store-if and rotate scripts refuse a further write with a
    ``StorageError`` and keep the record."""
    for version in (2**53, 2**53 + 1, 2**62 + 7):
        manager.store_many([Session("big", clock.now, clock.now, None, version=version)])
        stored = manager.store(Session("big", clock.now, clock.now, None), if_version=version)
        assert stored.version == version + 1
        assert manager.peek("big").version == version + 1
        assert manager.rotate("big").version == version + 2
        manager.delete_owner("nobody")
        for session_id in manager.list():
            manager.delete(session_id)
    largest = Session("top", clock.now, clock.now, None, version=2**63 - 1)
    manager.store_many([largest])
    backend: Any = manager.backend  # the hooks: the manager may refuse before calling them
    for attempt in (
        lambda: backend.sessionkeeper_store_if(
            session=Session("top", clock.now, clock.now, None), if_version=None, now=clock.now
        ),
        lambda: backend.sessionkeeper_rotate(session_id="top", new_id="top-2", now=clock.now),
    ):
        with pytest.raises(StorageError, match="cannot grow"):
            attempt()
    assert manager.peek("top") == largest
