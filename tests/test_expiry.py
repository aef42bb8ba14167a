"""Core :class:`~sessionkeeper.backend.ExpiryIndex`: bounded by what is stored, O(expired) sweeps.

Driven through :class:`~sessionkeeper._table.SessionTable` (the way backends use it) or directly,
with a ``dict`` that counts its lookups: every index entry a sweep examines costs one
``sessions.get``, so the count is the sweep's cost.
"""

from __future__ import annotations

from sessionkeeper import Session
from sessionkeeper._expiry import BATCH, BUCKET_MS, SLACK, bucket_of
from sessionkeeper._table import SessionTable
from sessionkeeper.backend import ExpiryIndex

START = 1_700_000_000_000
HOUR = 3_600_000


class CountingDict(dict[str, Session]):
    """A ``dict`` of sessions that counts ``get`` calls (one per index entry examined)."""

    gets = 0

    def get(self, key: str, default: Session | None = None) -> Session | None:  # type: ignore[override]
        self.gets += 1
        return super().get(key, default)


def session(
    session_id: str,
    last_accessed: int,
    timeout_ms: int | None,
    *,
    created_at: int | None = None,
    absolute_timeout_ms: int | None = None,
) -> Session:
    return Session(
        session_id,
        last_accessed if created_at is None else created_at,
        last_accessed,
        timeout_ms,
        {},
        absolute_timeout_ms=absolute_timeout_ms,
    )


def covers(index: ExpiryIndex, sessions: dict[str, Session]) -> bool:
    """The index invariant: every stored session that can expire has an entry in a bucket at
    or before the bucket of its deadline, and the entry count is exact."""
    earliest: dict[str, int] = {}
    for bucket, entries in index.buckets.items():
        for session_id in entries:
            earliest[session_id] = min(bucket, earliest.get(session_id, bucket))
    counted = sum(map(len, index.buckets.values())) == index.size
    return counted and all(
        bucket_of(s) < 0 or earliest.get(sid, bucket_of(s) + 1) <= bucket_of(s)
        for sid, s in sessions.items()
    )


class TestBoundedByWhatIsStored:
    def test_create_delete_cycles_keep_the_index_small(self) -> None:
        """Many put/get/delete cycles leave at most 2 x stored + SLACK entries, not one per
        session ever stored (issue 12, item 7)."""
        table = SessionTable()
        for i in range(4 * SLACK):
            table.put(session(f"s{i}", START + i, HOUR))
            assert table.get(f"s{i}") is not None
            table.delete(f"s{i}")
            assert table.index_entries() <= 2 * len(table) + SLACK
        assert len(table) == 0
        assert table.index_entries() <= SLACK

    def test_bound_holds_with_live_sessions_among_the_deleted(self) -> None:
        """With sessions kept alongside the churn, the index stays within twice the stored
        plus SLACK, and still covers every kept session."""
        table = SessionTable(slack=16)
        for i in range(2_000):
            table.put(session(f"k{i % 50}", START + i, HOUR))  # 50 kept, replaced (later)
            table.put(session(f"d{i}", START + i, HOUR))
            table.delete(f"d{i}")
            assert table.index_entries() <= 2 * len(table) + 16
        assert len(table) == 50
        assert covers(table.index, table.sessions)

    def test_deadlines_moving_earlier_and_back_do_not_pile_up(self) -> None:
        """Replacing one id with alternately an earlier deadline, a later one and no timeout
        files at most a bounded number of entries (issue 12, item 7)."""
        table = SessionTable(slack=8)
        timeouts = [HOUR, 1_000, None, 2_000, 10 * HOUR]
        for i in range(1_000):
            table.put(session("s", START + i, timeouts[i % len(timeouts)]))
            assert table.index_entries() <= 2 * 1 + 8
            assert covers(table.index, table.sessions)

    def test_touches_add_no_entries(self) -> None:
        """Touching sessions across many buckets, with sweeps in between, keeps one entry per
        session: the sweep re-files a touched session once, where it now expires."""
        table = SessionTable()
        for i in range(100):
            table.put(session(f"s{i}", START, 10_000))
        now = START
        for _ in range(200):
            now += BUCKET_MS + 3
            for i in range(100):
                table.touch(f"s{i}", now)
            assert table.sweep(now) == 0
            assert table.index_entries() == 100
        assert covers(table.index, table.sessions)

    def test_a_compacted_index_sweeps_exactly_the_expired(self) -> None:
        """After a rebuild, a sweep still removes every expired session and only those."""
        table = SessionTable(slack=0)
        for i in range(300):
            table.put(session(f"s{i}", START + 10 * i, 5_000))
        for i in range(0, 300, 2):
            table.delete(f"s{i}")  # the 151st delete rebuilds: 300 entries > 2 x 149
        assert table.index_entries() <= 2 * len(table)
        now = START + 10 * 150 + 5_001  # s0..s150 expired: odd ones below 150 are stored
        assert table.count_live(now) == 75  # odd ids above 150
        assert table.sweep(now) == 75
        assert sorted(table.list_live(now)) == sorted(f"s{i}" for i in range(151, 300, 2))


