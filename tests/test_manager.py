"""SessionManager behaviour beyond the conformance kit: dispatch, wrappers, scheduler, errors."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper import (
    AsyncSessionManager,
    InvalidSession,
    ManagerClosed,
    Session,
    SessionManager,
    SessionNotFound,
)
from sessionkeeper._scheduler import CleanupScheduler
from sessionkeeper.backend import hookimpl
from sessionkeeper.testing import ManualClock, TickingClock


class Recorder:
    """A wrapper plugin that records every operation it sees."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl(wrapper=True)
    def sessionkeeper_fetch(self, session_id: str) -> Generator[None, Any, Any]:
        self.calls.append(f"fetch:{session_id}")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_store(self, session: Session) -> Generator[None, Any, Any]:
        self.calls.append(f"store:{session.id}")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_store_if(
        self, session: Session, if_version: int | None, now: int
    ) -> Generator[None, Any, Any]:
        self.calls.append(f"store_if:{session.id}")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Generator[None, Any, Any]:
        self.calls.append(f"touch:{session_id}")
        return (yield)


class FailingCleanup:
    """A wrapper plugin whose first ``failures`` cleanups raise."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.done = threading.Event()

    @hookimpl(wrapper=True)
    def sessionkeeper_cleanup_expired(self, now: int) -> Generator[None, Any, Any]:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise RuntimeError(f"cleanup failure #{self.attempts}")
        result = yield
        self.done.set()
        return result


class Interrupted(BaseException):
    """A BaseException that is not an Exception (as KeyboardInterrupt and SystemExit are)."""


class Sweeper:
    """A sweep for a bare CleanupScheduler: raises each of ``failures`` in turn, then succeeds."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.succeeded = threading.Event()

    def sweep(self) -> int:
        if self.failures:
            raise self.failures.pop(0)
        self.succeeded.set()
        return 0


