"""Hostile bytes at the ``redis`` backend's stored-value door: whatever another program writes
under a session key or into the table's indexes, every read is the session or a clear
``StorageError`` naming the key, never another exception, and no other session is affected."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import example, given
from hypothesis import strategies as st

from sessionkeeper import Session, SessionManager, SessionNotFound, StorageError
from sessionkeeper.backend import encode_session
from sessionkeeper.testing import ManualClock

START = 1_700_000_000_000


class Door:
    """A manager on a table of its own, a raw client, and a neighbour session that every
    example checks is untouched."""

    def __init__(self, url: str) -> None:
        self.table = f"fuzz-{uuid.uuid4().hex}"
        self.clock = ManualClock(START)
        self.manager = SessionManager(
            backend="redis",
            backend_opts={"url": url, "table_name": self.table, "ttl_margin_ms": 3_600_000},
            clock=self.clock,
            cleanup_interval=0,
        )
        self.raw = redis.Redis.from_url(url)
        self.neighbour = self.manager.create(timeout_ms=10**9, metadata={"keep": [1, "x"]})
        self.neighbour_record = self.raw.get(self.key(self.neighbour.id))

    def key(self, session_id: str) -> str:
        return f"{{{self.table}}}:s:{session_id}"

    def close(self) -> None:
        self.manager.close()
        self.raw.close()

    def neighbour_untouched(self) -> None:
        """The neighbour session reads back as stored, byte for byte, and is still listed."""
        assert self.raw.get(self.key(self.neighbour.id)) == self.neighbour_record
        assert self.manager.peek(self.neighbour.id) == self.neighbour
        assert self.neighbour.id in self.manager.list()


@pytest.fixture(scope="module")
def door(redis_server: Any) -> Iterator[Door]:
    """One table for every example of this module (a manager per example would cost more
    than the example)."""
    found = Door(redis_server.url)
    try:
        yield found
    finally:
        found.close()


def _valid_record(session_id: str) -> bytes:
    return encode_session(
        Session(session_id, START, START, 60_000, {"n": 1, "s": "text", "l": [1.5, None]})
    )


@st.composite
def records(draw: st.DrawFn, session_id: str) -> bytes:
    """Garbage: random bytes, or a valid record of this id truncated, extended, or with bytes
    replaced (the damage a partial write or another program leaves)."""
    kind = draw(st.sampled_from(["random", "truncated", "extended", "flipped"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    record = _valid_record(session_id)
    if kind == "truncated":
        return record[: draw(st.integers(0, len(record) - 1))]
    if kind == "extended":
        return record + draw(st.binary(min_size=1, max_size=20))
    changed = bytearray(record)
    for _ in range(draw(st.integers(1, 4))):
        changed[draw(st.integers(0, len(record) - 1))] = draw(st.integers(0, 255))
    return bytes(changed)


def _read_or_storage_error(operation: Any, *args: Any) -> object:
    """What ``operation(*args)`` returns, or the ``StorageError`` it raises (any other
    exception propagates and fails the test)."""
    try:
        return operation(*args)
    except StorageError as exc:
        return exc


VICTIM = "victim"


@pytest.mark.fuzz
@given(garbage=records(VICTIM))
@example(garbage=b"\x96\x01\xa6victim\xcf\x00")  # the touch script reads past the end
@example(garbage=b"\x96\x01\xa6victim\x01\x02\xcd\x01")
@example(garbage=b"\xc1 not msgpack")
def test_garbage_under_a_session_key_is_a_storage_error(door: Door, garbage: bytes) -> None:
    """Bytes written with a raw client under an indexed session key: ``fetch``, ``peek``,
    ``touch``, ``list``, ``count``, ``iter_sessions`` and ``cleanup_expired`` each return a
    valid session (the bytes happen to be one) or raise ``StorageError`` naming the key, never
    another exception; an unconditional store over the key replaces it; the neighbour session
    is untouched throughout."""
    session_id = VICTIM
    key = door.key(session_id)
    door.raw.set(key, garbage)
    door.raw.zadd(f"{{{door.table}}}:ids", {session_id: 0})
    door.raw.zadd(f"{{{door.table}}}:exp", {session_id: START + 60_000})
    manager = door.manager
    try:
        for operation, args in (
            (manager.peek, (session_id,)),
            (manager.fetch, (session_id,)),
            (manager.touch, (session_id,)),
            # The hooks themselves: the touch script parses the record on the server, as when
            # another program damages it between a manager's read and its touch.
            (manager.backend.sessionkeeper_fetch, (session_id,)),
            (manager.backend.sessionkeeper_touch, (session_id, door.clock.now + 10**6)),
            (manager.backend.sessionkeeper_touch, (session_id, 2**63 - 1)),
            (lambda: list(manager.iter_sessions(include_expired=True)), ()),
        ):
            door.clock.advance(5_000)  # so that each access would write a touch back
            try:
                outcome = _read_or_storage_error(operation, *args)
            except SessionNotFound:
                continue  # the bytes decoded to a session that is expired at the clock's time
            if isinstance(outcome, StorageError):
                assert key in str(outcome) or "touch failed" in str(outcome), outcome
                assert outcome.backend == "redis"
            elif isinstance(outcome, Session):
                assert outcome.id == session_id
        assert isinstance(manager.list(), list)
        assert isinstance(manager.count(), int)
        _read_or_storage_error(manager.cleanup_expired)
        door.neighbour_untouched()
        replacement = Session(session_id, door.clock.now, door.clock.now, None, {"ok": True})
        stored = manager.store(replacement)
        assert stored == replacement.with_version(stored.version)
        assert manager.peek(session_id) == stored
    finally:
        door.raw.delete(key)
        door.raw.zrem(f"{{{door.table}}}:ids", session_id)
        door.raw.zrem(f"{{{door.table}}}:exp", session_id)
    door.neighbour_untouched()


@pytest.mark.fuzz
@given(member=st.binary(min_size=1, max_size=40))
def test_garbage_in_the_id_index_is_a_storage_error(door: Door, member: bytes) -> None:
    """A member another program added to the table's indexes (any bytes, not an id the
    backend could have written): ``list``, ``count`` and ``iter_sessions`` return or raise
    ``StorageError`` naming the index, never another exception (a ``UnicodeDecodeError``
    before); a cleanup removes an expired junk deadline entry instead of failing on it (and
    with it every later cleanup); the neighbour session is untouched."""
    ids_key, exp_key = f"{{{door.table}}}:ids", f"{{{door.table}}}:exp"
    door.raw.zadd(ids_key, {member: 0})
    # Expired at the door's clock, whatever ran before (the door is shared by the module's
    # tests, and a test that ran alone saw the clock still at START: nothing expired).
    door.raw.zadd(exp_key, {member: door.clock() - 1})
    manager = door.manager
    try:
        for operation in (manager.list, lambda: list(manager.iter_sessions(include_expired=True))):
            outcome = _read_or_storage_error(operation)
            if isinstance(outcome, StorageError):
                assert ids_key in str(outcome), outcome
        assert isinstance(manager.count(), int)
        assert manager.cleanup_expired() >= 1
        assert door.raw.zscore(exp_key, member) is None
    finally:
        door.raw.zrem(ids_key, member)
        door.raw.zrem(exp_key, member)
    door.neighbour_untouched()
