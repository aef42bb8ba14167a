"""The single owner's engine base: the file locked by one process, every session copied in memory.

Opening for writing takes the file's owner lock (:mod:`._lock`), opens the file through a
:class:`~._writer.Writer` (journal mode and ``synchronous`` from the options, the table created
if needed) and loads every row into a :class:`~sessionkeeper._table.SessionTable`: the copy, its
expiry index and the lock that keeps them one. From then on reads never touch SQLite: ``fetch``
is one ``dict.get``. Every write changes the copy and the file, under the table's lock; *how* it
reaches the file is the subclass's: :class:`~._durable.DurableStore` commits before returning,
:class:`~._interval.IntervalStore` buffers and commits each ``auto_save`` window.

This module holds what both share: open, load, close, the forked child's refusal, the reads
(``fetch``, ``list``, ``count``, ``iter_sessions``), ``cleanup_expired`` (the table's sweep, each
batch handed to the subclass's :meth:`OwnerStore._swept` with the lock held), and the owner's
``stats`` figures; and the process-wide registry of open owners that commits their buffers at
interpreter exit and disarms them in a forked child.

Rows that do not decode are kept as they are, out of the copy: fetching one raises
:class:`~sessionkeeper.StorageError` naming the file, the table and the key (never "not found");
storing or deleting that id replaces or removes the row; ``sessionkeeper check --repair``
quarantines them.
"""

from __future__ import annotations

import atexit
import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from sessionkeeper import Session, StorageError
from sessionkeeper._table import SessionTable
from sessionkeeper.backend import BackendContext, hookimpl

from ._backend import CLOSE_WAIT_S, SqliteDictBackend
from ._lock import OwnerLock
from ._options import SqliteDictOptions
from ._sql import RowError, decode_row
from ._writer import Writer

__all__ = ["OwnerStore"]

log = logging.getLogger("sessionkeeper.sqlitedict")


