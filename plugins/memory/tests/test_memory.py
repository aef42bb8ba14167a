"""Behaviour specific to the ``memory`` backend: shared named tables, the lazy expiry index,
batched cleanup under concurrent writes, and option validation.

The shared semantics (docs/backends.md) are the conformance kit's, in ``test_conformance.py``.
Every test uses the real :class:`~sessionkeeper.SessionManager` with an injected clock, and a
table name of its own so that tests never share a table by accident.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from sessionkeeper import (
    ConfigError,
    Session,
    SessionManager,
    SessionNotFound,
    StorageError,
    VersionConflict,
)
from sessionkeeper._expiry import SLACK
from sessionkeeper.testing import ManualClock
from sessionkeeper_memory import BUCKET_MS, MemoryBackend, MemoryOptions
from sessionkeeper_memory._table import BATCH

START = 1_700_000_000_000
_names = itertools.count()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def table_name() -> str:
    return f"test-memory-{next(_names)}"


ManagerFactory = Callable[..., SessionManager]


@pytest.fixture
def open_manager(clock: ManualClock, table_name: str) -> Iterator[ManagerFactory]:
    """Open managers on this test's table (by default) and close them all afterwards."""
    managers: list[SessionManager] = []

    def factory(name: str | None = None, **kwargs: Any) -> SessionManager:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("cleanup_interval", 0)
        manager = SessionManager(
            backend="memory", backend_opts={"table_name": name or table_name}, **kwargs
        )
        managers.append(manager)
        return manager

    yield factory
    for manager in reversed(managers):
        manager.close()


@pytest.fixture
def manager(open_manager: ManagerFactory) -> SessionManager:
    return open_manager()


def make_session(session_id: str, last_accessed: int, timeout_ms: int | None = 10_000) -> Session:
    return Session(session_id, last_accessed, last_accessed, timeout_ms, {"n": session_id})


def backend_stats(manager: SessionManager) -> dict[str, Any]:
    stats: dict[str, Any] = manager.stats()["backend_stats"]
    return stats


class TestOptions:
    def test_default_table_name(self) -> None:
        """Without options the backend uses the table named "sessions"."""
        assert MemoryOptions().table_name == "sessions"

    def test_capabilities(self) -> None:
        """The backend declares itself in-process (not persistent, shared, replicated,
        blocking) and atomic: its conditional operations run under the table's lock."""
        caps = MemoryBackend.capabilities
        assert caps.as_dict() == {
            "persistent": False,
            "shared": False,
            "replicated": False,
            "blocking": False,
            "read_only_open": True,
            "atomic": True,
        }

    @pytest.mark.parametrize("name", ["", "   "])
    def test_blank_table_name_is_a_config_error(self, name: str) -> None:
        """An empty or blank table_name is a ConfigError whose key is the option."""
        with pytest.raises(ConfigError, match="table_name: must be a non-empty name") as info:
            SessionManager(backend_opts={"table_name": name}, cleanup_interval=0)
        assert info.value.key == "sessionkeeper.backend_opts.table_name"

    def test_table_name_must_be_a_string(self) -> None:
        """A table_name that is not a string is a ConfigError whose key is the option."""
        with pytest.raises(ConfigError, match="table_name") as info:
            SessionManager(backend_opts={"table_name": 7}, cleanup_interval=0)
        assert info.value.key == "sessionkeeper.backend_opts.table_name"

    def test_unknown_option_is_a_config_error(self) -> None:
        """An unknown key in backend_opts is a ConfigError naming the key and the allowed ones."""
        with pytest.raises(ConfigError, match=r"tabel_name: unknown key \(allowed: table_name\)"):
            SessionManager(backend_opts={"tabel_name": "x"}, cleanup_interval=0)


