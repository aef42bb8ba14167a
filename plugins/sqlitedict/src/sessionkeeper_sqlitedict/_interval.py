"""The interval owner (``auto_save > 0``): writes land in memory, and are committed each window.

A write changes the copy and records the change in a buffer of pending changes (id -> session,
or ``None`` for a delete; the last change per id wins), under the table's lock. A
:class:`~._flusher.Flusher` thread commits the buffer every ``auto_save`` ms in one transaction,
and so do ``close``, interpreter exit and :meth:`IntervalStore.flush`. A failed flush keeps the
changes pending (newer changes to the same ids win) and is retried at the next window: a crash
loses at most one window.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence

from sessionkeeper import Session
from sessionkeeper.backend import BackendContext, hookimpl

from ._backend import CLOSE_WAIT_S
from ._flusher import Flusher
from ._options import SqliteDictOptions
from ._owner import OwnerStore

__all__ = ["IntervalStore"]

log = logging.getLogger("sessionkeeper.sqlitedict")


class IntervalStore(OwnerStore):
    """The single owner in interval mode: acknowledged means in memory, committed within a
    window."""

    mode = "interval"
    #: Served from memory: the reads never lock across I/O (``fetch`` takes no lock; the others
    #: hold the table's lock, which no one holds across I/O here), and the writes change the copy
    #: and the buffer under the table's lock, which :meth:`_flush` releases before it commits
    #: (the batch is swapped out under the lock; the commit and fsync run outside it).
    #: ``iter_sessions`` copies the table under the lock, as ``list`` does; it is named so that
    #: the owner reads, which the manager may fall back on it for, run on the loop too.
    #: ``delete_owner``, ``store_many`` and ``cleanup_expired`` are memory too, but their cost
    #: grows with what they change, so they stay in a worker thread.
    inline_hooks = frozenset(
        "sessionkeeper_" + name
        for name in (
            "fetch",
            "touch",
            "store",
            "store_if",
            "delete",
            "take",
            "rotate",
            "list",
            "count",
            "list_owner",
            "count_owner",
            "iter_sessions",
        )
    )

    def __init__(self, options: SqliteDictOptions, context: BackendContext) -> None:
        super().__init__(options, context)
        #: Changes not yet committed: id -> session, ``None`` for a delete (under the lock).
        self._pending: dict[str, Session | None] = {}
        self._flush_lock = threading.Lock()  # one flush at a time
        self._flusher = Flusher(
            self._flush_in_background,
            options.auto_save / 1000,
            name=f"sessionkeeper-sqlitedict-flush-{self.table}",
        )
        self._logged_error: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def _started(self) -> None:
        self._flusher.start()

    def _stopping(self) -> BaseException | None:
        self._flusher.stop(CLOSE_WAIT_S)
        try:
            self._flush(wait=CLOSE_WAIT_S)
        except BaseException as exc:
            return exc
        return None

    def _drop_pending(self) -> int:
        lost = len(self._pending)
        self._pending = {}
        return lost

    def _pending_count(self) -> int:
        return len(self._pending)

    def _at_exit(self) -> None:
        try:
            self._flush(wait=CLOSE_WAIT_S)
        except Exception:
            log.exception("%s: committing buffered changes at exit failed", self._where())

    def _forked(self) -> None:
        super()._forked()
        self._flush_lock = threading.Lock()
        self._flusher.forget()

    # -- writes -------------------------------------------------------------------------------
    # Each checks _writable under the lock, which close() takes to stop writes: a write either
    # lands before the final commit or is refused, never buffered after it. ``acquire`` /
    # ``try`` / ``finally: release`` rather than ``with``: the same guarantee, a little faster.

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        """Insert or replace ``session`` in the copy and the buffer."""
        self._store((session,))

    @hookimpl
    def sessionkeeper_store_many(self, sessions: Sequence[Session]) -> int:
        """Insert or replace every session in the copy and the buffer (one flush commits
        them)."""
        self._store(sessions)
        return len(sessions)

    def _store(self, sessions: Sequence[Session]) -> None:
        put, undecodable = self._put, self._undecodable
        self._acquire()
        try:
            if not self._writable:
                self._refuse("store")
            pending = self._pending
            for session in sessions:
                put(session)
                if undecodable:
                    undecodable.pop(session.id, None)
                pending[session.id] = session
            self._writes += len(sessions)
        finally:
            self._release()

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        """Move ``last_accessed`` forward (never back); ``None`` for an unknown id."""
        self._acquire()
        try:
            if not self._writable:
                self._refuse("touch a session")
            current = self._get(session_id)
            if current is None:
                if self._undecodable:
                    self._raise_if_undecodable(session_id)
                return None
            touched = self._touch(session_id, last_accessed)
            if touched is not current:
                self._pending[session_id] = touched
                self._writes += 1
            return touched
        finally:
            self._release()

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        """Remove the session (or an undecodable row with this key); ``False`` if none."""
        self._acquire()
        try:
            if not self._writable:
                self._refuse("delete a session")
            session = self._remove(session_id)
            bad = self._undecodable.pop(session_id, None) if self._undecodable else None
            if session is None and bad is None:
                return False
            self._pending[session_id] = None
            self._writes += 1
            return True
        finally:
            self._release()

    # -- atomic operations (issue 14): the copy and the buffer change under one hold of the
    # lock, like every other write, so each is linearizable with every write of this process
    # (the only one that writes the file); the buffer reaches the file with the next window.

    @hookimpl
    def sessionkeeper_store_if(
        self, session: Session, if_version: int | None, now: int
    ) -> Session | None:
        """Store ``session`` with the next version if the live version is ``if_version``
        (``None``: whatever it is); raise :class:`~sessionkeeper.VersionConflict` otherwise."""
        session_id = session.id
        self._acquire()
        try:
            if not self._writable:
                self._refuse("store")
            undecodable = self._undecodable
            if undecodable:
                if if_version is not None:
                    error = self._undecodable_error(session_id)
                    if error is not None:
                        raise error
                stored = self._store_if(session, if_version, now)
                undecodable.pop(session_id, None)
            else:
                stored = self._store_if(session, if_version, now)
            self._pending[session_id] = stored
            self._writes += 1
            return stored
        finally:
            self._release()

    @hookimpl
    def sessionkeeper_take(self, session_id: str, now: int) -> Session | None:
        """Remove the session and return it if it was live at ``now`` (an expired one is
        removed too)."""
        self._acquire()
        try:
            if not self._writable:
                self._refuse("take a session")
            if self._get(session_id) is None:
                error = self._undecodable_error(session_id)
                if error is not None:
                    raise error
                return None
            taken = self._table.take_unlocked(session_id, now)
            self._pending[session_id] = None
            self._writes += 1
            return taken
        finally:
            self._release()

    @hookimpl
    def sessionkeeper_rotate(self, session_id: str, new_id: str, now: int) -> Session | None:
        """Move the live session to ``new_id`` (one more version, ``last_accessed = now``)."""
        self._acquire()
        try:
            if not self._writable:
                self._refuse("rotate a session")
            if self._get(session_id) is None:
                error = self._undecodable_error(session_id)
                if error is not None:
                    raise error
                return None
            rotated = self._table.rotate_unlocked(session_id, new_id, now)
            if rotated is None:
                return None
            if self._undecodable:
                self._undecodable.pop(new_id, None)
            pending = self._pending
            pending[session_id] = None
            pending[new_id] = rotated
            self._writes += 2
            return rotated
        finally:
            self._release()

    @hookimpl
    def sessionkeeper_delete_owner(self, owner: str) -> int:
        """Delete every session of ``owner`` (expired ones included) under one hold of the
        lock; return how many."""
        self._acquire()
        try:
            if not self._writable:
                self._refuse("delete an owner's sessions")
            ids = self._table.owners.get(owner)
            if not ids:
                return 0
            ids = set(ids)
            removed = self._table.delete_owner_unlocked(owner)
            pending = self._pending
            for session_id in ids:
                pending[session_id] = None
            self._writes += len(ids)
            return removed
        finally:
            self._release()

    def _swept(self, deleted: list[Session]) -> None:
        """Buffer the deletion of a cleanup batch."""
        pending = self._pending
        for session in deleted:
            pending[session.id] = None
        self._writes += len(deleted)

    # -- committing ---------------------------------------------------------------------------

    def flush(self) -> int:
        """Commit the buffered changes now; return how many were committed.

        Raises :class:`~sessionkeeper.StorageError` when the commit fails (the changes stay
        buffered).
        """
        if not self._writable:
            self._refuse("flush")
        try:
            return self._flush()
        except sqlite3.Error as exc:
            raise self._error("commit", exc) from exc

    def _flush(self, wait: float = -1) -> int:
        """Commit the pending changes in one transaction; return how many.

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
            try:
                self._writer.commit(batch, wait)
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

    def _flush_in_background(self) -> None:
        """The flusher's call: flush, and log a failure once per distinct error (the changes
        stay pending and are retried at the next window)."""
        try:
            self._flush()
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message != self._logged_error:
                self._logged_error = message
                log.error(
                    "%s: committing %d buffered change(s) failed, will retry: %s",
                    self._where(),
                    len(self._pending),
                    message,
                )
