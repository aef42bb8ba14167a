"""What the sqlitedict backend adds to the shared semantics: files, format, modes, locking."""

from __future__ import annotations

import contextlib
import linecache
import os
import signal
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlitedict import SqliteDict
from sqlitedict_stores import open_owner

from sessionkeeper import Session, SessionKeeperError, SessionManager, StorageError
from sessionkeeper.backend import ExpiryIndex, decode_session, encode_session
from sessionkeeper.testing import ManualClock, wait_for
from sessionkeeper_sqlitedict import SqliteDictBackend, lock_path, open_sqlitedict

NOW = 1_700_000_000_000


def session(i: int, *, timeout_ms: int | None = None, at: int = NOW) -> Session:
    return Session(f"s{i:05d}", at, at, timeout_ms, {"i": i})


def rows(path: Path, table: str = "sessions") -> dict[str, bytes]:
    """The rows on disk, read with a connection of the test's own."""
    connection = sqlite3.connect(path)
    try:
        return dict(connection.execute(f'SELECT key, value FROM "{table}"'))
    finally:
        connection.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "sessions.sqlite"


@pytest.fixture
def open_store(path: Path, clock: ManualClock) -> Iterator[Any]:
    """Open managers on ``path`` (durable unless told otherwise); all closed after the test."""
    opened: list[SessionManager] = []

    def make(**opts: Any) -> SessionManager:
        manager = open_owner(path, clock=clock, **opts)
        opened.append(manager)
        return manager

    yield make
    for manager in reversed(opened):
        manager.close()


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another connection holds SQLite's write lock on ``path`` for the block."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def backend_of(manager: SessionManager) -> SqliteDictBackend:
    backend = manager.backend
    assert isinstance(backend, SqliteDictBackend)
    return backend


class TestFiles:
    def test_file_directories_and_lock_are_private(self, path: Path, open_store: Any) -> None:
        """The store's directory is created 0700 and the file, its WAL and its lock file
        0600; the lock file holds the owner's pid while it is open and nothing after."""
        manager = open_store()
        manager.store(session(1))
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for file in (path, path.with_name(path.name + "-wal"), lock_path(path)):
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        assert lock_path(path).read_text() == f"{os.getpid()}\n"
        manager.close()
        assert lock_path(path).read_text() == ""


class TestFormat:
    def test_plain_sqlitedict_reads_the_file(self, path: Path, open_store: Any) -> None:
        """A plain SqliteDict with the core's decoder reads every session the backend wrote."""
        manager = open_store()
        stored = [session(i) for i in range(5)]
        for s in stored:
            manager.store(s)
        manager.close()
        with SqliteDict(str(path), tablename="sessions", decode=decode_session) as plain:
            assert dict(plain.items()) == {s.id: s for s in stored}
        with open_sqlitedict(path) as view:
            assert view["s00003"] == stored[3]
            with pytest.raises(RuntimeError, match="read-only"):
                view["new"] = session(9)

    def test_a_file_written_by_sqlitedict_opens(self, path: Path, open_store: Any) -> None:
        """A table that SqliteDict wrote with the core's encoder is a store the backend opens."""
        path.parent.mkdir()
        written = {f"k{i}": Session(f"k{i}", NOW, NOW, None, {"i": i}) for i in range(4)}
        with SqliteDict(
            str(path), tablename="legacy", encode=encode_session, autocommit=True
        ) as plain:
            plain.update(written)
        manager = open_store(table_name="legacy")
        assert {s.id: s for s in manager.iter_sessions()} == written

    def test_a_table_of_another_shape_is_refused(self, path: Path, open_store: Any) -> None:
        """A table with the configured name but other columns is not taken for a store."""
        path.parent.mkdir()
        connection = sqlite3.connect(path)
        connection.execute("CREATE TABLE sessions (id INTEGER, data TEXT)")
        connection.close()
        with pytest.raises(StorageError, match=r"not sqlitedict's \(key, value\)"):
            open_store()

    def test_replacing_a_session_keeps_its_row(self, path: Path, open_store: Any) -> None:
        """Replacing or touching a session updates its row in place (same rowid), so readers
        iterating in rowid order see it once."""
        manager = open_store()
        manager.store(session(1))
        connection = sqlite3.connect(path)
        first = connection.execute("SELECT rowid FROM sessions").fetchall()
        manager.store(session(1).replace(metadata={"new": True}))
        manager.touch("s00001")
        assert connection.execute("SELECT rowid FROM sessions").fetchall() == first
        connection.close()