class TestOperations:
    def test_create_uses_the_configured_default_timeout(self, clock: ManualClock) -> None:
        """create() without timeout_ms uses default_timeout; None means never expires."""
        with SessionManager(cleanup_interval=0, default_timeout=5_000, clock=clock) as sessions:
            assert sessions.create().timeout_ms == 5_000
            assert sessions.create(timeout_ms=None).timeout_ms is None
            session = sessions.create(timeout_ms=10, metadata={"user_id": "user_456"})
            assert session.created_at == session.last_accessed == clock.now
            assert sessions.fetch(session.id).metadata == {"user_id": "user_456"}

    def test_fetch_coalesces_touches(self, manager: SessionManager, clock: ManualClock) -> None:
        """fetch writes last_accessed back only when it would move by more than the resolution."""
        session = manager.create(timeout_ms=600_000)
        clock.advance(1_000)
        assert manager.fetch(session.id).last_accessed == session.last_accessed
        clock.advance(1)
        assert manager.fetch(session.id).last_accessed == clock.now
        assert manager.peek(session.id).last_accessed == clock.now

    def test_resolution_never_exceeds_a_tenth_of_the_timeout(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A short timeout lowers the effective resolution to a tenth of it."""
        session = manager.create(timeout_ms=500)
        clock.advance(51)
        assert manager.fetch(session.id).last_accessed == clock.now

    def test_touch_always_writes(self, manager: SessionManager, clock: ManualClock) -> None:
        """touch() slides last_accessed even inside the resolution; unknown ids raise."""
        session = manager.create(timeout_ms=600_000)
        clock.advance(5)
        assert manager.touch(session.id).last_accessed == clock.now
        with pytest.raises(SessionNotFound):
            manager.touch("missing")

    def test_oversized_metadata_is_rejected_and_nothing_changes(
        self, clock: ManualClock, table_name: str
    ) -> None:
        """Metadata over max_metadata_bytes is refused at create and store; the stored one stays."""
        with SessionManager(
            backend_opts={"table_name": table_name},
            max_metadata_bytes=100,
            cleanup_interval=0,
            clock=clock,
        ) as sessions:
            kept = sessions.create(metadata={"small": 1})
            with pytest.raises(InvalidSession, match="over max_metadata_bytes=100"):
                sessions.create(metadata={"big": "x" * 200})
            with pytest.raises(InvalidSession, match="over max_metadata_bytes=100"):
                sessions.store(kept.replace(metadata={"big": "x" * 200}))
            assert sessions.peek(kept.id) == kept
            assert sessions.count() == 1

    @pytest.mark.parametrize("bad", ["", "a b", "x" * 300, 17, None, ["list"], b"bytes"])
    def test_invalid_ids_raise_invalid_session(self, manager: SessionManager, bad: Any) -> None:
        """Malformed ids raise InvalidSession (not SessionNotFound, not a TypeError) everywhere."""
        kept = manager.create()
        for operation in (manager.fetch, manager.peek, manager.touch, manager.delete):
            with pytest.raises(InvalidSession, match="invalid session id"):
                operation(bad)
        assert manager.list() == [kept.id]

    def test_store_rejects_non_sessions(self, manager: SessionManager) -> None:
        """store() of anything but a Session raises InvalidSession naming the type."""
        with pytest.raises(InvalidSession, match="got dict"):
            manager.store({"id": "a"})  # type: ignore[arg-type]
        assert manager.count() == 0

    def test_not_found_is_a_key_error(self, manager: SessionManager) -> None:
        """SessionNotFound is a KeyError whose message names the id."""
        with pytest.raises(KeyError) as info:
            manager.fetch("nobody")
        assert str(info.value) == "no live session with id 'nobody'"

    def test_iter_sessions_skips_expired_unless_asked(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """iter_sessions leaves expired sessions out unless include_expired=True; never touches."""
        live = manager.create(timeout_ms=None)
        dead = manager.create(timeout_ms=10)
        clock.advance(11)
        assert [s.id for s in manager.iter_sessions()] == [live.id]
        assert {s.id for s in manager.iter_sessions(include_expired=True)} == {live.id, dead.id}
        assert manager.peek(live.id).last_accessed == live.last_accessed


class TestOneClockRead:
    """Every operation decides and writes at the one instant it read (issue 12, item 6)."""

    def test_touch_does_not_revive_a_session_at_a_second_reading(self, table_name: str) -> None:
        """Timeout 100, last_accessed 0, the clock reading 100 then 101: touch judges the session
        at 100 (live: idle exactly its timeout) and touches it to 100, not to 101, an instant at
        which it had expired; the clock is read once."""
        clock = TickingClock(start=100)
        with SessionManager(
            backend_opts={"table_name": table_name}, clock=clock, cleanup_interval=0
        ) as sessions:
            sessions.store(Session("edge", 0, 0, 100))  # a store reads the clock too (versions)
            clock.set(100)
            reads = clock.reads
            touched = sessions.touch("edge")
            assert touched.last_accessed == 100
            assert clock.reads - reads == 1
            assert sessions.peek("edge", include_expired=True).last_accessed == 100

    def test_touch_of_a_session_expired_at_the_reading_raises(self, table_name: str) -> None:
        """Read at 101, the same session is expired: touch raises and writes nothing."""
        clock = TickingClock(start=101)
        with SessionManager(
            backend_opts={"table_name": table_name}, clock=clock, cleanup_interval=0
        ) as sessions:
            sessions.store(Session("edge", 0, 0, 100))
            with pytest.raises(SessionNotFound):
                sessions.touch("edge")
            assert sessions.peek("edge", include_expired=True).last_accessed == 0

    def test_async_touch_reads_the_clock_once(self, table_name: str) -> None:
        """The async manager's touch and fetch decide and write at the one instant they read,
        like the sync ones."""
        clock = TickingClock(start=100)

        async def scenario() -> tuple[int, int, int]:
            async with AsyncSessionManager(
                backend_opts={"table_name": table_name}, clock=clock, cleanup_interval=0
            ) as sessions:
                await sessions.store(Session("edge", 0, 0, 100))
                clock.set(100)
                before = clock.reads
                touched = await sessions.touch("edge")
                reads = clock.reads - before
                await sessions.store(Session("edge", 0, 1, 100))
                clock.set(101)
                fetched = await sessions.fetch("edge")
                return touched.last_accessed, reads, fetched.last_accessed

        assert asyncio.run(scenario()) == (100, 1, 101)


class TestDispatch:
    def test_wrapper_sees_every_call_and_unregister_restores(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A registered wrapper sees each store (a conditional store on the atomic memory
        backend), fetch and touch; after unregister it sees none."""
        recorder = Recorder()
        session = manager.create(timeout_ms=600_000)
        manager.register(recorder)
        manager.fetch(session.id)
        clock.advance(2_000)
        manager.fetch(session.id)
        manager.store(session)
        assert recorder.calls == [
            f"fetch:{session.id}",
            f"fetch:{session.id}",
            f"touch:{session.id}",
            f"store_if:{session.id}",
        ]
        manager.unregister(recorder)
        manager.fetch(session.id)
        assert len(recorder.calls) == 4

    def test_constructor_plugins_are_registered(self, clock: ManualClock, table_name: str) -> None:
        """plugins=[...] passed at construction wrap the very first operation."""
        recorder = Recorder()
        with SessionManager(
            backend_opts={"table_name": table_name}, plugins=[recorder], cleanup_interval=0
        ) as sessions:
            session = sessions.create()
        assert recorder.calls == [f"store:{session.id}"]

    def test_tracing_routes_through_pluggy(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], table_name: str
    ) -> None:
        """SESSIONKEEPER_TRACE=1 writes every hook call to stderr."""
        monkeypatch.setenv("SESSIONKEEPER_TRACE", "1")
        with SessionManager(backend_opts={"table_name": table_name}, cleanup_interval=0) as s:
            s.create()
        assert "sessionkeeper_store" in capsys.readouterr().err

    def test_closed_manager_refuses_operations(self, table_name: str) -> None:
        """After close(), every operation raises ManagerClosed; close() is idempotent."""
        sessions = SessionManager(backend_opts={"table_name": table_name}, cleanup_interval=0)
        session = sessions.create()
        sessions.close()
        sessions.close()
        assert sessions.closed
        for call in (lambda: sessions.fetch(session.id), sessions.list, sessions.create):
            with pytest.raises(ManagerClosed):
                call()

    def test_unclosed_manager_warns_when_collected(self, table_name: str) -> None:
        """A manager dropped without close() emits a ResourceWarning and is closed."""
        sessions = SessionManager(backend_opts={"table_name": table_name}, cleanup_interval=0)
        with pytest.warns(ResourceWarning, match="was not closed"):  # noqa: PT031
            del sessions
            gc.collect()


