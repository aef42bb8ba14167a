"""Shared mode (``shared = true``): any number of processes of one host read and write one file.

No copy in memory: every read is a ``SELECT`` and every write one ``BEGIN IMMEDIATE``
transaction that holds SQLite's write lock from its first read to its commit, so that each
operation — a conditional store, ``update``'s write, ``take``, ``rotate``, ``delete_owner`` — is
linearizable with every other write of every process. WAL mode is forced (readers never wait
for the writer), ``synchronous`` defaults to ``NORMAL`` (a commit survives the SIGKILL of any
process; a power cut may undo the last commits, never corrupt the file).

The rows stay in sqlitedict's table; the index table beside it (``expires_at`` and ``owner``
per row, :mod:`._shared_sql`) is written in the same transaction as each row, rebuilt at open
when a single owner wrote the file since. The file is held with a shared ``flock``
(:class:`~._lock.SharedLock`): shared processes coexist, a single owner and they refuse each
other. Cleanup takes the sweep lease (:mod:`._lease`) and deletes in bounded batches, each its
own transaction; a wait for another process's lock that runs out is a
:class:`~sessionkeeper.StorageError` naming the file and the process that held it
(:mod:`._busy`).

Each thread takes a connection from a pool (a list: ``pop`` and ``append`` are atomic) and gives
it back, so that threads of one process read side by side.

The module is long because the engine is one class with one method per hook, each a short
transaction; its statements are in :mod:`._shared_sql` and its lease in :mod:`._lease`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

from sessionkeeper import Session, StorageError, VersionConflict
from sessionkeeper.backend import BackendContext, Capabilities, encode_session, hookimpl

from ._backend import SqliteDictBackend
from ._busy import describe_holders, is_busy
from ._lease import Lease
from ._lock import SharedLock
from ._options import SqliteDictOptions
from ._shared_sql import (
    LAYOUT,
    REBUILD_BATCH,
    SharedStatements,
    expires_column,
    index_entry,
    index_rows,
)
from ._sql import (
    RowError,
    connect_writer,
    decode_row,
    paged_rows,
    table_columns,
    table_exists,
)
from ._writer import READ_BATCH

__all__ = ["OPEN_WAIT_MS", "SWEEP_BATCH", "SharedStore"]

log = logging.getLogger("sessionkeeper.sqlitedict")

#: Expired sessions deleted per transaction by ``cleanup_expired``.
SWEEP_BATCH: Final = 1_000
#: How long an open waits for the write lock to create the tables or rebuild the index (another
#: process may be rebuilding the index of a large file), at least.
OPEN_WAIT_MS: Final = 120_000

T = TypeVar("T")


class _Connection(sqlite3.Connection):
    """A connection of the pool, with the cursor its point reads reuse (a fetch makes none)."""

    reader: sqlite3.Cursor


def _connect(path: Path, busy_timeout_ms: int) -> _Connection:
    connection = connect_writer(path, busy_timeout_ms=busy_timeout_ms, factory=_Connection)
    connection.reader = connection.cursor()
    return connection


class SharedStore(SqliteDictBackend):
    """The file shared by every process that opens it with ``shared = true`` (see the module
    docstring)."""

    mode = "shared"
    durable = True
    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=True,
        shared=True,
        replicated=False,
        blocking=True,
        read_only_open=True,
        atomic=True,
    )

    def __init__(self, options: SqliteDictOptions, context: BackendContext) -> None:
        super().__init__(options, context)
        self._s = SharedStatements(self.table)
        self._select = self._s.select
        #: Connections not in use; every connection ever made, for close.
        self._idle: list[_Connection] = []
        self._made: list[_Connection] = []
        self._made_lock = threading.Lock()
        self._lock: SharedLock | None = None
        self._pid = os.getpid()
        self._synchronous = options.synchronous.upper()
        # Figures for stats().
        self._index_rebuilds = 0
        self._busy_failures = 0
        self._swept = 0

    # -- connections --------------------------------------------------------------------------

    def _connect(self) -> _Connection:
        """A new connection of the pool (refused once the store is closed)."""
        if not self._open:
            self._refuse("use the file")
        connection = _connect(self.path, self.options.busy_timeout)
        try:
            self._configure(connection)
        except sqlite3.Error as exc:
            connection.close()
            raise self._failure("connecting", exc) from exc
        with self._made_lock:
            self._made.append(connection)
        return connection

    def _configure(self, connection: sqlite3.Connection) -> None:
        """The per-connection settings: ``synchronous`` and the read map (``mmap_size``)."""
        connection.execute(f"PRAGMA synchronous = {self._synchronous}")
        connection.execute(f"PRAGMA mmap_size = {self.options.mmap_size}")

    def _drain(self) -> None:
        """Close the idle connections (the store is closed: each one in use is closed when it
        is given back)."""
        idle = self._idle
        while idle:
            try:
                connection = idle.pop()
            except IndexError:
                return
            with self._made_lock, contextlib.suppress(ValueError):
                self._made.remove(connection)
            try:
                connection.close()
            except sqlite3.Error:
                log.exception("closing a connection to %s failed", self._where())

    def _failure(self, operation: str, exc: BaseException) -> StorageError:
        """The :class:`StorageError` for SQLite's ``exc``: a wait that ran out names the file
        and what held it."""
        if is_busy(exc):
            self._busy_failures += 1
            return StorageError(
                self.context.name,
                f"{self._where()}: {operation} waited busy_timeout = "
                f"{self.options.busy_timeout} ms for SQLite's lock on the file and gave up; "
                f"held by {describe_holders(self.path)}. Another process kept a transaction "
                "open that long: find it, or raise busy_timeout",
            )
        return self._error(operation, exc)

    @contextlib.contextmanager
    def _pooled(self, operation: str) -> Iterator[sqlite3.Connection]:
        """A connection of the pool for one operation (given back after it); SQLite's errors
        become :class:`~sessionkeeper.StorageError` (:meth:`_failure`)."""
        idle = self._idle
        try:
            connection = idle.pop()
        except IndexError:
            connection = self._connect()
        try:
            yield connection
        except sqlite3.Error as exc:
            raise self._failure(operation, exc) from exc
        finally:
            idle.append(connection)
            if not self._open:
                self._drain()

    def _transaction(self, operation: str, work: Callable[..., T], *args: Any) -> T:
        """``work(connection, *args)`` inside ``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back when
        it raises (a conflict, an undecodable row, SQLite's error)."""
        with self._pooled(operation) as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(connection, *args)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    try:
                        connection.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.exception(
                            "rolling back a failed %s on %s failed", operation, self._where()
                        )
                raise
            return result

    def _query(self, operation: str, statement: str, parameters: tuple[Any, ...]) -> list[Any]:
        """Every row of one read."""
        with self._pooled(operation) as connection:
            return connection.execute(statement, parameters).fetchall()

    # -- lifecycle ----------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_open(self) -> None:
        """Take the shared lock, force WAL, create the tables if needed and bring the index
        up to date with the table."""
        if self._open:
            return
        path = self.path
        self._make_directory()
        lock = SharedLock(path, self.table, backend=self.context.name)
        lock.acquire()  # creates the file (mode 0600) if needed
        connection: _Connection | None = None
        try:
            connection = _connect(path, self.options.busy_timeout)
            try:
                self._prepare(connection)
            except sqlite3.Error as exc:
                raise self._failure("opening", exc) from exc
        except BaseException:
            if connection is not None:
                connection.close()
            lock.release()
            raise
        self._lock = lock
        self._file_identity = lock.identity
        self._pid = os.getpid()
        self._made.append(connection)
        self._idle.append(connection)
        self._refusal = "the backend is closed"
        self._open = True
        _open_stores.add(self)

    def _prepare(self, connection: sqlite3.Connection) -> None:
        """WAL, ``synchronous`` and ``mmap_size`` on the opening connection; the schema checked
        (a read when everything is in place), created or brought up to date (one write
        transaction)."""
        mode = str(connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]).upper()
        if mode != "WAL":
            raise sqlite3.OperationalError(f"journal_mode WAL was refused (still {mode})")
        self._configure(connection)
        connection.execute("BEGIN")
        try:
            ready = self._ready(connection)
        finally:
            connection.execute("COMMIT")
        if ready:
            return
        # Another process may be rebuilding the index of a large file (seconds per million
        # rows): wait for it longer than for one operation, then find the index ready.
        wait = max(self.options.busy_timeout, OPEN_WAIT_MS)
        connection.execute(f"PRAGMA busy_timeout = {wait}")
        try:
            self._build(connection)
        finally:
            connection.execute(f"PRAGMA busy_timeout = {self.options.busy_timeout}")

    def _build(self, connection: sqlite3.Connection) -> None:
        """Create the tables and rebuild the index if it is still not ready, in one write
        transaction."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in self._s.schema:
                connection.execute(statement)
            self._check_columns(table_columns(connection, self.table))
            if not self._ready(connection):
                self._rebuild_index(connection)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _ready(self, connection: sqlite3.Connection) -> bool:
        """Whether the tables exist at :data:`LAYOUT` and the index matches the table (the
        marker a single owner removes is there, and both count the same rows). A layout newer
        than this code is refused; a table with other columns than sqlitedict's too."""
        s = self._s
        for table in (self.table, s.index_table, "sessionkeeper_meta"):
            if not table_exists(connection, table):
                return False
        self._check_columns(table_columns(connection, self.table))
        row = connection.execute(s.meta_get, (s.layout_key,)).fetchone()
        layout = row[0] if row is not None else None
        if isinstance(layout, int) and layout > LAYOUT:
            raise StorageError(
                self.context.name,
                f"{self._where()}: its shared-mode layout is version {layout}, written by a "
                f"newer sessionkeeper-sqlitedict (this one knows up to {LAYOUT}): upgrade it",
            )
        if layout != LAYOUT:
            return False
        row = connection.execute(s.meta_get, (s.index_key,)).fetchone()
        if row is None or row[0] != "valid":
            return False
        rows = connection.execute(s.count_rows).fetchone()[0]
        entries = connection.execute(s.count_index).fetchone()[0]
        return bool(rows == entries)

    def _rebuild_index(self, connection: sqlite3.Connection) -> None:
        """Rebuild the index from every row (in the caller's write transaction)."""
        s = self._s
        connection.execute(s.index_clear)
        cursor = connection.execute(s.select_all)
        while rows := cursor.fetchmany(REBUILD_BATCH):
            connection.executemany(s.index_row, list(index_rows(rows)))
        connection.execute(s.meta_put, (s.layout_key, LAYOUT))
        connection.execute(s.meta_put, (s.index_key, "valid"))
        self._index_rebuilds += 1
        log.info("%s: rebuilt the shared-mode index from the table", self._where())

    @hookimpl
    def sessionkeeper_close(self) -> None:
        """Close every connection and release the shared lock. Idempotent."""
        if not self._open:
            return
        self._open = False
        _open_stores.discard(self)
        if self._pid == os.getpid():
            self._drain()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _forked(self) -> None:
        """In a forked child: the connections belong to the parent; never use nor close them."""
        _inherited.extend(self._made)
        self._idle = []
        self._made = []
        self._made_lock = threading.Lock()
        self._open = False
        self._lock = None
        self._refusal = (
            f"it was opened by process {self._pid} and this is a forked child "
            f"({os.getpid()}); open the manager after forking"
        )

    def flush(self) -> int:
        """Nothing is ever buffered here: ``0`` (refused once the store is closed)."""
        if not self._open:
            self._refuse("flush")
        return 0

    # -- reads --------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_fetch(self, session_id: str) -> Session | None:
        """The session in the row of ``session_id`` (one ``SELECT``), or ``None``; a row that
        is not a session raises :class:`~sessionkeeper.StorageError`."""
        idle = self._idle
        try:
            connection = idle.pop()
        except IndexError:
            connection = self._connect()
        try:
            row = connection.reader.execute(self._select, (session_id,)).fetchone()
        except sqlite3.Error as exc:
            if type(session_id) is not str:  # not an id: the manager says so
                return None
            raise self._failure("read", exc) from exc
        finally:
            idle.append(connection)
            if not self._open:
                self._drain()
        return None if row is None else self._session_of(session_id, row[0])

    def _session_of(self, session_id: str, value: object) -> Session:
        """The session a row holds; :class:`~sessionkeeper.StorageError` when it is not one."""
        try:
            return decode_row(session_id, value)
        except RowError as exc:
            raise self._row_error(exc) from None

    @hookimpl
    def sessionkeeper_list(self, now: int) -> list[str]:
        """The ids of the sessions live at ``now``, from the index."""
        return [row[0] for row in self._query("list", self._s.list_live, (now,))]

    @hookimpl
    def sessionkeeper_count(self, now: int) -> int:
        """How many sessions are live at ``now``, from the index."""
        return int(self._query("count", self._s.count_live, (now,))[0][0])

    @hookimpl
    def sessionkeeper_list_owner(self, owner: str, now: int) -> list[str]:
        """The ids of ``owner``'s live sessions, through the owner index (cost: what the
        owner holds)."""
        return [row[0] for row in self._query("list", self._s.list_owner, (owner, now))]

    @hookimpl
    def sessionkeeper_count_owner(self, owner: str, now: int) -> int:
        """How many of ``owner``'s sessions are live, through the owner index."""
        return int(self._query("count", self._s.count_owner, (owner, now))[0][0])

    @hookimpl
    def sessionkeeper_iter_sessions(self) -> Iterator[Session]:
        """Every stored session, expired ones included, :data:`READ_BATCH` rows per read in
        ``rowid`` order (each read its own snapshot); then an error naming the rows that do
        not decode (never skipped silently)."""
        if not self._open:
            self._refuse("read")
        return self._iter_file()

    def _iter_file(self) -> Iterator[Session]:
        bad: list[RowError] = []

        def page(after: int) -> list[tuple[int, object, object]]:
            return self._query("read", self._s.select_page, (after, READ_BATCH))

        for key, value in paged_rows(page, READ_BATCH):
            try:
                yield decode_row(key, value)
            except RowError as exc:
                bad.append(exc)
        if bad:
            raise self._left_out(len(bad), bad[0])

    # -- writes -------------------------------------------------------------------------------

    def _put(self, connection: sqlite3.Connection, session: Session) -> None:
        """Write ``session``'s row and index entry (in the caller's transaction)."""
        connection.execute(self._s.upsert, (session.id, encode_session(session)))
        connection.execute(self._s.index_put, index_entry(session))

    def _remove(self, connection: sqlite3.Connection, session_id: str) -> bool:
        """Delete the row and index entry of ``session_id``; whether there was a row."""
        removed = connection.execute(self._s.delete, (session_id,)).rowcount
        connection.execute(self._s.index_delete, (session_id,))
        return bool(removed)

    def _read(self, connection: sqlite3.Connection, session_id: str) -> Session | None:
        """The session stored under ``session_id`` (in the caller's transaction); an
        undecodable row raises :class:`~sessionkeeper.StorageError`."""
        row = connection.execute(self._select, (session_id,)).fetchone()
        return None if row is None else self._session_of(session_id, row[0])

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        """Insert or replace ``session`` exactly as given (version included): one
        transaction."""
        self._transaction("store", self._put, session)

    @hookimpl
    def sessionkeeper_store_many(self, sessions: Sequence[Session]) -> int:
        """Insert or replace every session as given, in one transaction (all or none)."""
        self._transaction("store", self._put_many, sessions)
        return len(sessions)

    def _put_many(self, connection: sqlite3.Connection, sessions: Sequence[Session]) -> None:
        s = self._s
        connection.executemany(s.upsert, [(x.id, encode_session(x)) for x in sessions])
        connection.executemany(s.index_put, [index_entry(x) for x in sessions])

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        """Move ``last_accessed`` forward (never back) and commit; ``None`` for an unknown
        id (nothing is written: a deleted session is never recreated)."""
        return self._transaction("touch a session", self._touch, session_id, last_accessed)

    def _touch(
        self, connection: sqlite3.Connection, session_id: str, last_accessed: int
    ) -> Session | None:
        session = self._read(connection, session_id)
        if session is None or last_accessed <= session.last_accessed:
            return session
        touched = session.touched(last_accessed)
        connection.execute(self._s.update_value, (encode_session(touched), session_id))
        connection.execute(self._s.index_expires, (expires_column(touched), session_id))
        return touched

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        """Remove the row (a session or not) and its index entry; ``False`` if there was
        none."""
        return self._transaction("delete a session", self._remove, session_id)

    # -- atomic operations: each one transaction holding the write lock -----------------------

    @hookimpl
    def sessionkeeper_store_if(
        self, session: Session, if_version: int | None, now: int
    ) -> Session | None:
        """Store ``session`` with the live version + 1 if that version is ``if_version``
        (``None``: whatever it is); raise :class:`~sessionkeeper.VersionConflict` otherwise.
        An undecodable row counts as absent for an unconditional store (it is replaced) and
        raises :class:`~sessionkeeper.StorageError` for a conditional one."""
        return self._transaction("store", self._store_if, session, if_version, now)

    def _store_if(
        self, connection: sqlite3.Connection, session: Session, if_version: int | None, now: int
    ) -> Session:
        session_id = session.id
        row = connection.execute(self._select, (session_id,)).fetchone()
        current = 0
        if row is not None:
            try:
                stored = decode_row(session_id, row[0])
            except RowError as exc:
                if if_version is not None:
                    raise self._row_error(exc) from None
            else:
                if not stored.is_expired(now):
                    current = stored.version
        if if_version is not None and current != if_version:
            raise VersionConflict(session_id, if_version, current)
        version = current + 1
        if session.version != version:
            session = session.with_version(version)
        self._put(connection, session)
        return session

    @hookimpl
    def sessionkeeper_take(self, session_id: str, now: int) -> Session | None:
        """Remove the session and return it if it was live at ``now`` (an expired one is
        removed too): of concurrent takes, in any process, exactly one gets it."""
        return self._transaction("take a session", self._take, session_id, now)

    def _take(self, connection: sqlite3.Connection, session_id: str, now: int) -> Session | None:
        session = self._read(connection, session_id)
        if session is None:
            return None
        self._remove(connection, session_id)
        return None if session.is_expired(now) else session

    @hookimpl
    def sessionkeeper_rotate(self, session_id: str, new_id: str, now: int) -> Session | None:
        """Move the live session to ``new_id`` (version + 1, ``last_accessed`` now) in one
        transaction: no reader in any process sees both ids, nor neither. ``None`` when no
        live session has the id."""
        return self._transaction("rotate a session", self._rotate, session_id, new_id, now)

    def _rotate(
        self, connection: sqlite3.Connection, session_id: str, new_id: str, now: int
    ) -> Session | None:
        session = self._read(connection, session_id)
        if session is None or session.is_expired(now):
            return None
        rotated = session.replace(
            id=new_id,
            last_accessed=max(now, session.last_accessed),
            version=session.version + 1,
        )
        self._remove(connection, session_id)
        self._put(connection, rotated)
        return rotated

    @hookimpl
    def sessionkeeper_delete_owner(self, owner: str) -> int:
        """Delete every session of ``owner``, expired ones included, in one transaction
        through the owner index; return how many."""
        return self._transaction("delete an owner's sessions", self._delete_owner, owner)

    def _delete_owner(self, connection: sqlite3.Connection, owner: str) -> int:
        keys = [(row[0],) for row in connection.execute(self._s.owner_keys, (owner,))]
        if keys:
            connection.executemany(self._s.delete, keys)
            connection.executemany(self._s.index_delete, keys)
        return len(keys)

    # -- cleanup ------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        """Delete the sessions expired at ``now``, :data:`SWEEP_BATCH` per transaction, while
        holding the sweep lease; ``0`` at once when another process's sweep holds it (that
        sweep removes them).

        The candidates come from the index (the cost is what expired); each row is decoded
        before it is deleted, so that an index entry that does not match its row (a file
        written by something else) is corrected, never trusted to delete a live session.
        """
        if not self._open:
            self._refuse("clean up expired sessions")
        lease = Lease(self._s, self.options.sweep_lease)
        holder = self._transaction("claim the sweep lease", lease.claim)
        if holder is not None:
            log.debug("%s: %s is sweeping; this cleanup leaves it to it", self._where(), holder)
            return 0
        removed = 0
        try:
            while self._open:
                done, more = self._transaction("cleanup", self._sweep_batch, lease, now)
                removed += done
                if not more:
                    break
        finally:
            self._swept += removed
            if self._open:
                try:
                    self._transaction("release the sweep lease", lease.release)
                except StorageError:
                    log.warning(
                        "%s: releasing the sweep lease failed; it runs out by itself",
                        self._where(),
                        exc_info=True,
                    )
        return removed

    def _sweep_batch(
        self, connection: sqlite3.Connection, lease: Lease, now: int
    ) -> tuple[int, bool]:
        """One batch of the sweep (in its own transaction): ``(deleted, more to come)``."""
        if not lease.renew(connection):
            log.warning("%s: the sweep lease was taken over; this sweep stops", self._where())
            return 0, False
        s = self._s
        keys = [row[0] for row in connection.execute(s.expired, (now, SWEEP_BATCH))]
        removed = 0
        for key in keys:
            row = connection.execute(self._select, (key,)).fetchone()
            if row is None:
                connection.execute(s.index_delete, (key,))
                continue
            try:
                session = decode_row(key, row[0])
            except RowError:
                connection.execute(s.index_bad, (key,))
                continue
            if session.is_expired(now):
                connection.execute(s.delete, (key,))
                connection.execute(s.index_delete, (key,))
                removed += 1
            else:
                connection.execute(s.index_put, index_entry(session))
        return removed, len(keys) == SWEEP_BATCH

    # -- stats --------------------------------------------------------------------------------

    def _figures(self) -> dict[str, Any]:
        if not self._open:
            return {}
        s = self._s
        stored = int(self._query("stats", s.count_index, ())[0][0])
        undecodable = int(self._query("stats", s.count_undecodable, ())[0][0])
        lease = self._query("stats", s.meta_get, (s.sweep_key,))
        sweeping = None
        if lease and isinstance(lease[0][0], str) and len(lease[0][0].split()) == 4:
            sweeping = int(lease[0][0].split()[1]) if lease[0][0].split()[1].isdigit() else None
        return {
            "auto_save_ms": None,
            "stored": stored,
            "undecodable_rows": undecodable,
            "layout": LAYOUT,
            "index_rebuilds": self._index_rebuilds,
            "busy_failures": self._busy_failures,
            "swept": self._swept,
            "sweep_lease_holder_pid": sweeping,
            "connections": len(self._made),
        }


_open_stores: weakref.WeakSet[SharedStore] = weakref.WeakSet()
#: Connections a forked child inherited: kept referenced so that they are never closed there.
_inherited: list[sqlite3.Connection] = []


def _after_fork_in_child() -> None:
    for store in list(_open_stores):
        store._forked()
    _open_stores.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
