"""The core :class:`~sessionkeeper._table.SessionTable`: one ``dict`` of sessions, its expiry
index, its lock and its sweep lock, written once for every in-memory backend.

Checked against plain ``dict`` models: single-threaded (a Hypothesis state machine with owners,
versions and both timeouts), with real threads writing disjoint ids while a sweep runs, and with
threads racing on one id through the compare-and-set and the atomic operations of issue 14
(``store_if``, ``take``, ``rotate``, ``delete_owner``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from types import TracebackType

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sessionkeeper import Session, VersionConflict
from sessionkeeper._expiry import BATCH, BUCKET_MS, bucket_of
from sessionkeeper._table import SessionTable

START = 1_700_000_000_000
HOUR = 3_600_000


def session(
    session_id: str,
    last_accessed: int,
    timeout_ms: int | None = HOUR,
    n: int = 0,
    *,
    created_at: int | None = None,
    version: int = 1,
    owner: str | None = None,
    absolute_timeout_ms: int | None = None,
) -> Session:
    return Session(
        session_id,
        last_accessed if created_at is None else created_at,
        last_accessed,
        timeout_ms,
        {"n": n},
        version=version,
        owner=owner,
        absolute_timeout_ms=absolute_timeout_ms,
    )


def expired(s: Session, now: int) -> bool:
    """The expiry rule of issue 14, written out here rather than taken from the model."""
    idle = s.timeout_ms is not None and now - s.last_accessed > s.timeout_ms
    absolute = s.absolute_timeout_ms is not None and now - s.created_at > s.absolute_timeout_ms
    return idle or absolute


def indexed(table: SessionTable) -> bool:
    """Every stored session that can expire has an index entry at or before its deadline's
    bucket, and the index's entry count is exact."""
    earliest: dict[str, int] = {}
    for bucket, entries in table.index.buckets.items():
        for session_id in entries:
            earliest[session_id] = min(bucket, earliest.get(session_id, bucket))
    exact = sum(map(len, table.index.buckets.values())) == table.index_entries()
    return exact and all(
        bucket_of(s) < 0 or earliest.get(sid, bucket_of(s) + 1) <= bucket_of(s)
        for sid, s in table.sessions.items()
    )


def owned(table: SessionTable) -> bool:
    """The owner index is exactly the owners of the stored sessions, no empty sets."""
    expected: dict[str, set[str]] = {}
    for sid, s in table.sessions.items():
        if s.owner is not None:
            expected.setdefault(s.owner, set()).add(sid)
    return table.owners == expected