class TestStoreMany:
    def test_without_a_batch_hook_sessions_are_stored_one_by_one(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """On a backend without ``sessionkeeper_store_many`` (memory), ``store_many`` calls
        ``sessionkeeper_store`` once per session, in order, so store wrappers see every one."""
        recorder = Recorder()
        manager.register(recorder)
        batch = [Session(f"one-{i}", clock.now, clock.now, None) for i in range(3)]
        assert manager.store_many(iter(batch)) == 3
        assert recorder.calls == ["store:one-0", "store:one-1", "store:one-2"]
        assert sorted(manager.list()) == ["one-0", "one-1", "one-2"]

    def test_a_batch_hook_gets_the_whole_batch_and_stats_count_it(
        self, tmp_path: Path, clock: ManualClock
    ) -> None:
        """On a backend with ``sessionkeeper_store_many`` (sqlitedict), the batch reaches it in
        one call (no per-session store), wrappers of that hook see it, and the stats plugin
        counts every session of it as stored."""
        batches: list[int] = []

        class BatchRecorder:
            @hookimpl(wrapper=True)
            def sessionkeeper_store_many(self, sessions: Any) -> Generator[None, Any, Any]:
                batches.append(len(sessions))
                return (yield)

        recorder = Recorder()
        with SessionManager(
            backend="sqlitedict",
            backend_opts={"file_path": str(tmp_path / "s.sqlite")},
            stats=True,
            cleanup_interval=0,
            clock=clock,
            plugins=[recorder, BatchRecorder()],
        ) as sessions:
            batch = [Session(f"many-{i}", clock.now, clock.now, None) for i in range(250)]
            assert sessions.store_many(batch) == 250
            assert sessions.count() == 250
            counters = sessions.stats()["counters"]
        assert batches == [250]
        assert recorder.calls == []
        assert counters["stored"] == 250
        assert counters["operations"]["store_many"]["calls"] == 1


class TestStats:
    def test_stats_plugin_counts(self, clock: ManualClock, table_name: str) -> None:
        """With stats on, hits, misses, created, deleted and expired are counted, with latencies."""
        with SessionManager(
            backend_opts={"table_name": table_name}, stats=True, cleanup_interval=0, clock=clock
        ) as sessions:
            a = sessions.create(timeout_ms=100)
            b = sessions.create(timeout_ms=None)
            sessions.fetch(b.id)
            with pytest.raises(SessionNotFound):
                sessions.fetch("missing")
            clock.advance(101)
            with pytest.raises(SessionNotFound):
                sessions.fetch(a.id)
            assert sessions.cleanup_expired() == 1
            assert sessions.delete(b.id)
            counters = sessions.stats()["counters"]
        assert counters["created"] == 2
        assert counters["hits"] == 1
        assert counters["misses"] == 2
        assert counters["expired"] == 1
        assert counters["deleted"] == 1
        assert counters["operations"]["fetch"]["calls"] == 3
        assert counters["operations"]["fetch"]["p99_us"] > 0

    def test_stats_without_plugin(self, manager: SessionManager) -> None:
        """stats() always reports backend, capabilities, live count and the backend's figures."""
        manager.create()
        figures = manager.stats()
        assert figures["backend"] == "memory"
        assert figures["live_sessions"] == 1
        assert figures["capabilities"]["persistent"] is False
        assert "counters" not in figures
        assert figures["backend_stats"]["stored"] == 1


class TestScheduler:
    def test_scheduled_cleanup_sweeps(self, clock: ManualClock, table_name: str) -> None:
        """The scheduler runs cleanup every cleanup_interval ms and removes expired sessions."""
        done = FailingCleanup(failures=0)
        with SessionManager(
            backend_opts={"table_name": table_name},
            cleanup_interval=5,
            clock=clock,
            plugins=[done],
        ) as sessions:
            expired = sessions.create(timeout_ms=10)
            kept = sessions.create(timeout_ms=None)
            clock.advance(11)
            done.done.clear()
            assert done.done.wait(10), "the scheduler never ran a cleanup"
            assert sessions.list() == [kept.id]
            assert sessions.stats()["backend_stats"]["stored"] == 1
            assert expired.id not in sessions.list()

    def test_failing_cleanup_is_logged_and_retried(
        self, clock: ManualClock, table_name: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A cleanup that raises is logged with its traceback and tried again next interval."""
        flaky = FailingCleanup(failures=2)
        with (
            caplog.at_level(logging.ERROR, logger="sessionkeeper"),
            SessionManager(
                backend_opts={"table_name": table_name},
                cleanup_interval=5,
                clock=clock,
                plugins=[flaky],
            ) as sessions,
        ):
            sessions.create(timeout_ms=1)
            clock.advance(2)
            assert flaky.done.wait(10), "cleanup was not retried after failing"
            assert sessions.count() == 0
            scheduler = sessions.stats()["scheduler"]
        assert scheduler["failures"] == 2
        messages = [r for r in caplog.records if "scheduled cleanup failed" in r.getMessage()]
        assert len(messages) == 2
        assert messages[0].exc_info is not None

    def test_an_interval_beyond_the_timers_does_not_kill_the_thread(self) -> None:
        """An interval longer than the platform's timers accept (99999999999999 ms) is capped:
        the thread waits instead of dying with OverflowError on its first wait, so cleanup is
        never silently off (issue 12 item 13)."""
        sweeper = Sweeper([])
        scheduler = CleanupScheduler(sweeper.sweep, 99_999_999_999_999, name="sk-test-huge")
        scheduler.start()
        try:
            scheduler._thread.join(0.5)  # time for an OverflowError to end it, were it raised
            assert scheduler.alive
            assert scheduler.interval_s <= threading.TIMEOUT_MAX
        finally:
            scheduler.stop()
        assert not scheduler.alive
        assert (scheduler.runs, scheduler.failures) == (0, 0)

    def test_no_exception_of_a_run_ends_the_thread(self, caplog: pytest.LogCaptureFixture) -> None:
        """A run that raises anything, even a BaseException that is not an Exception, is logged
        and counted, and the next run happens: the thread never dies silently."""
        sweeper = Sweeper([Interrupted("first run"), RuntimeError("second run")])
        scheduler = CleanupScheduler(sweeper.sweep, 1, name="sk-test-raising")
        with caplog.at_level(logging.ERROR, logger="sessionkeeper"):
            scheduler.start()
            try:
                assert sweeper.succeeded.wait(30), "no run after the failing ones"
            finally:
                scheduler.stop()
        assert scheduler.failures == 2
        assert scheduler.runs >= 1
        failed = [r for r in caplog.records if "scheduled cleanup failed" in r.getMessage()]
        assert [type(r.exc_info[1]) for r in failed if r.exc_info] == [Interrupted, RuntimeError]

    def test_never_two_sweeps_at_once(self, clock: ManualClock, table_name: str) -> None:
        """Manual and scheduled cleanups are serialised: at most one sweep runs at any time."""
        running = 0
        overlap = []
        lock = threading.Lock()

        class Slow:
            @hookimpl(wrapper=True)
            def sessionkeeper_cleanup_expired(self, now: int) -> Generator[None, Any, Any]:
                nonlocal running
                with lock:
                    running += 1
                    overlap.append(running)
                threading.Event().wait(0.002)
                try:
                    return (yield)
                finally:
                    with lock:
                        running -= 1

        with SessionManager(
            backend_opts={"table_name": table_name},
            cleanup_interval=1,
            clock=clock,
            plugins=[Slow()],
        ) as sessions:
            threads = [
                threading.Thread(target=lambda: [sessions.cleanup_expired() for _ in range(20)])
                for _ in range(3)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert len(overlap) >= 60
        assert max(overlap) == 1

    def test_read_only_managers_do_not_schedule(self, table_name: str) -> None:
        """A read-only manager never starts the cleanup scheduler (it must not write)."""
        with SessionManager(
            backend_opts={"table_name": table_name}, cleanup_interval=5, read_only=True
        ) as sessions:
            assert "scheduler" not in sessions.stats()


class TestAsync:
    def test_async_manager_offers_every_operation(self, table_name: str) -> None:
        """AsyncSessionManager's coroutines behave as the sync manager's methods."""
        clock = ManualClock()

        async def scenario() -> None:
            async with AsyncSessionManager(
                backend_opts={"table_name": table_name}, clock=clock, cleanup_interval=0
            ) as sessions:
                s = await sessions.create(timeout_ms=100, metadata={"user_id": "user_456"})
                assert (await sessions.fetch(s.id)).metadata == {"user_id": "user_456"}
                assert (await sessions.peek(s.id)) == s
                await sessions.store(s.replace(metadata={"v": 2}))
                assert await sessions.store_many([s.replace(metadata={"v": 3})]) == 1
                assert (await sessions.peek(s.id)).metadata == {"v": 3}
                assert await sessions.list() == [s.id]
                assert await sessions.count() == 1
                assert [x.id async for x in sessions.iter_sessions()] == [s.id]
                clock.advance(101)
                with pytest.raises(SessionNotFound):
                    await sessions.fetch(s.id)
                assert await sessions.cleanup_expired() == 1
                assert not await sessions.delete(s.id)
                assert (await sessions.stats())["live_sessions"] == 0

        asyncio.run(scenario())

    def test_async_scheduler_is_a_task(self, table_name: str) -> None:
        """Inside async with, cleanup runs as an asyncio task every cleanup_interval ms."""
        clock = ManualClock()

        async def scenario() -> int:
            async with AsyncSessionManager(
                backend_opts={"table_name": table_name}, clock=clock, cleanup_interval=5
            ) as sessions:
                await sessions.create(timeout_ms=1)
                clock.advance(2)
                for _ in range(1000):
                    if (
                        await sessions.count() == 0
                        and not (await sessions.stats())["backend_stats"]["stored"]
                    ):
                        return 0
                    await asyncio.sleep(0.005)
                return 1

        assert asyncio.run(scenario()) == 0


def test_unclosed_manager_with_scheduler_is_collected(table_name: str) -> None:
    """The scheduler thread does not keep a dropped manager alive: it is collected and closed."""
    sessions = SessionManager(backend_opts={"table_name": table_name}, cleanup_interval=1)
    with pytest.warns(ResourceWarning, match="was not closed"):  # noqa: PT031
        del sessions
        gc.collect()


class TestNotificationHooks:
    def test_created_and_stats_hooks_reach_plugins(self, manager: SessionManager) -> None:
        """sessionkeeper_session_created sees each create (not plain stores); a plugin's
        sessionkeeper_stats figures appear in stats() under its name."""

        class Audit:
            def __init__(self) -> None:
                self.created: list[str] = []

            @hookimpl
            def sessionkeeper_session_created(self, session: Session) -> None:
                self.created.append(session.id)

            @hookimpl
            def sessionkeeper_stats(self) -> dict[str, Any]:
                return {"audited": len(self.created)}

        audit = Audit()
        manager.register(audit, name="audit")
        first = manager.create()
        manager.store(first.replace(metadata={"v": 1}))
        second = manager.create()
        assert audit.created == [first.id, second.id]
        assert manager.stats()["plugins"] == {"audit": {"audited": 2}}


def test_read_only_fetch_does_not_write(clock: ManualClock, table_name: str) -> None:
    """A read-only manager's fetch returns the session without writing a touch back."""
    with SessionManager(
        backend_opts={"table_name": table_name}, clock=clock, cleanup_interval=0
    ) as owner:
        session = owner.create(timeout_ms=600_000)
        with SessionManager(
            backend_opts={"table_name": table_name},
            clock=clock,
            cleanup_interval=0,
            read_only=True,
        ) as inspector:
            clock.advance(5_000)
            assert inspector.fetch(session.id) == session
        assert owner.peek(session.id).last_accessed == session.last_accessed


def test_peek_include_expired(manager: SessionManager, clock: ManualClock) -> None:
    """peek(include_expired=True) returns a stored expired session; plain peek does not."""
    session = manager.create(timeout_ms=10)
    clock.advance(11)
    with pytest.raises(SessionNotFound):
        manager.peek(session.id)
    assert manager.peek(session.id, include_expired=True) == session
    with pytest.raises(SessionNotFound):
        manager.peek("never-stored", include_expired=True)


class TestVersionCeiling:
    """A session at version 2**63-1 (the largest any encoded store holds; reached only by import)
    cannot be written again: the manager refuses before the backend is called (issue 14)."""

    TOP = 2**63 - 1

    @pytest.fixture
    def at_top(self, manager: SessionManager) -> Session:
        session = manager.create(timeout_ms=None, metadata={"n": 1})
        manager.store_many([session.with_version(self.TOP)])  # as an import carries it
        return manager.peek(session.id)

    def test_store_is_refused_and_nothing_changes(
        self, manager: SessionManager, at_top: Session
    ) -> None:
        """store() of the session read at the top version raises InvalidSession naming
        ``version``; the stored session is unchanged (not given version 2**63)."""
        changed = at_top.replace(metadata={"n": 2})
        with pytest.raises(InvalidSession, match=r"version.*2\*\*63-1.*cannot be written again"):
            manager.store(changed)
        with pytest.raises(InvalidSession, match="version"):
            manager.store(changed, if_version=self.TOP)
        assert manager.peek(at_top.id) == at_top

    def test_update_and_rotate_are_refused(self, manager: SessionManager, at_top: Session) -> None:
        """update() never calls its function and rotate() keeps the id: both refuse the write
        that would pass the top version."""
        called: list[object] = []

        def bump(metadata: dict[str, Any]) -> dict[str, Any]:
            called.append(metadata)
            return {"n": 3}

        with pytest.raises(InvalidSession, match="version"):
            manager.update(at_top.id, bump)
        assert called == []
        with pytest.raises(InvalidSession, match="version"):
            manager.rotate(at_top.id)
        assert manager.peek(at_top.id) == at_top

    def test_one_below_the_top_is_written(self, manager: SessionManager) -> None:
        """A session one below the top is written once more, to the top itself."""
        session = manager.create(timeout_ms=None)
        manager.store_many([session.with_version(self.TOP - 1)])
        assert manager.update(session.id, lambda md: {"n": 1}).version == self.TOP

    def test_a_fresh_session_may_carry_the_top_version(self, manager: SessionManager) -> None:
        """Storing a session that carries the top version under an id with no live session is
        allowed: the store gives it version 1."""
        session = manager.create(timeout_ms=None)
        assert manager.delete(session.id)
        assert manager.store(session.with_version(self.TOP)).version == 1


class TestExitCodesOfConcurrentErrors:
    """The CLI's exit status for the errors of issue 14's operations."""

    def test_unsupported_is_a_usage_error(self) -> None:
        """Unsupported says the operation was asked of a backend that cannot do it: exit 2
        (usage), not 4 (storage), which says the store failed."""
        from sessionkeeper import Unsupported
        from sessionkeeper.cli import ExitCode, exit_code_for

        assert exit_code_for(Unsupported("sqlitedict")) == ExitCode.USAGE == 2

    def test_version_conflict_has_its_own_code(self) -> None:
        """VersionConflict (nothing written; read again and retry) exits with 7, distinct
        from every other status."""
        from sessionkeeper import VersionConflict
        from sessionkeeper.cli import ExitCode, exit_code_for

        code = exit_code_for(VersionConflict("abc", 3, 4))
        assert code == ExitCode.CONFLICT == 7
        assert [c for c in ExitCode if c == 7] == [ExitCode.CONFLICT]