class TestDurableMode:
    def test_each_write_is_on_disk_when_it_returns(
        self, path: Path, open_store: Any, clock: ManualClock
    ) -> None:
        """In durable mode store, touch and delete are committed before they return; a lone
        writer commits each in a transaction of its own."""
        manager = open_store()
        manager.store(session(1))
        assert decode_session(rows(path)["s00001"]) == session(1)
        clock.advance(5_000)
        manager.touch("s00001")
        assert decode_session(rows(path)["s00001"]).last_accessed == clock.now
        manager.delete("s00001")
        assert rows(path) == {}
        stats = manager.stats()["backend_stats"]
        assert (stats["writes"], stats["committed_writes"], stats["commits"]) == (3, 3, 3)

    def test_a_failed_commit_acknowledges_nothing(self, path: Path, open_store: Any) -> None:
        """When the commit fails (another connection holds SQLite's write lock) the store
        raises StorageError naming the file, and neither the copy nor the file changed."""
        manager = open_store(busy_timeout=0)
        manager.store(session(1))
        with write_locked(path):
            with pytest.raises(StorageError, match="locked") as info:
                manager.store(session(1).replace(metadata={"lost": True}))
            assert str(path) in str(info.value)
            with pytest.raises(StorageError):
                manager.store(session(2))
            with pytest.raises(StorageError):
                manager.delete("s00001")
            assert manager.peek("s00001") == session(1)
            assert manager.list() == ["s00001"]
        manager.store(session(2))
        assert sorted(rows(path)) == ["s00001", "s00002"]


def wait_to_grow(count: Callable[[], int], by: int, what: str) -> None:
    """Wait until ``count()`` grew by ``by``; fail after a minute (a hang, not a timing
    assertion)."""
    goal = count() + by
    wait_until(lambda: count() >= goal, what)


def copy_and_file(manager: SessionManager, path: Path) -> tuple[dict[str, Session], dict]:
    """The owner's in-memory copy and the file's rows, both as id -> Session."""
    copy = {s.id: s for s in manager.iter_sessions(include_expired=True)}
    return copy, {key: decode_session(value) for key, value in rows(path).items()}


def queue_behind_a_commit(backend: Any, threads: list[threading.Thread]) -> None:
    """Start ``threads`` (durable writers) while the test holds the owner's lock, as a
    committing leader does, and return once each has queued for the next group."""
    with backend._lock:
        for queued, thread in enumerate(threads, 1):
            thread.start()
            wait_until(lambda n=queued: backend._group_commit.queued() == n, "the writer to queue")