class RecordingLock:
    """A real :class:`threading.Lock` that records ``acquire`` and ``release`` in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[str] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        acquired = self._lock.acquire(blocking, timeout)
        if acquired:
            self.events.append("acquire")
        return acquired

    def release(self) -> None:
        self.events.append("release")
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> None:
        self.release()


class TestOperations:
    def test_put_returns_what_it_replaced(self) -> None:
        """put inserts (returning None) or replaces (returning the previous session)."""
        table = SessionTable()
        first, second = session("a", START), session("a", START + 1)
        assert table.put(first) is None
        assert table.put(second) is first
        assert table.get("a") is second
        assert len(table) == 1
        assert "a" in table

    def test_replace_is_a_compare_and_set_on_the_stored_object(self) -> None:
        """replace stores only when the stored session is the expected object (None: absent)."""
        table = SessionTable()
        first = session("a", START)
        assert table.replace(first, None) is True
        assert table.replace(session("a", START, n=1), None) is False
        equal_copy = session("a", START)
        assert table.replace(session("a", START, n=2), equal_copy) is False  # equal, not it
        newer = session("a", START, n=3)
        assert table.replace(newer, first) is True
        assert table.get("a") is newer

    def test_delete_returns_the_removed_session(self) -> None:
        """delete returns the session it removed, and None for an unknown id."""
        table = SessionTable()
        stored = session("a", START)
        table.put(stored)
        assert table.delete("a") is stored
        assert table.delete("a") is None
        assert table.get("a") is None

    def test_touch_only_moves_forward(self) -> None:
        """touch moves last_accessed forward, ignores an earlier time, and gives None for an
        unknown id."""
        table = SessionTable()
        stored = session("a", START + 5)
        table.put(stored)
        assert table.touch("a", START) is stored
        touched = table.touch("a", START + 10)
        assert touched is not None
        assert touched.last_accessed == START + 10
        assert table.get("a") is touched
        assert table.touch("missing", START) is None

    def test_live_listing_and_counting_leave_out_the_expired(self) -> None:
        """list_live and count_live leave out expired sessions before any sweep; iter and
        snapshot include them."""
        table = SessionTable()
        table.put(session("short", START, 1_000))
        table.put(session("long", START, HOUR))
        table.put(session("forever", START, None))
        now = START + 1_001
        assert sorted(table.list_live(now)) == ["forever", "long"]
        assert table.count_live(now) == 2
        assert sorted(s.id for s in table.iter()) == ["forever", "long", "short"]
        assert table.stats() == {"stored": 3, "index_entries": 2, "index_buckets": 2, "owners": 0}

    def test_load_indexes_what_it_inserts(self) -> None:
        """load inserts a batch (replacing ids already there) and files each in the index."""
        table = SessionTable()
        table.put(session("a", START, HOUR))
        assert table.load([session("a", START, 1_000), session("b", START, 2_000)]) == 2
        assert indexed(table)
        assert table.sweep(START + 2_001) == 2
        assert len(table) == 0

    def test_clear_drops_sessions_and_entries(self) -> None:
        """clear empties the table and its index."""
        table = SessionTable()
        table.load(session(f"s{i}", START) for i in range(10))
        table.clear()
        assert len(table) == 0
        assert table.index_entries() == 0


class TestSweep:
    def test_batches_run_under_the_lock_which_is_released_between_them(self) -> None:
        """Each batch of a sweep is at most BATCH entries and is handed over with the lock
        held; the lock is released after every batch, so writers wait for one batch at most."""
        lock = RecordingLock()
        table = SessionTable(lock=lock)
        total = 3 * BATCH + 10
        table.load(session(f"s{i}", START + i, 1_000) for i in range(total))
        lock.events.clear()
        batches: list[int] = []

        def on_batch(deleted: list[Session]) -> None:
            assert lock.locked()
            assert lock.events[-1] == "acquire"
            batches.append(len(deleted))

        assert table.sweep(START + total + 1_000 + BUCKET_MS, on_batch) == total
        assert sum(batches) == total
        assert len(batches) >= 4
        assert max(batches) <= BATCH
        assert lock.events == ["acquire", "release"] * (len(lock.events) // 2)
        assert not lock.locked()

    def test_a_failing_batch_is_put_back(self) -> None:
        """When on_batch raises (a disk delete failed), its sessions are back in the table and
        indexed, the error propagates, and the next sweep removes them."""
        table = SessionTable()
        table.load(session(f"s{i}", START + i, 1_000) for i in range(2 * BATCH))
        now = START + 2 * BATCH + 1_000 + BUCKET_MS
        calls = 0

        def failing(deleted: list[Session]) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            table.sweep(now, failing)
        assert not table.lock.locked()
        remaining = len(table)
        assert remaining == BATCH  # the first batch went, the second came back
        assert indexed(table)
        assert table.sweep(now) == remaining
        assert len(table) == 0

    def test_stop_ends_the_sweep_between_batches(self) -> None:
        """stop, asked before each batch, ends the sweep; the rest waits for the next one."""
        table = SessionTable()
        total = 3 * BATCH
        table.load(session(f"s{i}", START + i, 1_000) for i in range(total))
        now = START + total + 1_000 + BUCKET_MS
        asked = 0

        def stop() -> bool:
            nonlocal asked
            asked += 1
            return asked > 1

        first = table.sweep(now, stop=stop)
        assert 0 < first < total
        assert first + table.sweep(now) == total

    def test_sweep_while_writers_run(self) -> None:
        """Writers on their own ids (stores, touches, deletes, compare-and-sets) while a sweep
        of many batches runs: the sweep removes exactly the expired sessions stored before,
        and the table ends equal to the writers' dict models."""
        table = SessionTable(slack=32)
        expired = 20 * BATCH
        table.load(session(f"old{i}", START - 10_000 + i % 5_000, 1_000) for i in range(expired))
        now = START
        writers = 4
        models: list[dict[str, Session]] = [{} for _ in range(writers)]
        barrier = threading.Barrier(writers + 1)

        def write(slot: int) -> None:
            rng = random.Random(slot)
            model = models[slot]
            barrier.wait()
            for step in range(4_000):
                sid = f"w{slot}-{rng.randrange(300)}"
                choice = rng.random()
                if choice < 0.5:
                    stored = session(sid, now + rng.randrange(1_000), HOUR, step)
                    table.put(stored)
                    model[sid] = stored
                elif choice < 0.7:
                    assert (table.delete(sid) is not None) is (model.pop(sid, None) is not None)
                elif choice < 0.85:
                    touched = table.touch(sid, now + 2_000 + step)
                    assert touched is table.get(sid)
                    if touched is None:
                        assert sid not in model
                    else:
                        model[sid] = touched
                else:
                    current = table.get(sid)
                    assert current is model.get(sid)
                    replacement = session(sid, now, HOUR, -step)
                    assert table.replace(replacement, current) is True
                    model[sid] = replacement

        threads = [threading.Thread(target=write, args=(slot,)) for slot in range(writers)]
        for thread in threads:
            thread.start()
        barrier.wait()
        removed = table.sweep(now + 1)
        for thread in threads:
            thread.join()
        assert removed == expired
        union = {sid: s for model in models for sid, s in model.items()}
        assert table.sessions == union
        assert all(table.sessions[sid] is s for sid, s in union.items())
        assert indexed(table)
        assert table.index_entries() <= 2 * len(table) + 32

    def test_concurrent_compare_and_set_counts_exactly(self) -> None:
        """Threads that each add 1 to one session's counter by read + replace, retrying when
        the replace loses, leave exactly the number of increments."""
        table = SessionTable()
        table.put(session("c", START, HOUR, 0))
        threads, each = 6, 500

        def increment() -> None:
            for _ in range(each):
                while True:
                    current = table.get("c")
                    assert current is not None
                    updated = session("c", START, HOUR, int(str(current.metadata["n"])) + 1)
                    if table.replace(updated, current):
                        break

        workers = [threading.Thread(target=increment) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        final = table.get("c")
        assert final is not None
        assert final.metadata["n"] == threads * each


class TestOwnerIndex:
    def test_every_write_keeps_the_owner_index_exact(self) -> None:
        """put (new, same owner, other owner, no owner), delete, touch, load, take, rotate,
        sweep and clear leave the owner index equal to the owners of the stored sessions."""
        table = SessionTable()
        table.put(session("a", START, owner="alice"))
        table.put(session("b", START, owner="alice"))
        table.put(session("c", START, owner="bob"))
        table.put(session("d", START))
        assert table.owners == {"alice": {"a", "b"}, "bob": {"c"}}
        table.put(session("b", START, owner="bob"))  # moves to another owner
        table.put(session("c", START))  # loses its owner
        table.put(session("d", START, owner="carol"))  # gains one
        assert table.owners == {"alice": {"a"}, "bob": {"b"}, "carol": {"d"}}
        table.touch("a", START + 10)
        table.delete("d")
        assert table.owners == {"alice": {"a"}, "bob": {"b"}}
        table.load([session("e", START, owner="alice"), session("b", START, owner="alice")])
        assert table.owners == {"alice": {"a", "b", "e"}}
        assert table.take("e", START) is not None
        rotated = table.rotate("a", "a2", START)
        assert rotated is not None
        assert table.owners == {"alice": {"a2", "b"}}
        table.put(session("short", START, 1_000, owner="dave"))
        assert table.sweep(START + 1_001 + BUCKET_MS) == 1
        assert table.owners == {"alice": {"a2", "b"}}
        assert owned(table)
        table.clear()
        assert table.owners == {}

    def test_a_failing_sweep_batch_puts_the_owners_back(self) -> None:
        """When on_batch raises, the sessions put back are in the owner index again."""
        table = SessionTable()
        table.load(session(f"s{i}", START, 1_000, owner=f"u{i % 3}") for i in range(30))

        def failing(deleted: list[Session]) -> None:
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            table.sweep(START + 1_001, failing)
        assert len(table) == 30
        assert owned(table)

    def test_list_and_count_by_owner_leave_out_the_expired(self) -> None:
        """list_owner and count_owner give the owner's live sessions: expired by the idle or
        by the absolute timeout (before any sweep) are left out; other owners' never appear."""
        table = SessionTable()
        table.put(session("live", START, owner="alice"))
        table.put(session("idle", START, 1_000, owner="alice"))
        table.put(
            session(
                "old", START + 5_000, created_at=START, owner="alice", absolute_timeout_ms=2_000
            )
        )
        table.put(session("forever", START, None, owner="alice"))
        table.put(session("other", START, owner="bob"))
        now = START + 5_000
        assert sorted(table.list_owner("alice", now)) == ["forever", "live"]
        assert table.count_owner("alice", now) == 2
        assert table.list_owner("nobody", now) == []
        assert table.count_owner("nobody", now) == 0
        assert table.list_owner("bob", now) == ["other"]

    def test_listing_by_owner_reads_only_the_owners_sessions(self) -> None:
        """list_owner, count_owner and delete_owner look at the owner's sessions only, however
        many other sessions the table holds: the cost is what the owner holds."""

        class CountingDict(dict[str, Session]):
            reads = 0

            def __getitem__(self, key: str) -> Session:
                self.reads += 1
                return super().__getitem__(key)

            def get(self, key: str, default: Session | None = None) -> Session | None:  # type: ignore[override]
                self.reads += 1
                return super().get(key, default)

            def pop(self, key: str, *default: Session | None) -> Session | None:  # type: ignore[override]
                self.reads += 1
                return super().pop(key, *default)

            def items(self):  # type: ignore[no-untyped-def]
                raise AssertionError("the whole table was scanned")

            def values(self):  # type: ignore[no-untyped-def]
                raise AssertionError("the whole table was scanned")

        table = SessionTable()
        table.sessions = counting = CountingDict()
        table.load(session(f"s{i}", START) for i in range(20_000))
        table.load(session(f"o{i}", START, owner="alice") for i in range(10))
        counting.reads = 0
        assert len(table.list_owner("alice", START)) == 10
        assert table.count_owner("alice", START) == 10
        assert table.delete_owner("alice") == 10
        assert counting.reads <= 3 * 10
        assert len(table) == 20_000


class TestStoreIf:
    def test_versions_follow_the_live_stored_session(self) -> None:
        """store_if stores version 1 for a new id and current + 1 after; if_version=None
        stores whatever is there; it returns the session as stored, which is the one given
        when that already carries the next version (no copy)."""
        table = SessionTable()
        first = table.store_if(session("a", START, version=7), None, START)
        assert first.version == 1
        assert table.sessions["a"] is first
        assert table.store_if(session("a", START, n=1), None, START).version == 2
        ready = session("a", START, n=2, version=3)
        assert table.store_if(ready, 2, START) is ready
        stored = table.sessions["a"]
        assert stored is ready
        assert (stored.version, stored.metadata) == (3, {"n": 2})
        assert indexed(table)

    def test_a_conflict_names_both_versions_and_stores_nothing(self) -> None:
        """A stale if_version raises VersionConflict carrying the id, the expected and the
        stored version; the stored session is unchanged (if_version=0: only if absent)."""
        table = SessionTable()
        table.store_if(session("a", START, owner="alice"), 0, START)
        before = table.sessions["a"]
        for expected in (0, 2, 5):
            with pytest.raises(VersionConflict) as caught:
                table.store_if(session("a", START, n=9, owner="bob"), expected, START)
            error = caught.value
            assert (error.session_id, error.expected, error.actual) == ("a", expected, 1)
        with pytest.raises(VersionConflict) as caught:
            table.store_if(session("b", START), 3, START)
        assert caught.value.actual == 0
        assert table.sessions == {"a": before}
        assert table.owners == {"alice": {"a"}}

    def test_an_expired_session_counts_as_absent(self) -> None:
        """A stored session expired at now (idle or absolute) has version 0: if_version=0
        replaces it with version 1, and its old version conflicts."""
        table = SessionTable()
        table.put(session("idle", START, 1_000, version=4))
        table.put(session("abs", START, None, version=4, absolute_timeout_ms=1_000))
        now = START + 1_001
        for sid in ("idle", "abs"):
            with pytest.raises(VersionConflict) as caught:
                table.store_if(session(sid, now), 4, now)
            assert caught.value.actual == 0
            assert table.store_if(session(sid, now), 0, now).version == 1
        assert table.store_if(session("idle", START, 1_000), 1, START + 1_000).version == 2


class TestTakeRotateDeleteOwner:
    def test_take_removes_and_returns_the_live_session(self) -> None:
        """take returns the live session and removes it; an expired one is removed and None
        returned; an unknown id gives None."""
        table = SessionTable()
        live = session("live", START, owner="alice")
        table.put(live)
        table.put(session("old", START, 1_000, owner="alice"))
        assert table.take("live", START) is live
        assert "live" not in table
        assert table.take("live", START) is None
        assert table.take("old", START + 1_001) is None
        assert "old" not in table
        assert table.owners == {}

    def test_rotate_moves_the_session_to_the_new_id(self) -> None:
        """rotate stores the session under the new id with version + 1 and last_accessed =
        now, everything else kept, and removes the old id; indexes follow."""
        table = SessionTable()
        table.put(
            session("old", START, HOUR, 5, version=3, owner="alice", absolute_timeout_ms=2 * HOUR)
        )
        rotated = table.rotate("old", "new", START + 10)
        assert rotated is not None
        assert rotated == Session(
            "new",
            START,
            START + 10,
            HOUR,
            {"n": 5},
            version=4,
            owner="alice",
            absolute_timeout_ms=2 * HOUR,
        )
        assert table.sessions == {"new": rotated}
        assert table.owners == {"alice": {"new"}}
        assert indexed(table)

    def test_rotate_never_moves_last_accessed_back(self) -> None:
        """A rotation at a now before last_accessed keeps last_accessed."""
        table = SessionTable()
        table.put(session("old", START + 100))
        rotated = table.rotate("old", "new", START)
        assert rotated is not None
        assert rotated.last_accessed == START + 100

    def test_rotate_of_an_absent_or_expired_session_changes_nothing(self) -> None:
        """rotate of an unknown or expired id returns None and stores nothing."""
        table = SessionTable()
        stale = session("stale", START, 1_000)
        table.put(stale)
        assert table.rotate("missing", "new", START) is None
        assert table.rotate("stale", "new", START + 1_001) is None
        assert table.sessions == {"stale": stale}

    def test_delete_owner_removes_every_session_of_the_owner(self) -> None:
        """delete_owner removes the owner's sessions, expired ones included, counts them and
        leaves other owners' and unowned sessions; a second call removes nothing."""
        table = SessionTable(slack=0)
        table.load(session(f"a{i}", START, 1_000 + i, owner="alice") for i in range(100))
        table.load(session(f"b{i}", START, owner="bob") for i in range(5))
        table.put(session("none", START))
        assert table.delete_owner("alice") == 100
        assert table.delete_owner("alice") == 0
        assert sorted(table.sessions) == sorted([*(f"b{i}" for i in range(5)), "none"])
        assert table.owners == {"bob": {f"b{i}" for i in range(5)}}
        assert indexed(table)
        assert table.index_entries() <= 2 * len(table)


class TestAtomicRaces:
    """Real threads racing on one id through the atomic operations."""

    THREADS = 8

    def run(self, target: Callable[[int], None]) -> None:
        barrier = threading.Barrier(self.THREADS)
        errors: list[BaseException] = []

        def body(slot: int) -> None:
            try:
                barrier.wait()
                target(slot)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=body, args=(i,)) for i in range(self.THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []

    def test_conditional_increments_count_exactly(self) -> None:
        """Threads each adding 1 K times by read + store_if(if_version=read), retrying on
        VersionConflict, end with exactly threads x K and version threads x K + 1."""
        table = SessionTable()
        table.store_if(session("c", START, n=0), 0, START)
        each = 300
        conflicts = [0] * self.THREADS

        def increment(slot: int) -> None:
            for _ in range(each):
                while True:
                    read = table.get("c")
                    assert read is not None
                    updated = session("c", START, n=int(str(read.metadata["n"])) + 1)
                    try:
                        table.store_if(updated, read.version, START)
                        break
                    except VersionConflict:
                        conflicts[slot] += 1

        self.run(increment)
        final = table.sessions["c"]
        assert final.metadata == {"n": self.THREADS * each}
        assert final.version == self.THREADS * each + 1

    def test_one_take_wins(self) -> None:
        """Of many threads taking one id, exactly one gets the session, every round."""
        table = SessionTable()
        for round_ in range(50):
            table.put(session(f"t{round_}", START, owner="alice"))
        winners: list[list[int]] = [[] for _ in range(50)]

        def take(slot: int) -> None:
            for round_ in range(50):
                if table.take(f"t{round_}", START) is not None:
                    winners[round_].append(slot)

        self.run(take)
        assert all(len(w) == 1 for w in winners)
        assert len(table) == 0
        assert table.owners == {}

    def test_one_store_if_absent_wins(self) -> None:
        """Of many threads storing one id with if_version=0, exactly one succeeds per id and
        its session is the one stored, at version 1."""
        table = SessionTable()
        won: dict[str, int] = {}
        actual: set[int] = set()
        lock = threading.Lock()

        def create(slot: int) -> None:
            for round_ in range(100):
                sid = f"i{round_}"
                try:
                    table.store_if(session(sid, START, n=slot, owner=f"u{slot}"), 0, START)
                except VersionConflict as exc:
                    actual.add(exc.actual)
                    continue
                with lock:
                    assert sid not in won
                    won[sid] = slot

        self.run(create)
        assert len(won) == 100
        assert actual == {1}
        for sid, slot in won.items():
            assert table.sessions[sid].metadata == {"n": slot}
            assert table.sessions[sid].version == 1
        assert owned(table)

    def test_rotate_racing_readers_never_shows_both_ids(self) -> None:
        """Readers that look at the new id, then the old one, never find both while other
        threads rotate a chain of sessions: no moment has both ids stored."""
        table = SessionTable()
        chains = 200
        for c in range(chains):
            table.put(session(f"c{c}-0", START, owner="alice"))
        steps = 20
        seen_both: list[tuple[str, str]] = []

        def work(slot: int) -> None:
            if slot == 0:  # the rotator
                for step in range(steps):
                    for c in range(chains):
                        assert table.rotate(f"c{c}-{step}", f"c{c}-{step + 1}", START) is not None
                return
            rng = random.Random(slot)
            for _ in range(20_000):
                c, step = rng.randrange(chains), rng.randrange(steps)
                old, new = f"c{c}-{step}", f"c{c}-{step + 1}"
                if table.get(new) is not None and table.get(old) is not None:
                    seen_both.append((old, new))

        self.run(work)
        assert seen_both == []
        assert sorted(table.sessions) == sorted(f"c{c}-{steps}" for c in range(chains))
        assert all(s.version == steps + 1 for s in table.sessions.values())
        assert table.owners == {"alice": set(table.sessions)}

    def test_delete_owner_racing_creators(self) -> None:
        """While threads keep storing sessions of one owner, delete_owner removes every one
        stored before it was called, and none stored after it returned."""
        table = SessionTable()
        calling = threading.Event()
        returned = threading.Event()
        before: list[str] = []  # stored (put returned) before delete_owner was called
        after: list[str] = []  # put begun after delete_owner returned
        lock = threading.Lock()

        def work(slot: int) -> None:
            if slot == 0:
                while len(table) < 2_000:
                    time.sleep(0.001)
                calling.set()
                table.delete_owner("alice")
                returned.set()
                return
            for i in range(100_000):
                sid = f"s{slot}-{i}"
                late = returned.is_set()
                table.put(session(sid, START, owner="alice"))
                with lock:
                    if late:
                        after.append(sid)
                        if len(after) >= 500:
                            return
                    elif not calling.is_set():
                        before.append(sid)

        self.run(work)
        assert before
        assert after
        assert not any(sid in table for sid in before)
        assert all(sid in table for sid in after)
        assert owned(table)


OWNERS = ("alice", "bob", "carol")
TIMEOUTS = st.none() | st.integers(1, 6 * BUCKET_MS)


@st.composite
def sessions(draw: st.DrawFn, sid: str, now: int) -> Session:
    """A session of ``sid`` last accessed at or before ``now``, created at or before that,
    with any version, owner, idle and absolute timeout."""
    last = now - draw(st.integers(0, 4 * BUCKET_MS))
    return session(
        sid,
        last,
        draw(TIMEOUTS),
        draw(st.integers(0, 9)),
        created_at=last - draw(st.integers(0, 4 * BUCKET_MS)),
        version=draw(st.integers(1, 5)),
        owner=draw(st.none() | st.sampled_from(OWNERS)),
        absolute_timeout_ms=draw(TIMEOUTS),
    )


class TableMachine(RuleBasedStateMachine):
    """SessionTable against a dict model, with a tiny slack so that rebuilds happen; sessions
    carry versions, owners and both timeouts, and the atomic operations are checked against
    the semantics of issue 14 written out here."""

    def __init__(self) -> None:
        super().__init__()
        self.table = SessionTable(slack=2)
        self.model: dict[str, Session] = {}
        self.now = START

    def live(self) -> set[str]:
        return {sid for sid, s in self.model.items() if not expired(s, self.now)}

    def current(self, sid: str) -> int:
        stored = self.model.get(sid)
        return 0 if stored is None or expired(stored, self.now) else stored.version

    ids = st.sampled_from([f"s{i}" for i in range(8)])

    @rule(sid=ids, data=st.data())
    def put(self, sid: str, data: st.DataObject) -> None:
        stored = data.draw(sessions(sid, self.now))
        assert self.table.put(stored) is self.model.get(sid)
        self.model[sid] = stored

    @rule(sid=ids, timeout=TIMEOUTS, stale=st.booleans())
    def replace(self, sid: str, timeout: int | None, stale: bool) -> None:
        current = self.model.get(sid)
        expected = session(sid, 0) if stale and current is not None else current
        stored = session(sid, self.now, timeout)
        done = self.table.replace(stored, expected)
        assert done is (expected is current)
        if done:
            self.model[sid] = stored

    @rule(
        sid=ids,
        data=st.data(),
        guess=st.none() | st.integers(0, 6) | st.just("current"),
        unlocked=st.booleans(),
    )
    def store_if(
        self, sid: str, data: st.DataObject, guess: int | str | None, unlocked: bool
    ) -> None:
        offered = data.draw(sessions(sid, self.now))
        current = self.current(sid)
        if_version = current if guess == "current" else guess
        assert not isinstance(if_version, str)

        def store_if() -> Session:
            if not unlocked:
                return self.table.store_if(offered, if_version, self.now)
            with self.table.lock:  # the variant for a caller holding the lock
                return self.table.store_if_unlocked(offered, if_version, self.now)

        if if_version is not None and if_version != current:
            with pytest.raises(VersionConflict) as caught:
                store_if()
            assert (caught.value.expected, caught.value.actual) == (if_version, current)
            return
        stored = store_if()
        assert stored is self.table.sessions[sid]
        assert stored == offered.replace(version=current + 1)
        self.model[sid] = stored

    @rule(sid=ids)
    def delete(self, sid: str) -> None:
        assert self.table.delete(sid) is self.model.pop(sid, None)

    @rule(sid=ids)
    def take(self, sid: str) -> None:
        live = sid in self.live()
        stored = self.model.pop(sid, None)
        assert self.table.take(sid, self.now) is (stored if live else None)

    @rule(sid=ids, data=st.data())
    def rotate(self, sid: str, data: st.DataObject) -> None:
        fresh = sorted({f"s{i}" for i in range(8)} - set(self.model))
        if not fresh:
            return
        new_id = data.draw(st.sampled_from(fresh))
        rotated = self.table.rotate(sid, new_id, self.now)
        if sid not in self.live():
            assert rotated is None
            return
        old = self.model.pop(sid)
        assert rotated == old.replace(
            id=new_id, last_accessed=max(self.now, old.last_accessed), version=old.version + 1
        )
        self.model[new_id] = rotated

    @rule(owner=st.sampled_from(OWNERS))
    def delete_owner(self, owner: str) -> None:
        theirs = [sid for sid, s in self.model.items() if s.owner == owner]
        assert self.table.delete_owner(owner) == len(theirs)
        for sid in theirs:
            del self.model[sid]

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def touch(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.model)))
        touched = self.table.touch(sid, self.now)
        assert touched is not None
        assert touched.last_accessed == max(self.now, self.model[sid].last_accessed)
        assert touched.version == self.model[sid].version
        self.model[sid] = touched

    @rule(ms=st.integers(0, 3 * BUCKET_MS))
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule()
    def sweep(self) -> None:
        gone = set(self.model) - self.live()
        batches: list[list[Session]] = []
        assert self.table.sweep(self.now, batches.append) == len(gone)
        assert {s.id for batch in batches for s in batch} == gone
        for sid in gone:
            del self.model[sid]

    @invariant()
    def agrees_with_the_model(self) -> None:
        live = self.live()
        assert self.table.sessions == self.model
        assert self.table.count_live(self.now) == len(live)
        assert set(self.table.list_live(self.now)) == live
        for owner in OWNERS:
            theirs = {sid for sid in live if self.model[sid].owner == owner}
            assert set(self.table.list_owner(owner, self.now)) == theirs
            assert self.table.count_owner(owner, self.now) == len(theirs)
        assert owned(self.table)
        assert indexed(self.table)
        assert self.table.index_entries() <= 2 * len(self.table) + 2


# The number of examples comes from the Hypothesis profile (conftest.py).
TableMachine.TestCase.settings = settings(stateful_step_count=50)
TestTableMachine = TableMachine.TestCase
TestTableMachine.__doc__ = (
    "Random puts, replaces, conditional stores, deletes, takes, rotations, deletes by owner, "
    "touches, clock moves and sweeps agree with a dict model (versions, owners, idle and "
    "absolute timeouts); the owner index is exact and the expiry index covers every stored "
    "session within its size bound."
)
