"""What the sqlitedict backend adds to the shared semantics: files, format, modes, locking."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlitedict import SqliteDict

from sessionkeeper import (
    ExpiryIndex,
    Session,
    SessionKeeperError,
    SessionManager,
    StorageError,
    decode_session,
    encode_session,
)
from sessionkeeper.testing import ManualClock
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
        read_only = opts.pop("read_only", False)
        manager = SessionManager(
            backend="sqlitedict",
            backend_opts={"file_path": str(path), "auto_save": 0, **opts},
            cleanup_interval=0,
            clock=clock,
            read_only=read_only,
        )
        opened.append(manager)
        return manager

    yield make
    for manager in reversed(opened):
        manager.close()


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
        """In durable mode store, touch and delete are committed before they return."""
        manager = open_store()
        manager.store(session(1))
        assert decode_session(rows(path)["s00001"]) == session(1)
        clock.advance(5_000)
        manager.touch("s00001")
        assert decode_session(rows(path)["s00001"]).last_accessed == clock.now
        manager.delete("s00001")
        assert rows(path) == {}

    def test_a_failed_commit_acknowledges_nothing(self, path: Path, open_store: Any) -> None:
        """When the commit fails (another connection holds SQLite's write lock) the store
        raises StorageError naming the file, and neither the copy nor the file changed."""
        manager = open_store(busy_timeout=0)
        manager.store(session(1))
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageError, match="locked") as info:
                manager.store(session(1).replace(metadata={"lost": True}))
            assert str(path) in str(info.value)
            with pytest.raises(StorageError):
                manager.store(session(2))
            with pytest.raises(StorageError):
                manager.delete("s00001")
            assert manager.peek("s00001") == session(1)
            assert manager.list() == ["s00001"]
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        manager.store(session(2))
        assert sorted(rows(path)) == ["s00001", "s00002"]


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
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageError, match="locked"):
                backend.flush()
            manager.store(session(1).replace(metadata={"v": 2}))
            manager.store(session(2))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
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
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageError, match="1 buffered change"):
                backend.sessionkeeper_close()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
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
        while sum(map(len, acknowledged)) < 200:
            time.sleep(0.001)
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