class TestSharedTables:
    def test_managers_with_one_table_name_share_sessions(
        self, open_manager: ManagerFactory
    ) -> None:
        """Two managers naming the same table see each other's stores and deletes."""
        first, second = open_manager(), open_manager()
        session = first.create(metadata={"user_id": "u1"})
        assert second.peek(session.id) is session
        assert second.delete(session.id) is True
        with pytest.raises(SessionNotFound):
            first.peek(session.id)
        assert backend_stats(first)["table_users"] == 2

    def test_different_table_names_are_independent(
        self, open_manager: ManagerFactory, table_name: str
    ) -> None:
        """Sessions stored under one table name are invisible under another."""
        first, other = open_manager(), open_manager(table_name + "-other")
        session = first.create()
        with pytest.raises(SessionNotFound):
            other.peek(session.id)
        assert other.count() == 0
        assert first.count() == 1

    def test_table_survives_while_one_user_remains(self, open_manager: ManagerFactory) -> None:
        """Closing one of two managers on a table leaves the sessions to the other."""
        first, second = open_manager(), open_manager()
        session = first.create()
        first.close()
        assert second.peek(session.id) == session
        assert backend_stats(second)["table_users"] == 1

    def test_table_is_dropped_after_the_last_close(self, open_manager: ManagerFactory) -> None:
        """When the last manager on a table closes, the table goes; reopening starts empty."""
        first, second = open_manager(), open_manager()
        session = first.create()
        first.close()
        second.close()
        reopened = open_manager()
        assert reopened.count() == 0
        with pytest.raises(SessionNotFound):
            reopened.peek(session.id)

    def test_fetch_returns_the_stored_object(self, manager: SessionManager) -> None:
        """Sessions are immutable, so fetch hands back the stored object itself, not a copy."""
        session = make_session("abc", START)
        manager.store(session)
        assert manager.fetch("abc") is session

    def test_backend_close_is_idempotent(self, table_name: str) -> None:
        """Closing a backend twice releases its table once, leaving other users unaffected."""
        manager = SessionManager(backend_opts={"table_name": table_name}, cleanup_interval=0)
        with manager:
            other = MemoryBackend(MemoryOptions(table_name=table_name), manager.backend.context)
            other.sessionkeeper_open()
            other.sessionkeeper_close()
            other.sessionkeeper_close()
            session = manager.create()
            assert manager.peek(session.id) == session
            assert backend_stats(manager)["table_users"] == 1


class TestLifecycle:
    def test_writes_before_open_are_refused(self, manager: SessionManager) -> None:
        """A backend that is not open reads as empty and refuses writes with a StorageError."""
        backend = MemoryBackend(MemoryOptions(table_name="never-opened"), manager.backend.context)
        assert backend.sessionkeeper_fetch("abc") is None
        assert backend.sessionkeeper_count(START) == 0
        with pytest.raises(StorageError, match=r"memory backend: cannot store .* not open"):
            backend.sessionkeeper_store(make_session("abc", START))

    def test_touch_never_moves_backwards(self, manager: SessionManager) -> None:
        """The touch hook ignores an earlier time and returns the stored session unchanged;
        an unknown id gives None."""
        backend = manager.backend
        assert isinstance(backend, MemoryBackend)
        session = make_session("abc", START + 5_000)
        manager.store(session)
        assert backend.sessionkeeper_touch("abc", START) is session
        assert backend.sessionkeeper_touch("abc", START + 5_000) is session
        moved = backend.sessionkeeper_touch("abc", START + 6_000)
        assert moved is not None
        assert moved.last_accessed == START + 6_000
        assert manager.peek("abc") is moved
        assert backend.sessionkeeper_touch("missing", START) is None

    def test_closed_backend_no_longer_sees_the_table(self, open_manager: ManagerFactory) -> None:
        """After close, a backend's fetch finds nothing even while others still use the table."""
        first, second = open_manager(), open_manager()
        session = first.create()
        backend = first.backend
        first.close()
        assert isinstance(backend, MemoryBackend)
        assert backend.sessionkeeper_fetch(session.id) is None
        assert second.peek(session.id) == session

    def test_read_only_manager_reads_but_refuses_writes(self, open_manager: ManagerFactory) -> None:
        """A read-only manager on a shared table sees its sessions; a write is a StorageError."""
        writer = open_manager()
        session = writer.create()
        reader = open_manager(read_only=True)
        assert reader.peek(session.id) == session
        assert reader.list() == [session.id]
        with pytest.raises(StorageError, match="opened read-only"):
            reader.store(make_session("other", START))
        with pytest.raises(StorageError, match="opened read-only"):
            reader.delete(session.id)
        assert writer.peek(session.id) == session