class TestSweepCost:
    def test_sweep_examines_the_expired_not_the_stored(self) -> None:
        """A sweep of 1,000 expired among 50,000 examines about 1,000 entries plus the bucket
        holding now, however many entries churn left behind in later buckets."""
        sessions = CountingDict()
        index = ExpiryIndex()
        for i in range(50_000):
            s = session(f"s{i}", START + i, HOUR)
            index.stored(None, s)
            sessions[s.id] = s
        for i in range(10_000, 40_000):  # stale entries in later buckets
            del sessions[f"s{i}"]
            index.compact_if_stale(sessions)
        now = START + HOUR + 1_000  # s0..s999 expired
        sessions.gets = 0
        deleted = [s.id for step in index.sweep(now, sessions) for s in step]
        assert sorted(deleted) == sorted(f"s{i}" for i in range(1_000))
        assert sessions.gets <= 1_000 + 2 * BUCKET_MS

    def test_a_rebuild_costs_once_per_many_deletes(self) -> None:
        """Rebuilds are amortised: deleting n sessions one by one rebuilds O(log n) times and
        reads O(n) sessions in all, never O(n) per delete."""
        table = SessionTable(slack=64)
        n = 20_000
        for i in range(n):
            table.put(session(f"s{i}", START + i, HOUR))
        rebuilds = 0
        generation = table.index.generation
        for i in range(n):
            table.delete(f"s{i}")
            if table.index.generation != generation:
                generation = table.index.generation
                rebuilds += 1
        assert 1 <= rebuilds <= 16


