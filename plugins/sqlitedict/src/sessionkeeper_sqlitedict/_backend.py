"""The ``sqlitedict`` backend plugin: one SQLite file, a write-through copy in memory.

The owning process
------------------
Opening for writing takes the file's owner lock (:mod:`._lock`), opens the file with the standard
library's :mod:`sqlite3` (journal mode and ``synchronous`` from the options), creates the table if
needed and loads every row into ``_sessions`` — a ``dict`` id -> :class:`~sessionkeeper.Session`
— and the expiry index. From then on reads never touch SQLite: ``fetch`` is one ``dict.get``.
Every write changes the copy and the file:

- *durable mode* (``auto_save = 0``): the write is committed before the hook returns (with
  ``synchronous = "FULL"``, fsynced). When the commit fails the copy is put back as it was and
  :class:`~sessionkeeper.StorageError` is raised: nothing is acknowledged that is not on disk.
  Concurrent writers share commits (*group commit*): while one transaction commits, the writes
  that arrive queue up, and the next transaction takes all of them (see ``_durable``).
- *interval mode* (``auto_save > 0``): the write lands in the copy and in a buffer of pending
  changes (id -> session, or ``None`` for a delete; the last change per id wins). A flusher thread
  commits the buffer every ``auto_save`` ms in one transaction, and so do ``close`` and interpreter
  exit. A failed flush keeps the changes pending and is retried at the next interval.

Rows that do not decode are kept as they are, out of the copy: fetching one raises
:class:`~sessionkeeper.StorageError` naming the file, the table and the key (never "not found");
storing or deleting that id replaces or removes the row; ``sessionkeeper check --repair``
quarantines them.

Read-only
---------
Opened with ``read_only`` (the CLI's ``list``, ``show`` and ``stats``), the backend takes no lock,
connects with SQLite's ``mode=ro`` and loads nothing: each call reads the rows it needs. It sees
what the owner has committed.

The file is in sqlitedict's table format (:mod:`._sql`), but it is read and written with the
standard library's :mod:`sqlite3`, not through ``sqlitedict.SqliteDict``, whose worker thread
costs tens of microseconds a call and whose connection never fsyncs (see docs/sqlitedict.md).
"""

from __future__ import annotations

import atexit
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, NoReturn, cast

from sessionkeeper import (
    BackendContext,
    Capabilities,
    ExpiryIndex,
    Session,
    StorageError,
    encode_session,
    hookimpl,
)

from ._check import check_file
from ._lock import OwnerLock
from ._options import SqliteDictOptions
from ._sql import (
    COLUMNS,
    RowError,
    Statements,
    connect_read_only,
    connect_writer,
    decode_row,
    file_problem,
    hot_journal_hint,
    table_columns,
)

__all__ = ["SqliteDictBackend"]

log = logging.getLogger("sessionkeeper.sqlitedict")

BUCKET_MS: Final = ExpiryIndex.BUCKET_MS
#: Rows read per round trip when loading or iterating.
READ_BATCH: Final = 2_048
#: How long ``close`` waits for the flusher thread to finish a commit in progress.
CLOSE_WAIT_S: Final = 30.0
#: Connections a forked child inherited: kept referenced so that they are never closed there.
_inherited: list[sqlite3.Connection] = []

#: The kinds of durable write (:class:`_Write`), and what a refusal calls each.
_STORE: Final = 0
_TOUCH: Final = 1
_DELETE: Final = 2
_OPERATIONS: Final = ("store", "touch a session", "delete a session")


class _Write:
    """A durable store, touch or delete on its way to a commit, and how it turned out.

    When nobody else is writing, its own thread commits it alone. Otherwise the thread queues
    it and, unless it leads, blocks on ``waiter`` (a lock it holds). The leader of its group
    applies it to the copy, commits it with the rest of the group, fills in ``result`` or
    ``error`` (and ``cause``), sets ``done`` and releases ``waiter``; or, when the write is
    first in the queue as a group ends, sets ``promoted`` and releases ``waiter``: the writer
    then leads the next group. ``done`` and ``promoted`` change under ``_group``.
    """

    __slots__ = (
        "cause",
        "done",
        "error",
        "kind",
        "last_accessed",
        "promoted",
        "result",
        "session",
        "session_id",
        "waiter",
    )

    def __init__(
        self, kind: int, session_id: str, session: Session | None = None, last_accessed: int = 0
    ) -> None:
        self.kind = kind
        self.session_id = session_id
        self.session = session
        self.last_accessed = last_accessed
        self.result: Session | bool | None = None
        self.error: StorageError | None = None
        self.cause: BaseException | None = None
        self.done = False
        self.promoted = False
        self.waiter: threading.Lock | None = None