def backend_of(manager: SessionManager) -> MemoryBackend:
    backend = manager.backend
    assert isinstance(backend, MemoryBackend)
    return backend


class TestIdentity:
    def test_one_table_one_identity(self, open_manager: ManagerFactory) -> None:
        """Managers naming one table in this process have one identity, naming the process and
        the table; another table has another."""
        first, second = open_manager("shared-identity"), open_manager("shared-identity")
        other = open_manager("other-identity")
        assert first.identity() == second.identity() == f"memory:{os.getpid()}:shared-identity"
        assert other.identity() != first.identity()


class TestAtomicHooks:
    """The hooks of issue 14 on the backend itself, through the shared table."""

    def test_store_if_take_rotate_act_on_the_shared_table(
        self, open_manager: ManagerFactory
    ) -> None:
        """A conditional store, a rotation and a take through one manager's backend are what
        another manager on the same table sees."""
        first, second = backend_of(open_manager()), backend_of(open_manager())
        assert first.sessionkeeper_store_if(make_session("a", START), 0, START).version == 1
        with pytest.raises(VersionConflict) as caught:
            second.sessionkeeper_store_if(make_session("a", START), 0, START)
        assert (caught.value.expected, caught.value.actual) == (0, 1)
        rotated = second.sessionkeeper_rotate("a", "b", START + 5)
        assert rotated is not None
        assert (rotated.id, rotated.version, rotated.last_accessed) == ("b", 2, START + 5)
        assert first.sessionkeeper_fetch("a") is None
        assert first.sessionkeeper_take("b", START + 5) is rotated
        assert second.sessionkeeper_take("b", START + 5) is None

    def test_owner_hooks(self, manager: SessionManager) -> None:
        """list_owner and count_owner give the owner's live sessions; delete_owner removes all
        of them, expired included, and says how many; stats count the owners."""
        backend = backend_of(manager)
        for i in range(3):
            backend.sessionkeeper_store(
                Session(f"a{i}", START, START, 1_000 * (i + 1), {}, owner="alice")
            )
        backend.sessionkeeper_store(Session("b", START, START, None, {}, owner="bob"))
        assert sorted(backend.sessionkeeper_list_owner("alice", START + 1_500)) == ["a1", "a2"]
        assert backend.sessionkeeper_count_owner("alice", START + 1_500) == 2
        assert backend_stats(manager)["owners"] == 2
        assert backend.sessionkeeper_delete_owner("alice") == 3
        assert backend.sessionkeeper_count_owner("alice", START) == 0
        assert backend.sessionkeeper_list_owner("bob", START) == ["b"]

    def test_read_only_refuses_atomic_writes_but_lists_owners(
        self, open_manager: ManagerFactory
    ) -> None:
        """A read-only backend refuses store_if, take, rotate and delete_owner with a
        StorageError and changes nothing; listing and counting by owner work."""
        writer = backend_of(open_manager())
        writer.sessionkeeper_store(Session("a", START, START, None, {}, owner="alice"))
        reader = backend_of(open_manager(read_only=True))
        attempts: list[Callable[[], object]] = [
            lambda: reader.sessionkeeper_store_if(make_session("x", START), None, START),
            lambda: reader.sessionkeeper_take("a", START),
            lambda: reader.sessionkeeper_rotate("a", "b", START),
            lambda: reader.sessionkeeper_delete_owner("alice"),
        ]
        for attempt in attempts:
            with pytest.raises(StorageError, match="opened read-only"):
                attempt()
        assert reader.sessionkeeper_list_owner("alice", START) == ["a"]
        assert reader.sessionkeeper_count_owner("alice", START) == 1
        assert writer.sessionkeeper_fetch("a") is not None
        assert writer.sessionkeeper_fetch("x") is None

    def test_a_closed_backend_refuses_atomic_writes(self, manager: SessionManager) -> None:
        """A backend that is not open refuses the atomic writes with a StorageError."""
        backend = MemoryBackend(MemoryOptions(table_name="never-opened"), manager.backend.context)
        with pytest.raises(StorageError, match="not open"):
            backend.sessionkeeper_take("a", START)
        with pytest.raises(StorageError, match="not open"):
            backend.sessionkeeper_delete_owner("alice")
        assert backend.sessionkeeper_list_owner("alice", START) == []