class TestSweepAcrossARebuild:
    def test_rebuild_between_steps_of_the_earlier_buckets(self) -> None:
        """A rebuild (triggered by deletes) between two steps of a sweep leaves the sweep
        correct: every expired session is removed once, every live one stays indexed."""
        sessions: dict[str, Session] = {}
        index = ExpiryIndex(slack=0)
        for i in range(3 * BATCH):
            s = session(f"old{i}", START + i, 1_000)
            index.stored(None, s)
            sessions[s.id] = s
        for i in range(5_000):
            s = session(f"new{i}", START + i, HOUR)
            index.stored(None, s)
            sessions[s.id] = s
        now = START + 3 * BATCH + 5 * BUCKET_MS
        steps = index.sweep(now, sessions)
        removed = len(next(steps))
        for i in range(4_500):  # rebuilds the index under the sweep
            del sessions[f"new{i}"]
            index.compact_if_stale(sessions)
        assert index.generation > 0
        removed += sum(len(step) for step in steps)
        assert removed == 3 * BATCH
        assert sorted(sessions) == sorted(f"new{i}" for i in range(4_500, 5_000))
        assert covers(index, sessions)

    def test_rebuild_during_the_scan_of_the_bucket_holding_now(self) -> None:
        """A rebuild while the sweep scans the bucket holding ``now`` makes it scan the rebuilt
        bucket: the expired there are removed, the live there keep one entry each."""
        base = (START // BUCKET_MS + 10) * BUCKET_MS
        sessions: dict[str, Session] = {}
        index = ExpiryIndex(slack=0)
        total = 3 * BATCH
        for i in range(total):  # deadlines spread over one bucket, duplicates filed
            s = session(f"b{i}", base - 1_000 + i % BUCKET_MS, 1_000)
            index.stored(None, s)
            sessions[s.id] = s
        now = base + 500
        steps = index.sweep(now, sessions)
        removed = len(next(steps))
        deleted = 0
        for i in range(1, total, 2):  # delete half: the index is rebuilt
            if sessions.pop(f"b{i}", None) is not None:
                deleted += 1
                index.compact_if_stale(sessions)
        assert index.generation > 0
        removed += sum(len(step) for step in steps)
        assert removed + deleted == total - len(sessions)
        assert sorted(sessions) == sorted(
            f"b{i}" for i in range(0, total, 2) if i % BUCKET_MS >= 500
        )
        assert covers(index, sessions)


class TestAbsoluteDeadlines:
    """The index files a session at ``expires_at``: the earlier of the idle deadline and the
    absolute one (``created_at + absolute_timeout_ms``)."""

    def test_bucket_of_takes_the_earlier_deadline(self) -> None:
        """bucket_of is the bucket of the absolute deadline when it comes first, of the idle
        one otherwise, of the absolute one without an idle timeout, and -1 with neither."""
        now = START
        assert bucket_of(session("a", now, HOUR, absolute_timeout_ms=1_000)) == (
            (now + 1_000) // BUCKET_MS
        )
        assert bucket_of(session("b", now, 1_000, absolute_timeout_ms=HOUR)) == (
            (now + 1_000) // BUCKET_MS
        )
        late = session("c", now + 5_000, None, created_at=now, absolute_timeout_ms=HOUR)
        assert bucket_of(late) == (now + HOUR) // BUCKET_MS
        assert bucket_of(session("d", now, None)) == -1

    def test_sweep_removes_at_the_absolute_deadline_whatever_the_touches(self) -> None:
        """Sessions touched constantly (idle deadline always ahead) are swept once their
        absolute deadline passes, and not one millisecond before; absolute-only sessions
        (no idle timeout) are filed and swept too."""
        table = SessionTable()
        for i in range(50):
            table.put(session(f"busy{i}", START, 10_000, absolute_timeout_ms=30_000))
            table.put(session(f"abs{i}", START, None, absolute_timeout_ms=30_000))
            table.put(session(f"idle{i}", START, 10_000))
        now = START
        while now < START + 30_000:
            now += 5_000
            for i in range(50):
                table.touch(f"busy{i}", now)
            survivors = {sid for sid in table.sessions if not sid.startswith("idle")}
            assert table.sweep(min(now, START + 30_000)) == (50 if now == START + 15_000 else 0)
            assert survivors <= set(table.sessions)
        assert covers(table.index, table.sessions)
        assert table.count_live(START + 30_000) == 100
        assert table.count_live(START + 30_001) == 0
        assert table.sweep(START + 30_001) == 100
        assert len(table) == 0

    def test_replacing_with_an_earlier_absolute_deadline_files_it_earlier(self) -> None:
        """A replacement whose absolute deadline is earlier than the stored idle deadline is
        filed at the earlier bucket, so the sweep at that time finds it."""
        table = SessionTable()
        table.put(session("s", START, 10 * HOUR))
        table.put(session("s", START, 10 * HOUR, absolute_timeout_ms=2_000))
        assert covers(table.index, table.sessions)
        assert table.sweep(START + 2_000) == 0
        assert table.sweep(START + 2_001) == 1