class SqliteDictBackend:
    """Sessions in one SQLite file, in sqlitedict's table format, with an in-memory copy.

    See the module docstring for how reads and writes work in durable, interval and read-only
    mode. One instance serves one manager; one process owns a table for writing at a time.
    """

    options_class: ClassVar[type[SqliteDictOptions]] = SqliteDictOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=True, shared=False, replicated=False, blocking=True, read_only_open=True
    )

    def __init__(self, options: SqliteDictOptions, context: BackendContext) -> None:
        # No I/O here: resources are opened by sessionkeeper_open.
        self.options = options
        self.context = context
        self.path: Path = context.resolve(options.file_path)
        self.table = options.table_name
        self.read_only = context.read_only
        self.durable = options.durable
        self._sql = Statements(self.table)
        self._sessions: dict[str, Session] = {}
        self._index = ExpiryIndex()
        #: Rows that did not decode: key -> why (kept on disk, out of the copy).
        self._undecodable: dict[object, str] = {}
        self._pending: dict[str, Session | None] = {}
        self._lock = threading.Lock()  # the copy, the index and the pending buffer
        self._db_lock = threading.Lock()  # the connection
        self._flush_lock = threading.Lock()  # one flush at a time
        self._sweep_lock = threading.Lock()  # one cleanup at a time
        # Durable mode's group commit: the writes queued for the next group, and whether a
        # thread is leading one (see _durable).
        self._group = threading.Lock()
        self._queue: list[_Write] = []
        self._leading = False
        self._connection: sqlite3.Connection | None = None
        self._owner: OwnerLock | None = None
        #: (st_dev, st_ino) of the file opened, for sessionkeeper_identity.
        self._file_identity: tuple[int, int] | None = None
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._open = False
        self._writable = False
        self._refusal = "the backend is not open"
        self._pid = os.getpid()
        # Figures for stats().
        self._writes = 0  # changes made since open (each store/touch/delete that changed a row)
        self._committed = 0  # of those, how many are committed
        self._commits = 0  # transactions committed (a durable group, a batch, a flush)
        self._failed_commits = 0  # transactions that failed to commit (nothing acknowledged)
        self._flushes = 0
        self._flush_failures = 0
        self._last_error: str | None = None
        self._logged_error: str | None = None
        self._load_seconds: float | None = None
        self._get: Callable[[str], Session | None] = self._sessions.get

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        mode = "read-only" if self.read_only else ("durable" if self.durable else "interval")
        return f"<SqliteDictBackend {str(self.path)!r} table={self.table!r} {mode} {state}>"

    # -- errors -------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.path}, table {self.table!r}"

    def _error(self, operation: str, exc: BaseException) -> StorageError:
        hint = hot_journal_hint(self.path) if self.read_only else ""
        if not hint and type(exc) is sqlite3.DatabaseError:  # SQLITE_CORRUPT, SQLITE_NOTADB
            hint = "; the file may be damaged: run `sessionkeeper check` (and `--repair`)"
        return StorageError(
            self.context.name,
            f"{self._where()}: {operation} failed: {type(exc).__name__}: {exc}{hint}",
        )

    def _row_error(self, exc: RowError) -> StorageError:
        return StorageError(
            self.context.name,
            f"{self._where()}, {exc}; the row is not a sessionkeeper session (foreign or "
            "corrupted) and is left as it is: run `sessionkeeper check --repair` to quarantine "
            "it, or store or delete this id to replace it",
        )

    def _refuse(self, operation: str) -> NoReturn:
        raise self._refused(operation)

    def _refused(self, operation: str) -> StorageError:
        return StorageError(
            self.context.name, f"{self._where()}: cannot {operation}: {self._refusal}"
        )

    # -- lifecycle ----------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_open(self) -> None:
        """Open the file: for writing (lock, load, flusher) or, with ``read_only``, for reading."""
        if self._open:
            return
        if self.read_only:
            self._open_read_only()
            self._refusal = "it was opened read-only"
        else:
            self._open_owner()
            self._writable = True
        self._open = True

    def _open_read_only(self) -> None:
        # A directory or a FIFO is named as what it is (opening a FIFO would block).
        problem = file_problem(self.path, if_missing=" (a read-only open creates nothing)")
        if problem is not None:
            raise StorageError(self.context.name, problem)
        try:
            connection = connect_read_only(self.path, busy_timeout_ms=self.options.busy_timeout)
            st = os.stat(self.path)
        except sqlite3.Error as exc:
            raise self._error("opening read-only", exc) from exc
        except OSError as exc:
            connection.close()
            raise StorageError(
                self.context.name, f"{self.path}: {exc.strerror or exc} (it changed while opening)"
            ) from None
        self._file_identity = (st.st_dev, st.st_ino)
        try:
            columns = table_columns(connection, self.table)
        except sqlite3.Error as exc:
            connection.close()
            raise self._error("reading the schema", exc) from exc
        if not columns:
            connection.close()
            raise StorageError(
                self.context.name,
                f"{self.path} has no table {self.table!r} (nothing was ever stored in it, or "
                "table_name is wrong)",
            )
        self._check_columns(columns, connection)
        self._connection = connection
        self._get = self._read_one

    def _check_columns(self, columns: list[str], connection: sqlite3.Connection) -> None:
        if tuple(columns) != COLUMNS:
            connection.close()
            raise StorageError(
                self.context.name,
                f"{self._where()} has columns {columns}, not sqlitedict's (key, value): it is "
                "not a session table",
            )

    def _open_owner(self) -> None:
        path = self.path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                self.context.name,
                f"cannot create the directory {path.parent}: {exc.strerror or exc}",
            ) from None
        owner = OwnerLock(path, self.table, backend=self.context.name, create=True)
        owner.acquire()  # creates the file (mode 0600) if needed
        try:
            self._connection = self._connect_owner()
            self._load()
        except BaseException:
            self._close_connection()
            self._sessions.clear()
            self._index.clear()
            self._undecodable.clear()
            owner.release()
            raise
        self._owner = owner
        self._file_identity = owner.identity
        self._warn_of_hard_links()
        self._pid = os.getpid()
        _open_owners.add(self)
        if not self.durable:
            self._stop.clear()
            self._flusher = threading.Thread(
                target=_run_flusher,
                args=(weakref.ref(self), self.options.auto_save / 1000, self._stop),
                name=f"sessionkeeper-sqlitedict-flush-{self.table}",
                daemon=True,
            )
            self._flusher.start()

    def _warn_of_hard_links(self) -> None:
        """Log a warning when the file has several names (hard links).

        The lock keeps a second owner out whatever name it uses, but SQLite names the
        ``-wal`` and ``-journal`` files after the name it was given: after a crash, an owner
        opening the file by another name does not see the committed changes still in the first
        name's WAL (and an open by the first name later replays them over newer ones).
        """
        try:
            links = os.stat(self.path).st_nlink
        except OSError:
            return
        if links > 1:
            log.warning(
                "%s has %d names (hard links); SQLite names its -wal and -journal files after "
                "the name it is opened by, so always open it by one name (a symlink is safe)",
                self.path,
                links,
            )

    def _connect_owner(self) -> sqlite3.Connection:
        # The owner lock created the file with mode 0600 before SQLite could (SQLite gives its
        # -wal and -shm files the database file's mode).
        path, options = self.path, self.options
        try:
            connection = connect_writer(path, busy_timeout_ms=options.busy_timeout)
        except sqlite3.Error as exc:
            raise self._error("opening", exc) from exc
        try:
            mode = connection.execute(f"PRAGMA journal_mode = {options.journal_mode.upper()}")
            actual = str(mode.fetchone()[0]).upper()
            if actual != options.journal_mode.upper():
                raise sqlite3.OperationalError(
                    f"journal_mode {options.journal_mode.upper()} was refused (still {actual})"
                )
            connection.execute(f"PRAGMA synchronous = {options.synchronous.upper()}")
            connection.execute(self._sql.create)
            self._check_columns(table_columns(connection, self.table), connection)
        except sqlite3.Error as exc:
            connection.close()
            raise self._error("opening", exc) from exc
        except BaseException:
            connection.close()
            raise
        return connection

    def _load(self) -> None:
        """Read every row into the copy and the index."""
        began = time.perf_counter()
        connection = self._connection
        assert connection is not None
        sessions, index, undecodable = self._sessions, self._index, self._undecodable
        file = index.file
        try:
            cursor = connection.execute(self._sql.select_all)
            while rows := cursor.fetchmany(READ_BATCH):
                for key, value in rows:
                    try:
                        session = decode_row(key, value)
                    except RowError as exc:
                        undecodable[key] = exc.reason
                        continue
                    # Keyed by the session's own id string (equal to ``key``), so that the
                    # copy holds one string per session, not two.
                    session_id = session.id
                    sessions[session_id] = session
                    timeout = session.timeout_ms
                    if timeout is not None:
                        file(session_id, (session.last_accessed + timeout) // BUCKET_MS)
        except sqlite3.Error as exc:
            raise self._error(f"loading the sessions ({len(sessions)} read)", exc) from exc
        self._load_seconds = time.perf_counter() - began
        if undecodable:
            key, reason = next(iter(undecodable.items()))
            log.warning(
                "%s: %d row(s) do not decode and are left as they are (first: key %r: %s); "
                "fetching them raises StorageError; run `sessionkeeper check --repair` to "
                "quarantine them",
                self._where(),
                len(undecodable),
                key,
                reason,
            )

    @hookimpl
    def sessionkeeper_close(self) -> None:
        """Commit what is buffered, then release the file. Idempotent; never hangs."""
        if not self._open:
            return
        self._open = False
        # Taking the lock waits for a write in progress; every later one is refused.
        locked = self._lock.acquire(timeout=CLOSE_WAIT_S)
        self._writable = False
        self._refusal = "the backend is closed"
        if locked:
            self._lock.release()
        failure: BaseException | None = None
        flusher = self._flusher
        if flusher is not None:
            self._stop.set()
            flusher.join(CLOSE_WAIT_S)
            self._flusher = None
        if not self.read_only and self._pid == os.getpid():
            try:
                self._flush(wait=CLOSE_WAIT_S)
            except BaseException as exc:
                failure = exc
        _open_owners.discard(self)
        self._close_connection()
        if self._owner is not None:
            self._owner.release()
            self._owner = None
        with self._lock:
            lost = len(self._pending)
            self._pending = {}
            self._sessions.clear()
            self._index.clear()
            self._undecodable.clear()
        if failure is not None:
            raise StorageError(
                self.context.name,
                f"{self._where()}: {lost} buffered change(s) could not be committed at close: "
                f"{type(failure).__name__}: {failure}",
            ) from failure

    def _close_connection(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._connection = None
        if self._db_lock.acquire(timeout=CLOSE_WAIT_S):
            try:
                connection.close()
            except sqlite3.Error:
                log.exception("closing %s failed", self._where())
            finally:
                self._db_lock.release()
        else:  # a commit is stuck in the kernel: leave the connection to the process's exit
            log.error("closing %s: a commit did not finish in %.0f s", self._where(), CLOSE_WAIT_S)

    def _forked(self) -> None:
        """In a forked child: the copy and the file belong to the parent; refuse writes."""
        # A parent thread may have held these at the fork: the child gets fresh ones.
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._sweep_lock = threading.Lock()
        self._group = threading.Lock()
        self._queue = []  # the parent's writers do not exist here
        self._leading = False
        self._writable = False
        self._refusal = (
            f"it was opened by process {self._pid} and this is a forked child "
            f"({os.getpid()}); open the manager after forking"
        )
        self._flusher = None
        self._owner = None
        if self._connection is not None:  # never use, nor close, the parent's connection here
            _inherited.append(self._connection)
            self._connection = None

    # -- the hot paths ------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_fetch(self, session_id: str) -> Session | None:
        """The stored session or ``None``: one ``dict.get`` on the copy (a row read read-only)."""
        session = self._get(session_id)
        if session is None and self._undecodable:
            self._raise_if_undecodable(session_id)
        return session

    def _raise_if_undecodable(self, session_id: str) -> None:
        reason = self._undecodable.get(session_id)
        if reason is not None:
            raise self._row_error(RowError(session_id, reason))

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        """Insert or replace ``session`` in the copy, then commit it (durable) or buffer it."""
        if self.durable:
            self._durable(_Write(_STORE, session.id, session))
        else:
            self._buffer((session,))

    @hookimpl
    def sessionkeeper_store_many(self, sessions: Sequence[Session]) -> int:
        """Insert or replace every session in the copy; commit them in one transaction
        (durable: all or none, as a group of :meth:`_commit_group`) or buffer them."""
        if not self.durable:
            self._buffer(sessions)
            return len(sessions)
        batch = [_Write(_STORE, session.id, session) for session in sessions]
        with self._lock:
            self._commit_group(batch)
        for write in batch:
            if write.error is not None:
                raise write.error from write.cause
        return len(sessions)

    def _buffer(self, sessions: Sequence[Session]) -> None:
        """Interval mode: store ``sessions`` in the copy and the buffer of pending changes."""
        stored, pending, undecodable = self._sessions, self._pending, self._undecodable
        with self._lock:
            # Checked under the lock, which close() takes to stop writes: a write either lands
            # before the final commit or is refused, never buffered after it.
            if not self._writable:
                self._refuse("store")
            for session in sessions:
                session_id = session.id
                self._index.stored(stored.get(session_id), session)
                stored[session_id] = session
                if undecodable:
                    undecodable.pop(session_id, None)
                pending[session_id] = session
            self._writes += len(sessions)

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        """Move ``last_accessed`` forward (never back); ``None`` for an unknown id."""
        if self.durable:
            result = self._durable(_Write(_TOUCH, session_id, last_accessed=last_accessed))
            return cast("Session | None", result)
        sessions = self._sessions
        with self._lock:
            if not self._writable:
                self._refuse("touch a session")
            session = sessions.get(session_id)
            if session is None:
                if self._undecodable:
                    self._raise_if_undecodable(session_id)
                return None
            if last_accessed <= session.last_accessed:
                return session
            touched = sessions[session_id] = session.touched(last_accessed)
            self._pending[session_id] = touched
            self._writes += 1
            return touched

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        """Remove the session (or an undecodable row with this key); ``False`` if none."""
        if self.durable:
            return self._durable(_Write(_DELETE, session_id)) is True
        with self._lock:
            if not self._writable:
                self._refuse("delete a session")
            session = self._sessions.pop(session_id, None)
            bad = self._undecodable.pop(session_id, None) if self._undecodable else None
            if session is None and bad is None:
                return False
            self._pending[session_id] = None
            self._writes += 1
            return True

    # -- durable mode: group commit -----------------------------------------------------------

    def _durable(self, write: _Write) -> Session | bool | None:
        """Durable mode: commit ``write`` (alone or in a group), return its result or raise.

        Group commit, as databases do it: one writer at a time *leads*. The leader takes
        ``_lock``, takes every write queued by then (its own among them), applies them to the
        copy in order and commits them in one transaction (:meth:`_commit_group`); then it wakes
        the writers of its group and hands the lead to the first writer that queued meanwhile,
        whose group is every write queued by the time it holds ``_lock``. So N threads writing
        at once share commits instead of paying one each. A lone writer (nobody leading,
        ``_lock`` free) skips the queue and commits a group of one: one commit, as before.

        A writer returns only once the transaction holding its change has committed; when that
        commit fails, the copy is put back and every writer of the group whose outcome rested on
        it raises :class:`~sessionkeeper.StorageError`. Each group is applied and committed under
        ``_lock``, like every other write, so what holds ``_lock`` (``close``, ``list``,
        ``count``, ``store_many``, a cleanup step) sees the copy as it is committed (``fetch``,
        which takes no lock, may see the changes of the group being committed, as it could see
        the one write being committed before); and the next group is applied only once this one
        has committed or been undone, so no write builds on a change that another group may yet
        undo.
        """
        if not self._leading and self._lock.acquire(blocking=False):
            # Nobody leads and nothing holds _lock: a group of one, without the queue's
            # bookkeeping. Writers arriving meanwhile queue up and one of them leads next.
            try:
                self._commit_group([write])
            finally:
                self._lock.release()
        else:
            self._queue_and_wait(write)
        if write.error is not None:
            raise write.error from write.cause
        return write.result

    def _queue_and_wait(self, write: _Write) -> None:
        """Queue ``write``; return once a leader settled it, or after leading its group."""
        with self._group:
            self._queue.append(write)
            if self._leading:
                waiter = write.waiter = threading.Lock()
                waiter.acquire()
            else:
                self._leading = True
                waiter = None
        if waiter is not None:
            try:
                waiter.acquire()  # released once settled, or promoted to lead
            except BaseException:  # interrupted (KeyboardInterrupt) while queued
                self._withdraw(write)
                raise
        if not write.done:
            self._lead(write)

    def _lead(self, own: _Write) -> None:
        """Commit the next group (it holds ``own``), then hand the lead on."""
        batch: list[_Write] = []
        try:
            with self._lock:
                # Taken once _lock is ours: writes that queued while we waited join this group.
                with self._group:
                    batch, self._queue = self._queue, []
                self._commit_group(batch)
        finally:
            with self._group:
                for write in batch:
                    write.done = True
                if own in self._queue:  # interrupted before taking the group
                    self._queue.remove(own)
                successor = self._promote()
            for write in batch:
                if write.waiter is not None:
                    write.waiter.release()
            if successor is not None:
                successor.release()

    def _promote(self) -> threading.Lock | None:
        """Hand the lead to the first queued write (with ``_group`` held): the lock to release
        to wake its writer, or ``None`` (nobody queued: nobody leads)."""
        if not self._queue:
            self._leading = False
            return None
        successor = self._queue[0]
        successor.promoted = True
        return successor.waiter

    def _withdraw(self, write: _Write) -> None:
        """Take back a queued ``write`` whose writer was interrupted while waiting."""
        successor = None
        with self._group:
            if write.done or write not in self._queue:
                return  # settled, or in a group being committed: it will be settled
            self._queue.remove(write)
            if write.promoted:  # it was to lead: hand the lead on
                successor = self._promote()
        if successor is not None:
            successor.release()

    def _commit_group(self, batch: list[_Write]) -> None:
        """Apply ``batch`` to the copy in order, then commit its changes in one transaction
        (called by the leader with ``_lock`` held).

        Each write sees the copy as the writes before it left it, as if they had run one after
        another, and the transaction holds the last change of each id. A write that changes
        nothing (a touch that would go backwards, a delete of an unknown id) does not depend on
        the commit, unless an earlier write of the group changed its id. When the commit fails,
        the writes are undone in reverse order (the copy is as before the group, as the file
        is) and each write that depended on it gets a :class:`~sessionkeeper.StorageError`;
        an error other than SQLite's is also raised in the leader.
        """
        # Checked under _lock, which close() takes to stop writes: a group is committed before
        # the backend closes, or refused whole.
        if not self._writable:
            for write in batch:
                write.error = self._refused(_OPERATIONS[write.kind])
            return
        sessions, undecodable, index = self._sessions, self._undecodable, self._index
        # (id, session before, undecodable reason before) of each change, in order.
        undo: list[tuple[str, Session | None, str | None]] = []
        changes: dict[str, Session | None] = {}
        held: list[_Write] = []  # the writes whose outcome is the transaction's
        committing = False
        try:
            for write in batch:
                key = write.session_id
                depends = key in changes  # on an earlier write of this group
                kind = write.kind
                if kind == _STORE:
                    session = write.session
                    assert session is not None
                    previous = sessions.get(key)
                    sessions[key] = session
                    index.stored(previous, session)
                    bad = undecodable.pop(key, None) if undecodable else None
                    undo.append((key, previous, bad))
                    changes[key] = session
                    depends = True
                elif kind == _TOUCH:
                    current = sessions.get(key)
                    if current is None:
                        reason = undecodable.get(key) if undecodable else None
                        if reason is not None:
                            write.error = self._row_error(RowError(key, reason))
                    elif write.last_accessed <= current.last_accessed:
                        write.result = current
                    else:
                        touched = sessions[key] = current.touched(write.last_accessed)
                        undo.append((key, current, None))
                        changes[key] = touched
                        write.result = touched
                        depends = True
                else:
                    current = sessions.pop(key, None)
                    bad = undecodable.pop(key, None) if undecodable else None
                    if current is None and bad is None:
                        write.result = False
                    else:
                        undo.append((key, current, bad))
                        changes[key] = None
                        write.result = True
                        depends = True
                if depends:
                    held.append(write)
            if not changes:
                return
            committing = True
            self._commit_changes(changes)
        except BaseException as exc:
            for key, previous, bad in reversed(undo):
                if previous is None:
                    sessions.pop(key, None)
                else:
                    sessions[key] = previous
                if bad is not None:
                    undecodable[key] = bad
            if committing:
                self._failed_commits += 1
            # Interrupted before the commit (the leader's KeyboardInterrupt, say): fail them all.
            failed = held if committing else [w for w in batch if w.error is None]
            for write in failed:
                write.result = None
                write.error = self._commit_error(exc)
                write.cause = exc
            if isinstance(exc, sqlite3.Error):
                self._last_error = f"{type(exc).__name__}: {exc}"
                return
            raise
        self._writes += len(undo)
        self._committed += len(undo)
        self._commits += 1

    def _commit_error(self, exc: BaseException) -> StorageError:
        """The error a writer of a group whose commit failed with ``exc`` raises (one each)."""
        if isinstance(exc, StorageError):  # a refusal: the connection is gone
            return StorageError(exc.backend, str(exc).removeprefix(f"{exc.backend} backend: "))
        return self._error("commit", exc)

    def _commit_changes(self, changes: dict[str, Session | None]) -> None:
        """Commit ``changes`` (id -> session, ``None``: delete) in one transaction (called with
        ``_lock`` held)."""
        connection = self._connection
        if connection is None:
            self._refuse("write")
        if len(changes) == 1:  # one statement, in SQLite's implicit transaction
            [(key, session)] = changes.items()
            with self._db_lock:
                if session is None:
                    connection.execute(self._sql.delete, (key,))
                else:
                    connection.execute(self._sql.upsert, (key, encode_session(session)))
            return
        upserts = [(key, encode_session(s)) for key, s in changes.items() if s is not None]
        deletes = [(key,) for key, s in changes.items() if s is None]
        with self._db_lock:
            self._write(upserts, deletes)

    # -- committing ---------------------------------------------------------------------------

    def _write(self, upserts: list[tuple[str, bytes]], deletes: list[tuple[str]]) -> None:
        """Commit ``upserts`` and ``deletes`` in one transaction (called with ``_db_lock`` held)."""
        connection = self._connection
        if connection is None:
            self._refuse("write")
        connection.execute("BEGIN IMMEDIATE")
        try:
            if upserts:
                connection.executemany(self._sql.upsert, upserts)
            if deletes:
                connection.executemany(self._sql.delete, deletes)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                try:
                    connection.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rolling back a failed commit to %s failed", self._where())
            raise

    def _flush(self, wait: float = -1) -> int:
        """Interval mode: commit the pending changes in one transaction; return how many.

        On failure the changes stay pending (a newer change to the same id wins) and the error
        is raised. ``wait`` bounds the wait for a flush already in progress (``-1``: no bound).
        """
        if not self._flush_lock.acquire(timeout=wait):
            raise TimeoutError(f"a commit in progress did not finish in {wait:.0f} s")
        try:
            with self._lock:
                if not self._pending:
                    return 0
                batch, self._pending = self._pending, {}
                writes = self._writes
            upserts = [(key, encode_session(s)) for key, s in batch.items() if s is not None]
            deletes = [(key,) for key, s in batch.items() if s is None]
            try:
                if not self._db_lock.acquire(timeout=wait):
                    raise TimeoutError(f"the connection stayed busy for {wait:.0f} s")
                try:
                    self._write(upserts, deletes)
                finally:
                    self._db_lock.release()
            except BaseException as exc:
                with self._lock:
                    for key, change in batch.items():
                        self._pending.setdefault(key, change)
                self._flush_failures += 1
                self._failed_commits += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                raise
            self._committed = writes
            self._flushes += 1
            self._commits += 1
            return len(batch)
        finally:
            self._flush_lock.release()

    def flush(self) -> int:
        """Commit the buffered changes now (interval mode); return how many were committed.

        Raises :class:`~sessionkeeper.StorageError` when the commit fails (the changes stay
        buffered). In durable mode there is never anything buffered.
        """
        if not self._writable:
            self._refuse("flush")
        try:
            return self._flush()
        except sqlite3.Error as exc:
            raise self._error("commit", exc) from exc

    def _flush_in_background(self) -> None:
        try:
            self._flush()
        except Exception as exc:
            # Logged once per distinct error; the changes stay pending and are retried.
            message = f"{type(exc).__name__}: {exc}"
            if message != self._logged_error:
                self._logged_error = message
                log.error(
                    "%s: committing %d buffered change(s) failed, will retry: %s",
                    self._where(),
                    len(self._pending),
                    message,
                )

    def _flush_at_exit(self) -> None:
        if self._open and not self.read_only and self._pid == os.getpid():
            try:
                self._flush(wait=CLOSE_WAIT_S)
            except Exception:
                log.exception("%s: committing buffered changes at exit failed", self._where())

    # -- reads on a read-only open ------------------------------------------------------------

    def _read_one(self, session_id: str) -> Session | None:
        connection = self._connection
        if connection is None:
            self._refuse("read")
        try:
            with self._db_lock:
                row = connection.execute(self._sql.select, (session_id,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error("read", exc) from exc
        if row is None:
            return None
        try:
            return decode_row(session_id, row[0])
        except RowError as exc:
            raise self._row_error(exc) from None

    def _read_rows(self) -> Iterator[tuple[object, object]]:
        """Every ``(key, value)`` of the table, in ``rowid`` order, read in batches."""
        connection = self._connection
        if connection is None:
            self._refuse("read")
        after = -(2**63)
        while True:
            try:
                with self._db_lock:
                    rows = connection.execute(
                        self._sql.select_batch, (after, READ_BATCH)
                    ).fetchall()
            except sqlite3.Error as exc:
                raise self._error("read", exc) from exc
            for rowid, key, value in rows:
                yield key, value
                after = rowid
            if len(rows) < READ_BATCH:
                return

    def _read_sessions(self) -> Iterator[Session]:
        """The sessions of a read-only open; undecodable rows are skipped and logged."""
        skipped = 0
        for key, value in self._read_rows():
            try:
                yield decode_row(key, value)
            except RowError as exc:
                skipped += 1
                if skipped == 1:
                    log.warning("%s: skipping a row that does not decode: %s", self._where(), exc)

    # -- the rest -----------------------------------------------------------------------------

    def _snapshot(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    @hookimpl
    def sessionkeeper_list(self, now: int) -> list[str]:
        """The ids of the sessions live at ``now`` (undecodable rows are not sessions)."""
        sessions = self._read_sessions() if self.read_only else self._snapshot()
        return [s.id for s in sessions if not s.is_expired(now)]

    @hookimpl
    def sessionkeeper_count(self, now: int) -> int:
        """Sessions live at ``now``: the stored ones less the expired ones the index finds."""
        if self.read_only:
            return sum(1 for s in self._read_sessions() if not s.is_expired(now))
        with self._lock:
            return len(self._sessions) - self._index.count_expired(now, self._sessions)

    @hookimpl
    def sessionkeeper_iter_sessions(self) -> Iterator[Session]:
        """Every stored session, expired ones included; then an error for undecodable rows.

        The owner iterates over a snapshot of its copy (taken on first use); a read-only open
        reads the file in batches. Rows that do not decode are never skipped silently: after
        the good sessions, :class:`~sessionkeeper.StorageError` names the first bad row.
        """
        if self.read_only:
            return self._iter_file()
        return self._iter_copy()

    def _iter_copy(self) -> Iterator[Session]:
        yield from self._snapshot()
        if self._undecodable:
            key, reason = next(iter(self._undecodable.items()))
            raise StorageError(
                self.context.name,
                f"{self._where()}: {len(self._undecodable)} row(s) do not decode and were left "
                f"out (first: {RowError(key, reason)}); run `sessionkeeper check --repair`",
            )

    def _iter_file(self) -> Iterator[Session]:
        bad: list[RowError] = []
        for key, value in self._read_rows():
            try:
                yield decode_row(key, value)
            except RowError as exc:
                bad.append(exc)
        if bad:
            raise StorageError(
                self.context.name,
                f"{self._where()}: {len(bad)} row(s) do not decode and were left out (first: "
                f"{bad[0]}); run `sessionkeeper check --repair`",
            )

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        """Delete the sessions expired at ``now``, in batches of at most ``ExpiryIndex.BATCH``.

        The cost is the number expired (the index), not the number stored. In durable mode each
        batch is one transaction; the lock is released between batches, so stores wait for at
        most one batch.
        """
        if not self._writable:
            self._refuse("clean up expired sessions")
        removed = 0
        with self._sweep_lock:
            steps = self._index.sweep(now, self._sessions)
            while True:
                with self._lock:
                    if self._closed_meanwhile():  # the rest waits for the next cleanup
                        return removed
                    deleted = next(steps, None)
                    if deleted is None:
                        return removed
                    if not deleted:
                        continue
                    if self.durable:
                        self._commit_deletes(deleted)
                    else:
                        pending = self._pending
                        for session in deleted:
                            pending[session.id] = None
                    self._writes += len(deleted)
                    removed += len(deleted)

    def _closed_meanwhile(self) -> bool:
        return not self._writable

    def _commit_deletes(self, deleted: list[Session]) -> None:
        """Durable mode: delete a batch in one transaction; on failure put the batch back."""
        try:
            with self._db_lock:
                self._write([], [(s.id,) for s in deleted])
        except BaseException as exc:
            self._failed_commits += 1
            for session in deleted:
                self._sessions[session.id] = session
                self._index.stored(None, session)
            if isinstance(exc, sqlite3.Error):
                self._last_error = f"{type(exc).__name__}: {exc}"
                raise self._error("cleanup commit", exc) from exc
            raise
        self._committed += len(deleted)
        self._commits += 1

    @hookimpl
    def sessionkeeper_stats(self) -> dict[str, Any]:
        """Where the store is, its mode, what the copy holds and how commits went."""
        mode = "read-only" if self.read_only else ("durable" if self.durable else "interval")
        figures: dict[str, Any] = {
            "file": str(self.path),
            "table_name": self.table,
            "mode": mode,
            "auto_save_ms": self.options.auto_save,
            "journal_mode": self.options.journal_mode.upper(),
            "synchronous": self.options.synchronous.upper(),
        }
        if self.read_only:
            return figures
        with self._lock:
            figures.update(
                stored=len(self._sessions),
                undecodable_rows=len(self._undecodable),
                pending_changes=len(self._pending),
                writes=self._writes,
                committed_writes=self._committed,
                commits=self._commits,
                failed_commits=self._failed_commits,
                index_entries=self._index.entries(),
            )
        figures.update(
            flushes=self._flushes,
            flush_failures=self._flush_failures,
            last_error=self._last_error,
            load_seconds=None if self._load_seconds is None else round(self._load_seconds, 3),
        )
        return figures

    @hookimpl
    def sessionkeeper_identity(self) -> str | None:
        """``<backend>:<st_dev>:<st_ino>:<table>`` of the file opened, ``None`` before open.

        The device and inode are the file's own, whatever path, symlink or hard link the options
        named it by, and the table name is lower-cased as SQLite compares names: two managers
        on one table of one file get the same identity, and two tables of one file, or two
        files, different ones.
        """
        if self._file_identity is None:
            return None
        device, inode = self._file_identity
        return f"{self.context.name}:{device}:{inode}:{self.table.lower()}"

    @hookimpl
    def sessionkeeper_check(self, repair: bool) -> dict[str, Any]:
        """``sessionkeeper check``: integrity check, decode every row, and repair if asked."""
        return check_file(self.path, self.table, backend=self.context.name, repair=repair)


def _run_flusher(
    backend_ref: weakref.ref[SqliteDictBackend], interval: float, stop: threading.Event
) -> None:
    """The flusher thread: commit every ``interval`` s until ``stop`` is set."""
    while not stop.wait(interval):
        backend = backend_ref()
        if backend is None:
            return
        backend._flush_in_background()
        del backend


_open_owners: weakref.WeakSet[SqliteDictBackend] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """Commit every open owner's buffered changes at interpreter exit (the manager then closes)."""
    for backend in list(_open_owners):
        backend._flush_at_exit()


def _after_fork_in_child() -> None:
    for backend in list(_open_owners):
        backend._forked()
    _open_owners.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