class TestGroupCommit:
    """Durable writers in several threads share commits; each still returns only once its own
    change is committed, and a failed commit fails exactly the writers it held."""

    def test_failed_group_commits_fail_their_writers_and_only_them(
        self, path: Path, open_store: Any
    ) -> None:
        """Eight threads store, touch and delete their own sessions and a few shared ones while
        another connection takes and releases SQLite's write lock: every write that raised
        StorageError left no trace, every one that returned is in the file, and the owner's
        copy equals the file throughout."""
        manager = open_store(busy_timeout=0)
        backend = backend_of(manager)
        threads = 8
        stop = threading.Event()
        models: list[dict[str, Session]] = [{} for _ in range(threads)]
        acks = [0] * threads
        failures: list[list[StorageError]] = [[] for _ in range(threads)]
        unexpected: list[BaseException] = []

        def write(t: int) -> None:
            model = models[t]
            i = 0
            try:
                while not stop.is_set():
                    i += 1
                    own = f"t{t}-{i:05d}"
                    older = f"t{t}-{i // 2:05d}"
                    shared = f"shared-{i % 3}"
                    for step in range(5):
                        try:
                            if step == 0:
                                s = Session(own, NOW, NOW, None, {"t": t, "i": i})
                                manager.store(s)
                                model[own] = s
                            elif step == 1 and older in model:
                                at = NOW + i
                                touched = backend.sessionkeeper_touch(older, at)
                                assert touched == model[older].touched(at)
                                model[older] = touched
                            elif step == 2 and i % 4 == 0 and older in model:
                                assert backend.sessionkeeper_delete(older) is True
                                del model[older]
                            elif step == 3:
                                manager.store(Session(shared, NOW, NOW, None, {"by": t}))
                            elif step == 4:
                                backend.sessionkeeper_touch(shared, NOW + i)
                                if i % 5 == 0:
                                    backend.sessionkeeper_delete(shared)
                        except StorageError as exc:
                            failures[t].append(exc)
                            continue
                        acks[t] += 1
            except BaseException as exc:
                unexpected.append(exc)

        workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()

        def acked() -> int:
            return sum(acks)

        def failed() -> int:
            return sum(map(len, failures))

        try:
            for _ in range(3):
                wait_to_grow(acked, 200, "writes to succeed")
                with write_locked(path):
                    wait_to_grow(failed, 50, "commits to fail")
            wait_to_grow(acked, 200, "writes to succeed again")
        finally:
            stop.set()
            for worker in workers:
                worker.join(60)
        assert not any(worker.is_alive() for worker in workers), "a durable writer hung"
        assert not unexpected, unexpected
        errors = [exc for per_thread in failures for exc in per_thread]
        assert len(errors) >= 150
        assert all("locked" in str(exc) and str(path) in str(exc) for exc in errors)
        copy, on_disk = copy_and_file(manager, path)
        assert copy == on_disk
        for model in models:
            assert {key: copy.get(key) for key in model} == model
        owned = {key for key in copy if key.startswith("t")}
        assert owned == set().union(*models)

    def test_writers_queued_behind_a_commit_share_the_next_one(
        self, path: Path, open_store: Any
    ) -> None:
        """Six writers that arrive while a commit is in progress (the test holds the copy's lock,
        as a committing leader does) queue up, and the first of them commits all six in one
        transaction: ``commits`` grows by one and ``committed_writes`` by six."""
        manager = open_store()
        backend = backend_of(manager)
        before = manager.stats()["backend_stats"]
        threads = [threading.Thread(target=manager.store, args=(session(i),)) for i in range(6)]
        queue_behind_a_commit(backend, threads)
        for thread in threads:
            thread.join(60)
            assert not thread.is_alive(), "a durable writer hung"
        after = manager.stats()["backend_stats"]
        assert after["commits"] - before["commits"] == 1
        assert after["committed_writes"] - before["committed_writes"] == 6
        assert sorted(rows(path)) == [session(i).id for i in range(6)]

    @pytest.mark.parametrize(
        ("first", "second"),
        [("delete", "delete"), ("delete", "touch"), ("store", "touch"), ("store", "delete")],
    )
    def test_writes_to_one_session_in_a_failed_group_all_fail(
        self, path: Path, open_store: Any, first: str, second: str
    ) -> None:
        """Two writers change one session in one group whose commit fails (another connection
        holds SQLite's write lock): both raise StorageError, also the second, which saw the
        first's change in the copy (a second delete must not report "no such session", nor a
        touch "unknown id", for a session the failed commit leaves in place); the copy is put
        back as it was, in reverse order of the changes, and the session stays as before, in
        the copy and the file. One failed transaction held both: a group formed."""
        manager = open_store(busy_timeout=0)
        backend = backend_of(manager)
        manager.store(session(1))
        writes = {
            "delete": lambda: backend.sessionkeeper_delete("s00001"),
            "touch": lambda: backend.sessionkeeper_touch("s00001", NOW + 1),
            "store": lambda: manager.store(session(1).replace(metadata={"new": True})),
        }
        outcomes: dict[str, object] = {}

        def run(name: str, write: Any) -> None:
            try:
                outcomes[name] = write()
            except StorageError as exc:
                outcomes[name] = exc

        before = manager.stats()["backend_stats"]
        threads = [
            threading.Thread(target=run, args=("first", writes[first])),
            threading.Thread(target=run, args=("second", writes[second])),
        ]
        with write_locked(path):
            queue_behind_a_commit(backend, threads)  # both queue for the next group
            for thread in threads:
                thread.join(60)
                assert not thread.is_alive(), "a durable writer hung"
        after = manager.stats()["backend_stats"]
        assert after["failed_commits"] - before["failed_commits"] == 1
        assert after["commits"] == before["commits"]
        assert set(outcomes) == {"first", "second"}
        for name, outcome in outcomes.items():
            assert isinstance(outcome, StorageError), (name, outcome)
            assert "locked" in str(outcome)
        copy, on_disk = copy_and_file(manager, path)
        assert copy == on_disk == {"s00001": session(1)}

    @pytest.mark.parametrize("place", ["leader", "follower"])
    def test_a_writer_interrupted_while_waiting_leaves_nothing_behind(
        self, path: Path, open_store: Any, place: str
    ) -> None:
        """A durable writer interrupted by an exception from a signal handler while it waits
        (as the next group's leader, or queued behind one) raises that exception and its
        write is taken back: the writers around it commit, later writers (in other threads
        and its own) commit as usual instead of waiting forever, and its session is neither
        in the copy nor in the file. The signal is sent once the writer is seen blocked in
        the wait, so the interruption always happens."""

        class Interrupted(BaseException):  # like KeyboardInterrupt, which nothing wraps
            pass

        waiting = threading.Event()

        def interrupt(signum: int, frame: object) -> None:
            if waiting.is_set():  # only inside the store below
                raise Interrupted

        manager = open_store(busy_timeout=60_000)
        backend = backend_of(manager)
        outcomes: dict[str, object] = {}

        def run(name: str) -> None:
            try:
                outcomes[name] = manager.store(Session(name, NOW, NOW, None, {}))
            except StorageError as exc:
                outcomes[name] = exc

        # "holder" commits first and waits for the blocker's lock, holding the owner's lock;
        # with place == "follower", "leader" then waits for the owner's lock as the next
        # group's leader, and the main thread queues behind it.
        names = ["holder"] if place == "leader" else ["holder", "leader"]
        threads = [threading.Thread(target=run, args=(name,)) for name in names]
        main = threading.main_thread().ident
        assert main is not None
        # Where the main thread blocks: taking the owner's lock as leader, or its waiter.
        blocked_at = (
            ("_lead", "with self._lock") if place == "leader" else ("_wait", "waiter.acquire()")
        )

        def signal_once_blocked() -> None:
            wait_until(lambda: blocked_in(main, *blocked_at), "the writer to block")
            signal.pthread_kill(main, signal.SIGUSR1)

        alarm = threading.Thread(target=signal_once_blocked)
        previous = signal.signal(signal.SIGUSR1, interrupt)
        interrupted = False
        try:
            with write_locked(path):
                threads[0].start()
                wait_until(backend._lock.locked, "the holder to commit")
                if place == "follower":
                    threads[1].start()
                    wait_until(lambda: backend._group_commit.queued() == 1, "the leader to queue")
                alarm.start()
                waiting.set()
                try:
                    manager.store(Session("interrupted", NOW, NOW, None, {}))
                except Interrupted:
                    interrupted = True
                finally:
                    waiting.clear()
        finally:
            alarm.join(120)
            signal.signal(signal.SIGUSR1, previous)
        assert interrupted, "the store returned although it was interrupted"
        for thread in threads:
            thread.join(120)
            assert not thread.is_alive(), "a durable writer hung"
        # store() returns the session as stored: each writer around it committed.
        assert {name: getattr(outcome, "id", outcome) for name, outcome in outcomes.items()} == {
            name: name for name in names
        }
        later = threading.Thread(target=run, args=("later",))
        later.start()
        later.join(120)
        assert not later.is_alive(), "a writer after the interruption hung"
        assert getattr(outcomes["later"], "id", None) == "later"
        manager.store(session(1))
        copy, on_disk = copy_and_file(manager, path)
        assert copy == on_disk
        assert sorted(copy) == sorted([*names, "later", "s00001"])


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Wait until ``condition()`` holds, polling every millisecond; fail after a minute (a hang,
    not a timing assertion)."""
    wait_for(condition, what, 60.0, interval_s=0.001)


def blocked_in(thread_id: int, function: str, statement: str) -> bool:
    """Whether thread ``thread_id`` is executing ``statement`` in ``function`` (its innermost
    Python frame): for a statement that takes a lock, blocked there."""
    frame = sys._current_frames().get(thread_id)
    if frame is None or frame.f_code.co_name != function:
        return False
    return statement in linecache.getline(frame.f_code.co_filename, frame.f_lineno)


class TestIntervalMode:
    def test_writes_are_buffered_until_the_flush(self, path: Path, open_store: Any) -> None:
        """In interval mode a write is served from memory at once and reaches the file at the
        next flush; stats count the pending and committed writes."""
        manager = open_store(auto_save=600_000)
        backend = backend_of(manager)
        manager.store(session(1))
        manager.store(session(2))
        manager.delete("s00002")
        assert manager.peek("s00001") == session(1)
        assert rows(path) == {}
        stats = manager.stats()["backend_stats"]
        assert (stats["pending_changes"], stats["writes"], stats["committed_writes"]) == (2, 3, 0)
        assert backend.flush() == 2
        assert sorted(rows(path)) == ["s00001"]
        stats = manager.stats()["backend_stats"]
        assert (stats["pending_changes"], stats["committed_writes"], stats["flushes"]) == (0, 3, 1)

    def test_the_flusher_commits_every_auto_save(self, path: Path, open_store: Any) -> None:
        """The background flusher commits the buffer without being asked."""
        manager = open_store(auto_save=10)
        manager.store(session(1))
        for _ in range(1_000):  # wait up to 10 s (not a timing assertion)
            if rows(path):
                break
            time.sleep(0.01)
        assert sorted(rows(path)) == ["s00001"]

    def test_a_failed_flush_keeps_the_changes(self, path: Path, open_store: Any) -> None:
        """A flush that cannot commit keeps every change pending (newer changes win) and the
        next flush commits them."""
        manager = open_store(auto_save=600_000, busy_timeout=0)
        backend = backend_of(manager)
        manager.store(session(1))
        with write_locked(path):
            with pytest.raises(StorageError, match="locked"):
                backend.flush()
            manager.store(session(1).replace(metadata={"v": 2}))
            manager.store(session(2))
        stats = manager.stats()["backend_stats"]
        assert (stats["pending_changes"], stats["flush_failures"]) == (2, 1)
        assert "locked" in stats["last_error"]
        assert backend.flush() == 2
        assert decode_session(rows(path)["s00001"]).metadata == {"v": 2}

    def test_close_commits_and_reports_what_it_could_not(self, path: Path, open_store: Any) -> None:
        """Closing commits the buffer; when that commit fails, close raises a StorageError
        saying how many changes were lost, and still releases the file."""
        manager = open_store(auto_save=600_000)
        manager.store(session(1))
        manager.close()
        assert sorted(rows(path)) == ["s00001"]

        manager = open_store(auto_save=600_000, busy_timeout=0)
        backend = backend_of(manager)
        manager.store(session(2))
        with write_locked(path), pytest.raises(StorageError, match="1 buffered change"):
            backend.sessionkeeper_close()
        reopened = open_store()
        assert reopened.list() == ["s00001"]


class TestCloseRace:
    @pytest.mark.parametrize("auto_save", [0, 600_000], ids=["durable", "interval"])
    def test_writes_racing_close_are_committed_or_refused(
        self, path: Path, open_store: Any, auto_save: int
    ) -> None:
        """Threads storing while the manager closes: every store that returned is in the file
        afterwards; the others raised (ManagerClosed or StorageError), none was dropped."""
        manager = open_store(auto_save=auto_save)
        acknowledged: list[set[str]] = [set() for _ in range(4)]
        started = threading.Barrier(5)

        def write(thread: int) -> None:
            started.wait()
            for i in range(100_000):
                s = Session(f"t{thread}-{i}", NOW, NOW, None, {"i": i})
                try:
                    manager.store(s)
                except SessionKeeperError:
                    return
                acknowledged[thread].add(s.id)

        threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        started.wait()
        # Bounded: a writer failing before the close must fail the test, not hang it.
        wait_until(lambda: sum(map(len, acknowledged)) >= 200, "200 acknowledged stores")
        manager.close()
        for thread in threads:
            thread.join(60)
            assert not thread.is_alive()
        on_disk = set(rows(path))
        everything = set().union(*acknowledged)
        assert everything
        assert everything <= on_disk, f"acknowledged but lost: {sorted(everything - on_disk)[:5]}"


class TestOwnership:
    def test_one_writer_per_table_in_a_process(self, path: Path, open_store: Any) -> None:
        """A second manager writing the same table is refused, naming the file and this
        process; another table of the same file can be written beside it."""
        open_store()
        with pytest.raises(StorageError) as info:
            open_store()
        assert str(path) in str(info.value)
        assert f"pid {os.getpid()}" in str(info.value)
        other = open_store(table_name="other")
        other.store(session(1))
        assert sorted(rows(path, "other")) == ["s00001"]

    def test_read_only_opens_take_no_lock(self, path: Path, open_store: Any) -> None:
        """Read-only managers open beside the owner and after it; the lock stays the owner's
        and is free again once the owner closes."""
        owner = open_store()
        owner.store(session(1))
        reader = open_store(read_only=True)
        assert reader.peek("s00001") == session(1)
        with pytest.raises(StorageError):
            open_store()
        owner.close()
        assert reader.list() == ["s00001"]
        open_store().store(session(2))


class TestOwnershipOfTheRealFile:
    """Issue 12 item 4, within one process: a table has one writer whatever name it is opened
    by (the cross-process cases are in test_sqlitedict_processes.py)."""

    @pytest.mark.parametrize("link", ["symlink", "hard-link", "relative"])
    def test_a_second_manager_through_another_name_is_refused(
        self, path: Path, open_store: Any, link: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A second manager on the same table of the same file, reached through a symlink, a
        hard link or a relative spelling, is refused; the first keeps writing."""
        first = open_store(file_path=str(path))
        first.store(session(1))
        other = path.with_name("other.sqlite")
        if link == "symlink":
            other.symlink_to(path)
        elif link == "hard-link":
            os.link(path, other)
        else:
            monkeypatch.chdir(path.parent.parent)
            other = Path(path.parent.name) / ".." / path.parent.name / path.name
        with pytest.raises(StorageError, match="already open for writing in this process"):
            open_store(file_path=str(other))
        first.store(session(2))
        assert sorted(rows(path)) == ["s00001", "s00002"]

    def test_table_names_differing_in_case_are_one_table(self, path: Path, open_store: Any) -> None:
        """``Sessions`` and ``sessions`` are one SQLite table: a second writer is refused."""
        open_store(table_name="sessions")
        with pytest.raises(StorageError, match="already open for writing"):
            open_store(table_name="Sessions")