class TestExpiryIndex:
    def test_touched_sessions_keep_one_index_entry(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Touching a session, across many buckets, adds no index entries (the index is lazy)."""
        sessions = [manager.create(timeout_ms=60_000) for _ in range(10)]
        for _ in range(50):
            clock.advance(BUCKET_MS + 7)
            for session in sessions:
                manager.touch(session.id)
        assert backend_stats(manager)["index_entries"] == 10

    def test_cleanup_after_many_touches_removes_exactly_the_expired(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Sessions touched many times survive cleanup while live; untouched ones are removed."""
        touched = [manager.create(timeout_ms=5_000) for _ in range(20)]
        idle = [manager.create(timeout_ms=5_000) for _ in range(30)]
        assert manager.count() == 50
        for _ in range(20):
            clock.advance(1_500)
            for session in touched:
                manager.touch(session.id)
            if clock.now - START > 5_000:
                manager.cleanup_expired()
        assert set(manager.list()) == {s.id for s in touched}
        assert not {s.id for s in idle} & {
            s.id for s in manager.iter_sessions(include_expired=True)
        }
        assert manager.stats()["backend_stats"]["stored"] == 20
        clock.advance(5_001)
        assert manager.count() == 0
        assert manager.cleanup_expired() == 20
        assert backend_stats(manager)["stored"] == 0

    def test_boundary_bucket_is_split_at_now(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Within the bucket that holds ``now``, deadlines before now go and the rest stay."""
        base = (START // BUCKET_MS + 10) * BUCKET_MS  # a bucket's first millisecond
        timeout = 1_000
        for offset in range(BUCKET_MS):
            manager.store(make_session(f"s{offset}", base - timeout + offset, timeout))
        clock.set(base + 500)  # deadlines base..base+1023; expired iff deadline < now
        assert manager.count() == BUCKET_MS - 500
        assert manager.cleanup_expired() == 500
        assert sorted(manager.list()) == sorted(f"s{i}" for i in range(500, BUCKET_MS))
        clock.set(base + BUCKET_MS)
        assert manager.cleanup_expired() == BUCKET_MS - 500
        assert backend_stats(manager)["stored"] == 0

    def test_expiry_is_strictly_after_the_timeout(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A session is kept at exactly last_accessed + timeout_ms and removed one ms later."""
        manager.store(make_session("edge", START, 2_000))
        clock.set(START + 2_000)
        assert manager.cleanup_expired() == 0
        assert manager.count() == 1
        clock.advance(1)
        assert manager.cleanup_expired() == 1

    def test_store_with_an_earlier_deadline_is_cleaned_up(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Replacing a session by one that expires sooner re-indexes it, so cleanup finds it."""
        manager.store(make_session("s", START, 3_600_000))
        manager.store(make_session("s", START, 1_000))
        clock.advance(5_000)
        assert manager.count() == 0
        assert manager.cleanup_expired() == 1

    def test_store_without_timeout_is_never_cleaned_up(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A session replaced by one that never expires is skipped by cleanup and stays live."""
        manager.store(make_session("s", START, 1_000))
        manager.store(make_session("s", START, None))
        clock.advance(10 * BUCKET_MS)
        assert manager.cleanup_expired() == 0
        assert manager.list() == ["s"]
        assert backend_stats(manager)["index_entries"] == 0

    def test_deleted_and_restored_sessions_are_counted_once(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Stale and duplicate index entries (delete, re-store) never count a session twice."""
        for _ in range(3):
            manager.store(make_session("s", START, 1_000))
            manager.delete("s")
        manager.store(make_session("s", START, 1_000))
        clock.advance(2_000)
        assert manager.count() == 0
        assert manager.cleanup_expired() == 1
        assert manager.cleanup_expired() == 0

    def test_boundary_sweep_drops_duplicate_entries(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Scanning the bucket that holds ``now`` keeps one index entry per live session."""
        for _ in range(4):
            manager.store(make_session("s", START, 2_000))
            manager.delete("s")
        manager.store(make_session("s", START, 2_000))
        manager.store(make_session("gone", START, 2_000))
        manager.delete("gone")
        assert backend_stats(manager)["index_entries"] == 6
        clock.set(START + 2_000)  # inside the bucket of the deadline, not past it
        assert manager.cleanup_expired() == 0
        assert backend_stats(manager)["index_entries"] == 1
        assert manager.list() == ["s"]

    def test_deleted_sessions_do_not_stay_in_the_index(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Create/fetch/delete cycles leave the index as small as what is stored (issue 12,
        item 7): deleted sessions' entries do not wait for their deadline to be dropped."""
        cycles = 5 * SLACK
        for _ in range(cycles):
            session = manager.create(timeout_ms=1_800_000)
            manager.fetch(session.id)
            manager.delete(session.id)
            clock.advance(3)
        kept = [manager.create(timeout_ms=1_800_000) for _ in range(10)]
        stats = backend_stats(manager)
        assert stats["stored"] == 10
        assert stats["index_entries"] <= 2 * 10 + SLACK
        clock.advance(1_800_001 + BUCKET_MS)
        assert manager.cleanup_expired() == len(kept)
        assert backend_stats(manager)["index_entries"] == 0

    def test_replacing_sessions_does_not_grow_the_index(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Storing one id over and over with a deadline that moves earlier, or alternating
        with no timeout, keeps the index bounded by what is stored (issue 12, item 7)."""
        for i in range(3 * SLACK):
            clock.advance(1)
            manager.store(make_session("s", clock.now, 3_600_000 if i % 2 else 1_000))
            manager.store(make_session("t", clock.now, None if i % 2 else 1_000))
        manager.store(make_session("t", clock.now, 1_000))
        assert backend_stats(manager)["index_entries"] <= 2 * 2 + SLACK
        clock.advance(2_000)
        assert manager.count() == 1  # "s" holds the long timeout, "t" expired
        assert manager.cleanup_expired() == 1
        assert manager.list() == ["s"]

    def test_count_excludes_expired_before_cleanup(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """count() and list() leave out expired sessions whether or not cleanup has run."""
        for i in range(100):
            manager.store(make_session(f"short{i}", START, 1_000 + i * 100))
        for i in range(50):
            manager.store(make_session(f"forever{i}", START, None))
        clock.advance(1_000 + 40 * 100)  # short0..short39 expired (strictly after the timeout)
        assert manager.count() == 50 + 60
        assert len(manager.list()) == 110
        assert backend_stats(manager)["stored"] == 150

    def test_sweep_larger_than_a_batch(self, manager: SessionManager, clock: ManualClock) -> None:
        """A cleanup spanning several batches and buckets removes every expired session."""
        total = 3 * BATCH + 17
        for i in range(total):
            manager.store(make_session(f"s{i}", START + i * 3, 1_000))
        manager.store(make_session("live", START + total * 3, 1_000))
        clock.set(START + total * 3 + 500)
        removed = manager.cleanup_expired()
        assert removed == total - 166  # the last 166 are within 500 ms of now: still live
        assert manager.count() == 167
        assert backend_stats(manager)["stored"] == 167

    def test_iter_sessions_includes_expired_and_tolerates_writes(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """iter_sessions(include_expired=True) yields every stored session once, even while
        sessions are stored and deleted during the iteration."""
        stored = {manager.create(timeout_ms=1_000).id for _ in range(50)}
        clock.advance(2_000)
        seen = []
        for session in manager.iter_sessions(include_expired=True):
            seen.append(session.id)
            manager.create()
        assert sorted(seen) == sorted(stored)
        assert list(manager.iter_sessions()) != []
        assert all(s.id not in stored for s in manager.iter_sessions())


class TestConcurrency:
    def test_batched_cleanup_does_not_lose_concurrent_stores(
        self, open_manager: ManagerFactory, clock: ManualClock
    ) -> None:
        """While a large sweep runs (releasing its lock between batches), sessions stored and
        touched by other threads are neither lost nor wrongly removed."""
        sweeper, writer = open_manager(), open_manager()
        expired = 20 * BATCH
        for i in range(expired):
            writer.store(make_session(f"old{i}", START - 10_000 + i % 5_000, 5_000))
        clock.set(START + 1_000)
        written: list[list[str]] = [[] for _ in range(3)]
        start = threading.Barrier(4)

        def write(slot: int) -> None:
            start.wait()
            for i in range(3_000):
                session = writer.create(timeout_ms=60_000)
                written[slot].append(session.id)
                if i % 3 == 0:
                    writer.touch(written[slot][i // 2])

        threads = [threading.Thread(target=write, args=(slot,)) for slot in range(3)]
        for thread in threads:
            thread.start()
        start.wait()
        removed = sweeper.cleanup_expired()
        for thread in threads:
            thread.join()
        assert removed == expired
        assert sweeper.count() == 9_000
        assert set(sweeper.list()) == {sid for ids in written for sid in ids}
        clock.advance(60_001)
        assert sweeper.cleanup_expired() == 9_000
        assert backend_stats(sweeper)["stored"] == 0

    def test_concurrent_sweeps_remove_each_session_once(
        self, open_manager: ManagerFactory, clock: ManualClock
    ) -> None:
        """Two managers sweeping one table at once remove every expired session exactly once."""
        first, second = open_manager(), open_manager()
        for i in range(5 * BATCH):
            first.store(make_session(f"s{i}", START - 20_000 + i, 1_000))
        clock.set(START)
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda m=m: results.append(m.cleanup_expired()))
            for m in (first, second)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(results) == 5 * BATCH
        assert first.count() == 0


class IndexMachine(RuleBasedStateMachine):
    """The memory backend against a dict model, with time moving across bucket boundaries."""

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(START)
        self.manager = SessionManager(
            backend_opts={"table_name": f"test-memory-machine-{next(_names)}"},
            cleanup_interval=0,
            clock=self.clock,
        )
        self.model: dict[str, Session] = {}

    def live_model(self) -> set[str]:
        now = self.clock.now
        return {sid for sid, s in self.model.items() if not s.is_expired(now)}

    @rule(target=ids, sid=st.text("abcdefgh", min_size=1, max_size=3))
    def new_id(self, sid: str) -> str:
        return sid

    @rule(
        sid=ids,
        age=st.integers(0, 5_000),
        timeout=st.none() | st.integers(1, 6_000),
    )
    def store(self, sid: str, age: int, timeout: int | None) -> None:
        at = max(self.clock.now - age, 0)
        session = make_session(sid, at, timeout)
        self.manager.store(session)
        self.model[sid] = session

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def touch(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.model)))
        if sid in self.live_model():
            self.model[sid] = self.manager.touch(sid)
            assert self.model[sid].last_accessed == self.clock.now

    @rule(sid=consumes(ids))
    def delete(self, sid: str) -> None:
        assert self.manager.delete(sid) is (self.model.pop(sid, None) is not None)

    @rule(ms=st.integers(0, 3 * BUCKET_MS))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule()
    def cleanup(self) -> None:
        expired = set(self.model) - self.live_model()
        assert self.manager.cleanup_expired() == len(expired)
        for sid in expired:
            del self.model[sid]

    @invariant()
    def agrees_with_model(self) -> None:
        live = self.live_model()
        assert self.manager.count() == len(live)
        assert set(self.manager.list()) == live

    def teardown(self) -> None:
        self.manager.close()


IndexMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestIndexMachine = IndexMachine.TestCase
TestIndexMachine.__doc__ = (
    "Random stores, touches, deletes, clock moves and cleanups agree with a dict model."
)
