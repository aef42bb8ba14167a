"""The core :class:`~sessionkeeper._table.SessionTable`: one ``dict`` of sessions, its expiry
index, its lock and its sweep lock, written once for every in-memory backend.

Checked against plain ``dict`` models: single-threaded (a Hypothesis state machine), with real
threads writing disjoint ids while a sweep runs, and with threads racing on one id through the
compare-and-set.
"""

from __future__ import annotations

import random
import threading
from types import TracebackType

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sessionkeeper import Session
from sessionkeeper._expiry import BATCH, BUCKET_MS, bucket_of
from sessionkeeper._table import SessionTable

START = 1_700_000_000_000
HOUR = 3_600_000


def session(
    session_id: str, last_accessed: int, timeout_ms: int | None = HOUR, n: int = 0
) -> Session:
    return Session(session_id, last_accessed, last_accessed, timeout_ms, {"n": n})


def indexed(table: SessionTable) -> bool:
    """Every stored session that can expire has an index entry at or before its deadline's
    bucket, and the index's entry count is exact."""
    earliest: dict[str, int] = {}
    for bucket, entries in table.index.buckets.items():
        for session_id in entries:
            earliest[session_id] = min(bucket, earliest.get(session_id, bucket))
    exact = sum(map(len, table.index.buckets.values())) == table.index_entries()
    return exact and all(
        s.timeout_ms is None or earliest.get(sid, bucket_of(s) + 1) <= bucket_of(s)
        for sid, s in table.sessions.items()
    )


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
        assert table.stats() == {"stored": 3, "index_entries": 2, "index_buckets": 2}

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


class TableMachine(RuleBasedStateMachine):
    """SessionTable against a dict model, with a tiny slack so that rebuilds happen."""

    def __init__(self) -> None:
        super().__init__()
        self.table = SessionTable(slack=2)
        self.model: dict[str, Session] = {}
        self.now = START

    def live(self) -> set[str]:
        return {sid for sid, s in self.model.items() if not s.is_expired(self.now)}

    ids = st.sampled_from([f"s{i}" for i in range(8)])

    @rule(
        sid=ids,
        age=st.integers(0, 4 * BUCKET_MS),
        timeout=st.none() | st.integers(1, 6 * BUCKET_MS),
    )
    def put(self, sid: str, age: int, timeout: int | None) -> None:
        stored = session(sid, self.now - age, timeout)
        assert self.table.put(stored) is self.model.get(sid)
        self.model[sid] = stored

    @rule(sid=ids, timeout=st.none() | st.integers(1, 6 * BUCKET_MS), stale=st.booleans())
    def replace(self, sid: str, timeout: int | None, stale: bool) -> None:
        current = self.model.get(sid)
        expected = session(sid, 0) if stale and current is not None else current
        stored = session(sid, self.now, timeout)
        done = self.table.replace(stored, expected)
        assert done is (expected is current)
        if done:
            self.model[sid] = stored

    @rule(sid=ids)
    def delete(self, sid: str) -> None:
        assert self.table.delete(sid) is self.model.pop(sid, None)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def touch(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.model)))
        touched = self.table.touch(sid, self.now)
        assert touched is not None
        assert touched.last_accessed == max(self.now, self.model[sid].last_accessed)
        self.model[sid] = touched

    @rule(ms=st.integers(0, 3 * BUCKET_MS))
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule()
    def sweep(self) -> None:
        expired = set(self.model) - self.live()
        batches: list[list[Session]] = []
        assert self.table.sweep(self.now, batches.append) == len(expired)
        assert {s.id for batch in batches for s in batch} == expired
        for sid in expired:
            del self.model[sid]

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert self.table.sessions == self.model
        assert self.table.count_live(self.now) == len(self.live())
        assert set(self.table.list_live(self.now)) == self.live()
        assert indexed(self.table)
        assert self.table.index_entries() <= 2 * len(self.table) + 2


# The number of examples comes from the Hypothesis profile (conftest.py).
TableMachine.TestCase.settings = settings(stateful_step_count=50)
TestTableMachine = TableMachine.TestCase
TestTableMachine.__doc__ = (
    "Random puts, replaces, deletes, touches, clock moves and sweeps agree with a dict model, "
    "and the index covers every stored session within its size bound."
)