class TestIdentity:
    """``sessionkeeper_identity``: which file and table a manager opened, however reached."""

    def test_links_and_spellings_give_one_identity(
        self, path: Path, open_store: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Managers reaching one file through its path, a symlink, a hard link and a relative
        path report one identity, built from the file's device and inode, whether they own
        the file or read it."""
        owner = open_store()
        owner.store(session(1))
        st = path.stat()
        identity = owner.identity()
        assert identity == f"sqlitedict:{st.st_dev}:{st.st_ino}:sessions"
        symlink = path.with_name("symlink.sqlite")
        symlink.symlink_to(path)
        hard = path.with_name("hard.sqlite")
        os.link(path, hard)
        monkeypatch.chdir(path.parent)
        names = [str(symlink), path.name, f"../{path.parent.name}/{path.name}"]
        for name in names:
            reader = open_store(file_path=name, read_only=True)
            assert reader.identity() == identity, name
            reader.close()
        owner.close()
        for name in [str(hard), *names]:
            other = open_store(file_path=name)
            assert other.identity() == identity, name
            other.close()

    def test_other_tables_and_files_differ(self, path: Path, open_store: Any) -> None:
        """Another table of the same file, or a copy of the file, is another store; a table
        name differing only in case is the same one."""
        owner = open_store()
        owner.store(session(1))
        other_table = open_store(table_name="other")
        assert other_table.identity() != owner.identity()
        same = open_store(table_name="SESSIONS", read_only=True)
        assert same.identity() == owner.identity()
        owner.close()
        copy = path.with_name("copy.sqlite")
        copy.write_bytes(path.read_bytes())
        assert open_store(file_path=str(copy)).identity() != same.identity()


#: What an open says of a configured path of each kind that is not a regular file.
NOT_A_FILE = {
    "directory": "is a directory",
    "fifo": "not a regular file",
    "device": "not a regular file",
}


def make_not_a_file(path: Path, kind: str) -> None:
    """Make ``path`` a directory or (``kind="fifo"``) a FIFO."""
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)


class TestPathsThatAreNotFiles:
    """Issue 12 item 13: a configured path is never trusted to be a regular file."""

    @pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
    @pytest.mark.parametrize("read_only", [False, True], ids=["owner", "read-only"])
    def test_is_named_as_what_it_is(
        self, path: Path, open_store: Any, kind: str, read_only: bool
    ) -> None:
        """file_path naming a directory says "is a directory" (not "does not exist"); a FIFO
        or a device is refused as not a regular file, without blocking on it; nothing is
        created or changed."""
        if kind == "device":
            target = Path(os.devnull)
        else:
            target = path
            path.parent.mkdir()
            make_not_a_file(path, kind)
        with pytest.raises(StorageError, match=NOT_A_FILE[kind]):
            open_store(file_path=str(target), read_only=read_only)
        assert not lock_path(target).exists()
        if kind != "device":
            assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


class TestReadOnly:
    def test_a_missing_file_is_not_created(self, path: Path, open_store: Any) -> None:
        """Opening a missing file read-only fails, naming it, and creates nothing."""
        with pytest.raises(StorageError, match="does not exist"):
            open_store(read_only=True)
        assert not path.parent.exists()

    def test_a_missing_table_is_named(self, path: Path, open_store: Any) -> None:
        """Opening read-only a table the file lacks fails, naming the table."""
        open_store().close()
        with pytest.raises(StorageError, match="no table 'elsewhere'"):
            open_store(read_only=True, table_name="elsewhere")

    def test_sees_the_owners_commits_and_refuses_writes(self, path: Path, open_store: Any) -> None:
        """A read-only manager sees what a durable owner commits as it commits it, reads a
        store larger than one batch, and refuses writes."""
        owner = open_store()
        reader = open_store(read_only=True)
        assert reader.count() == 0
        for i in range(2_500):
            owner.store(session(i))
        assert reader.count() == 2_500
        assert len({s.id for s in reader.iter_sessions()}) == 2_500
        assert reader.peek("s02499") == session(2499)
        with pytest.raises(StorageError, match="read-only"):
            reader.cleanup_expired()
        assert reader.stats()["backend_stats"]["mode"] == "read-only"


class TestCleanup:
    @pytest.mark.parametrize("auto_save", [0, 600_000], ids=["durable", "interval"])
    def test_large_sweeps_delete_in_batches(
        self, path: Path, open_store: Any, clock: ManualClock, auto_save: int
    ) -> None:
        """A cleanup of more expired sessions than one batch removes all of them, from memory
        at once and from the file (in durable mode at once, in interval mode at the flush)."""
        manager = open_store(auto_save=auto_save)
        expiring = 2 * ExpiryIndex.BATCH + 500
        for i in range(expiring):
            manager.store(session(i, timeout_ms=1_000 + i % 7))
        for i in range(expiring, expiring + 10):
            manager.store(session(i))
        backend_of(manager).flush()
        clock.advance(2_000)
        assert manager.cleanup_expired() == expiring
        assert manager.count() == 10
        backend_of(manager).flush()
        assert len(rows(path)) == 10


class TestFork:
    def test_a_forked_child_cannot_write_the_parents_store(
        self, path: Path, open_store: Any
    ) -> None:
        """After fork the child refuses writes through the parent's manager (the file belongs
        to the parent) and its exit leaves the parent's store untouched."""
        manager = open_store()
        manager.store(session(1))
        pid = os.fork()
        if pid == 0:  # the child
            code = 3
            try:
                manager.store(session(2))
            except StorageError as exc:
                code = 0 if "forked child" in str(exc) else 4
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        manager.store(session(3))
        assert sorted(rows(path)) == ["s00001", "s00003"]