class OwnerStore(SqliteDictBackend):
    """The table owned by this process, served from a :class:`SessionTable` copy.

    Subclasses implement the writes (``store``, ``store_many``, ``touch``, ``delete``) and
    :meth:`_swept`, and may start and stop work around the open file (:meth:`_started`,
    :meth:`_stopping`).
    """

    def __init__(self, options: SqliteDictOptions, context: BackendContext) -> None:
        super().__init__(options, context)
        self._table = SessionTable()
        self._bind()
        #: Rows that did not decode: key -> why (kept on disk, out of the copy).
        self._undecodable: dict[object, str] = {}
        self._writer = Writer(self._sql, self._where(), self._refuse)
        self._owner: OwnerLock | None = None
        #: False until open, and from close (or a fork) on: every write checks it under _lock.
        self._writable = False
        self._pid = os.getpid()
        # Figures for stats().
        self._writes = 0  # changes made since open (each store/touch/delete that changed a row)
        self._committed = 0  # of those, how many are committed
        self._commits = 0  # transactions committed (a durable group, a batch, a flush)
        self._failed_commits = 0  # transactions that failed to commit (nothing acknowledged)
        self._flushes = 0
        self._flush_failures = 0
        self._last_error: str | None = None
        self._load_seconds: float | None = None

    def _bind(self) -> None:
        """Bind the table's lock and write primitives (once, and again after a fork gave the
        table fresh locks): the hot paths then cost one attribute load per call they make."""
        table = self._table
        #: The table's lock, which every write holds: the copy, the index, the subclass's state.
        self._lock = table.lock
        self._acquire = table.lock.acquire
        self._release = table.lock.release
        self._get: Callable[[str], Session | None] = table.sessions.get
        self._put = table.put_unlocked
        self._touch = table.touch_unlocked
        self._remove = table.delete_unlocked
        self._store_if = table.store_if_unlocked

    # -- lifecycle ----------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_open(self) -> None:
        """Take the file's owner lock, open the file and load every row into the copy."""
        if self._open:
            return
        path = self.path
        self._make_directory()
        owner = OwnerLock(path, self.table, backend=self.context.name, create=True)
        owner.acquire()  # creates the file (mode 0600) if needed
        try:
            try:
                columns = self._writer.open(path, self.options)
            except sqlite3.Error as exc:
                raise self._error("opening", exc) from exc
            self._check_columns(columns)
            self._load()
        except BaseException:
            self._writer.close(CLOSE_WAIT_S)
            self._table.clear()
            self._undecodable.clear()
            owner.release()
            raise
        self._owner = owner
        self._file_identity = owner.identity
        self._warn_of_hard_links()
        self._pid = os.getpid()
        _open_owners.add(self)
        self._started()
        self._writable = True
        self._open = True

    def _started(self) -> None:
        """Called once the file is open and loaded (the interval store starts its flusher)."""

    def _load(self) -> None:
        """Read every row into the copy; keep the ones that do not decode aside."""
        began = time.perf_counter()
        undecodable = self._undecodable

        def decoded() -> Iterator[Session]:
            for key, value in self._writer.rows():
                try:
                    yield decode_row(key, value)
                except RowError as exc:
                    undecodable[key] = exc.reason

        try:
            self._table.load(decoded())
        except sqlite3.Error as exc:
            raise self._error(f"loading the sessions ({len(self._table)} read)", exc) from exc
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
        failure = self._stopping() if self._pid == os.getpid() else None
        _open_owners.discard(self)
        self._writer.close(CLOSE_WAIT_S)
        if self._owner is not None:
            self._owner.release()
            self._owner = None
        with self._lock:
            lost = self._drop_pending()
            self._table.clear_unlocked()
            self._undecodable.clear()
        if failure is not None:
            raise StorageError(
                self.context.name,
                f"{self._where()}: {lost} buffered change(s) could not be committed at close: "
                f"{type(failure).__name__}: {failure}",
            ) from failure

    def _stopping(self) -> BaseException | None:
        """Called by ``close`` once writes are refused, in the process that opened the store:
        commit what is buffered; return what made that fail (``None``: nothing did)."""
        return None

    def _drop_pending(self) -> int:
        """Forget the buffered changes (with the lock held, at close); return how many."""
        return 0

    def _at_exit(self) -> None:
        """Called at interpreter exit while the store is open (commit what is buffered)."""

    def _forked(self) -> None:
        """In a forked child: the copy and the file belong to the parent; refuse writes."""
        # A parent thread may have held the locks at the fork: the child gets fresh ones.
        self._table.reset_locks()
        self._bind()
        self._writer.abandon()
        self._writable = False
        self._refusal = (
            f"it was opened by process {self._pid} and this is a forked child "
            f"({os.getpid()}); open the manager after forking"
        )
        self._owner = None

    def flush(self) -> int:
        """Nothing is ever buffered here: ``0`` (refused once the store cannot write)."""
        if not self._writable:
            self._refuse("flush")
        return 0

    # -- reads --------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_fetch(self, session_id: str) -> Session | None:
        """The stored session or ``None``: one ``dict.get`` on the copy."""
        session = self._get(session_id)
        if session is None and self._undecodable:
            self._raise_if_undecodable(session_id)
        return session

    def _raise_if_undecodable(self, session_id: str) -> None:
        reason = self._undecodable.get(session_id)
        if reason is not None:
            raise self._row_error(RowError(session_id, reason))

    @hookimpl
    def sessionkeeper_list(self, now: int) -> list[str]:
        """The ids of the sessions live at ``now`` (undecodable rows are not sessions)."""
        return self._table.list_live(now)

    @hookimpl
    def sessionkeeper_iter_sessions(self) -> Iterator[Session]:
        """Every stored session, expired ones included, from a snapshot of the copy taken on
        first use; then, when rows did not decode, :class:`~sessionkeeper.StorageError`
        naming the first (they are never skipped silently)."""
        yield from self._table.snapshot()
        if self._undecodable:
            key, reason = next(iter(self._undecodable.items()))
            raise self._left_out(len(self._undecodable), RowError(key, reason))

    @hookimpl
    def sessionkeeper_count(self, now: int) -> int:
        """Sessions live at ``now``: the stored ones less the expired ones the index finds."""
        return self._table.count_live(now)

    @hookimpl
    def sessionkeeper_list_owner(self, owner: str, now: int) -> list[str]:
        """The ids of ``owner``'s live sessions, from the copy's owner index (cost: what the
        owner holds)."""
        return self._table.list_owner(owner, now)

    @hookimpl
    def sessionkeeper_count_owner(self, owner: str, now: int) -> int:
        """How many of ``owner``'s sessions are live, from the owner index."""
        return self._table.count_owner(owner, now)

    def _undecodable_error(self, session_id: str) -> StorageError | None:
        """The :class:`~sessionkeeper.StorageError` an operation that depends on what the row
        of ``session_id`` holds (a conditional store, a take, a rotate) raises when that row
        does not decode; ``None`` when it does (or there is none). An unconditional store
        does not ask: it replaces such a row, which counts as absent (version 0) there."""
        reason = self._undecodable.get(session_id) if self._undecodable else None
        return None if reason is None else self._row_error(RowError(session_id, reason))

    # -- cleanup ------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        """Delete the sessions expired at ``now``, in batches of at most ``ExpiryIndex.BATCH``.

        The cost is the number expired (the index), not the number stored. Each batch leaves
        the copy and reaches the file (:meth:`_swept`) under one hold of the lock, which is
        released between batches, so writes wait for one batch at most. A store closed
        meanwhile ends the sweep (the rest waits for the next cleanup).
        """
        if not self._writable:
            self._refuse("clean up expired sessions")
        return self._table.sweep(now, self._swept, stop=self._closed_meanwhile)

    def _closed_meanwhile(self) -> bool:
        return not self._writable

    def _swept(self, deleted: list[Session]) -> None:
        """Delete ``deleted`` (gone from the copy) from the file, with the lock held; raise to
        put them back in the copy."""
        raise NotImplementedError

    # -- stats --------------------------------------------------------------------------------

    def _figures(self) -> dict[str, Any]:
        with self._lock:
            figures: dict[str, Any] = {
                "stored": len(self._table),
                "undecodable_rows": len(self._undecodable),
                "pending_changes": self._pending_count(),
                "writes": self._writes,
                "committed_writes": self._committed,
                "commits": self._commits,
                "failed_commits": self._failed_commits,
                "index_entries": self._table.index_entries(),
            }
        figures.update(
            flushes=self._flushes,
            flush_failures=self._flush_failures,
            last_error=self._last_error,
            load_seconds=None if self._load_seconds is None else round(self._load_seconds, 3),
        )
        return figures

    def _pending_count(self) -> int:
        """Changes written to the copy and not yet to the file (with the lock held)."""
        return 0


_open_owners: weakref.WeakSet[OwnerStore] = weakref.WeakSet()


@atexit.register
def _at_exit() -> None:
    """Commit every open owner's buffered changes at interpreter exit (the manager then closes)."""
    for store in list(_open_owners):
        if store._open and store._pid == os.getpid():
            store._at_exit()


def _after_fork_in_child() -> None:
    for store in list(_open_owners):
        store._forked()
    _open_owners.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