class TestOpenSqlitedict:
    def _bounded(self, work: Any) -> Any:
        """Run ``work`` in a thread; fail (instead of hanging) if it does not finish."""
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(("ok", work()))
            except BaseException as exc:
                outcome.append(("error", exc))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(60)
        assert not thread.is_alive(), "open_sqlitedict hung"
        kind, value = outcome[0]
        if kind == "error":
            raise value
        return value

    def test_missing_table_and_damaged_file_raise_instead_of_hanging(
        self, path: Path, open_store: Any
    ) -> None:
        """Where plain sqlitedict's worker thread dies and its close hangs, open_sqlitedict
        raises a StorageError naming the file, and returns."""
        open_store().close()
        with pytest.raises(StorageError, match="elsewhere"):
            self._bounded(lambda: open_sqlitedict(path, "elsewhere"))
        garbage = path.with_name("garbage.sqlite")
        garbage.write_bytes(b"not a database at all " * 300)
        with pytest.raises(StorageError, match=r"garbage\.sqlite"):
            self._bounded(lambda: open_sqlitedict(garbage))
        with pytest.raises(FileNotFoundError):
            open_sqlitedict(path.with_name("missing.sqlite"))

    @pytest.mark.parametrize("kind", ["directory", "fifo"])
    def test_a_path_that_is_not_a_file_is_named(self, tmp_path: Path, kind: str) -> None:
        """A directory or a FIFO is named as what it is (StorageError), not "does not exist",
        and a FIFO does not block the open."""
        odd = tmp_path / "odd.sqlite"
        make_not_a_file(odd, kind)
        with pytest.raises(StorageError, match=NOT_A_FILE[kind]):
            self._bounded(lambda: open_sqlitedict(odd))
