"""The durable owner (``auto_save = 0``): every write committed before it returns.

A store, touch or delete returns only once the transaction holding its change has committed
(with ``synchronous = "FULL"``, fsynced). Concurrent writers share transactions through
:class:`~._group.GroupCommit`; this module holds what a group *is*: :class:`_Write` (the request:
which change, and how it turned out) and :meth:`DurableStore._commit_group`, which applies a
group to the copy in order, commits it in one transaction, and puts the copy back when that
commit fails, so that nothing is acknowledged that is not on disk.

On the async manager's path the writes are native (``sessionkeeper_async_*``): a task's write
joins the pending group from the event loop and awaits the group's commit, holding no thread
(:meth:`~._group.GroupCommit.wait`), so one commit serves every task that wrote meanwhile, not
only as many as there are worker threads. Nothing is bound to a loop (each wait is a future of
the running loop), so the manager runs on any loop, and there is no ``sessionkeeper_async_close``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Sequence
from typing import Any, Final, cast

from sessionkeeper import Session, SessionKeeperError, StorageError, VersionConflict
from sessionkeeper.backend import BackendContext, hookimpl

from ._backend import CLOSE_WAIT_S
from ._group import GroupCommit, Request
from ._options import SqliteDictOptions
from ._owner import OwnerStore
from ._sql import RowError

__all__ = ["DurableStore"]

#: The kinds of durable write (:class:`_Write`), and what a refusal calls each.
_STORE: Final = 0
_TOUCH: Final = 1
_DELETE: Final = 2
_STORE_IF: Final = 3
_TAKE: Final = 4
_ROTATE: Final = 5
_DELETE_OWNER: Final = 6
_OPERATIONS: Final = (
    "store",
    "touch a session",
    "delete a session",
    "store",
    "take a session",
    "rotate a session",
    "delete an owner's sessions",
)


class _Write(Request):
    """A durable write on its way to a commit, and how it turned out.

    ``session_id`` is the id written (the owner, for ``_DELETE_OWNER``); ``last_accessed`` is
    a touch's instant, or the clock (``now``) of an atomic operation; ``if_version`` a
    conditional store's condition; ``new_id`` a rotation's target. The group's leader fills in
    ``result``, or ``error`` (and ``cause``), when it settles it.
    """

    __slots__ = (
        "cause",
        "error",
        "if_version",
        "kind",
        "last_accessed",
        "new_id",
        "result",
        "session",
        "session_id",
    )

    def __init__(
        self,
        kind: int,
        session_id: str,
        session: Session | None = None,
        last_accessed: int = 0,
        if_version: int | None = None,
        new_id: str = "",
    ) -> None:
        super().__init__()
        self.kind = kind
        self.session_id = session_id
        self.session = session
        self.last_accessed = last_accessed
        self.if_version = if_version
        self.new_id = new_id
        self.result: Session | bool | int | None = None
        self.error: SessionKeeperError | None = None
        self.cause: BaseException | None = None


class DurableStore(OwnerStore):
    """The single owner in durable mode: acknowledged means committed."""

    mode = "durable"
    #: Only ``fetch`` (one ``dict.get``, no lock): every write holds the table's lock across its
    #: commit and fsync, and ``list``, ``count`` and the owner reads take that lock, so they may
    #: wait on a commit and run in a worker thread. The writes have native twins instead.
    inline_hooks = frozenset({"sessionkeeper_fetch"})
    durable = True

    def __init__(self, options: SqliteDictOptions, context: BackendContext) -> None:
        super().__init__(options, context)
        self._group_commit: GroupCommit[_Write] = GroupCommit(
            self._lock, self._commit_group, f"sessionkeeper-sqlitedict-commit-{self.table}"
        )

    def _forked(self) -> None:
        super()._forked()
        self._group_commit.reset(self._lock)  # the parent's writers do not exist here

    def _stopping(self) -> BaseException | None:
        """At close, once writes are refused: end the committer thread (the groups it was
        woken for are refused first), so that a closed store leaves no thread behind."""
        self._group_commit.stop(CLOSE_WAIT_S)
        return super()._stopping()

    # -- writes -------------------------------------------------------------------------------

    def _durable(self, write: _Write) -> Session | bool | int | None:
        """Commit ``write`` (alone or in a group); return its result or raise its error.

        Each group is applied and committed under the table's lock, like every other write, so
        what holds that lock (``close``, ``list``, ``count``, ``store_many``, a cleanup step)
        sees the copy as it is committed (``fetch``, which takes no lock, may see the changes
        of the group being committed, as it could see the one write being committed before).
        """
        self._group_commit.submit(write)
        if write.error is not None:
            raise write.error from write.cause
        return write.result

    async def _adurable(self, write: _Write) -> Any:
        """:meth:`_durable` awaited: ``write`` joins the next group from the event loop, and
        the task waits for its commit holding no thread."""
        await self._group_commit.wait(write)
        if write.error is not None:
            raise write.error from write.cause
        return write.result

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        """Insert or replace ``session`` in the copy and commit it."""
        self._durable(_Write(_STORE, session.id, session))

    @hookimpl
    def sessionkeeper_store_many(self, sessions: Sequence[Session]) -> int:
        """Insert or replace every session; commit them in one transaction (all or none, as
        one group of :meth:`_commit_group`)."""
        batch = [_Write(_STORE, session.id, session) for session in sessions]
        with self._lock:
            self._commit_group(batch)
        for write in batch:
            if write.error is not None:
                raise write.error from write.cause
        return len(sessions)

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        """Move ``last_accessed`` forward (never back) and commit it; ``None`` for an unknown
        id."""
        result = self._durable(_Write(_TOUCH, session_id, last_accessed=last_accessed))
        return cast("Session | None", result)

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        """Remove the session (or an undecodable row with this key) and commit; ``False`` if
        there was none."""
        return self._durable(_Write(_DELETE, session_id)) is True

    # -- atomic operations (issue 14): each is one write of a group, applied to the copy by
    # the leader under the table's lock and acknowledged once its transaction committed.

    @hookimpl
    def sessionkeeper_store_if(
        self, session: Session, if_version: int | None, now: int
    ) -> Session | None:
        """Store ``session`` with the next version if the live version is ``if_version``
        (``None``: whatever it is), and commit; raise :class:`~sessionkeeper.VersionConflict`
        otherwise."""
        write = _Write(_STORE_IF, session.id, session, now, if_version)
        return cast("Session", self._durable(write))

    @hookimpl
    def sessionkeeper_take(self, session_id: str, now: int) -> Session | None:
        """Remove the session and commit; return it if it was live at ``now``."""
        return cast("Session | None", self._durable(_Write(_TAKE, session_id, last_accessed=now)))

    @hookimpl
    def sessionkeeper_rotate(self, session_id: str, new_id: str, now: int) -> Session | None:
        """Move the live session to ``new_id`` and commit; ``None`` when none is live."""
        write = _Write(_ROTATE, session_id, last_accessed=now, new_id=new_id)
        return cast("Session | None", self._durable(write))

    @hookimpl
    def sessionkeeper_delete_owner(self, owner: str) -> int:
        """Delete every session of ``owner`` (expired ones included) in one transaction;
        return how many."""
        return cast("int", self._durable(_Write(_DELETE_OWNER, owner)))

    # -- native twins for the async manager: the same writes, awaited (see the module) ---------

    @hookimpl
    def sessionkeeper_async_fetch(self, session_id: str) -> Awaitable[Session | None]:
        """:meth:`sessionkeeper_fetch` as an awaitable (the operations that read before they
        write are native only when every hook they call has a twin)."""
        return self._afetch(session_id)

    async def _afetch(self, session_id: str) -> Session | None:
        return self.sessionkeeper_fetch(session_id)

    @hookimpl
    def sessionkeeper_async_store(self, session: Session) -> Awaitable[None]:
        """:meth:`sessionkeeper_store`, awaited in a group commit."""
        return self._adurable(_Write(_STORE, session.id, session))

    @hookimpl
    def sessionkeeper_async_touch(
        self, session_id: str, last_accessed: int
    ) -> Awaitable[Session | None]:
        """:meth:`sessionkeeper_touch`, awaited in a group commit."""
        write = _Write(_TOUCH, session_id, last_accessed=last_accessed)
        return self._adurable(write)

    @hookimpl
    def sessionkeeper_async_delete(self, session_id: str) -> Awaitable[bool | None]:
        """:meth:`sessionkeeper_delete`, awaited in a group commit."""
        return self._adurable(_Write(_DELETE, session_id))

    @hookimpl
    def sessionkeeper_async_store_if(
        self, session: Session, if_version: int | None, now: int
    ) -> Awaitable[Session | None]:
        """:meth:`sessionkeeper_store_if`, awaited in a group commit."""
        write = _Write(_STORE_IF, session.id, session, now, if_version)
        return self._adurable(write)

    @hookimpl
    def sessionkeeper_async_take(self, session_id: str, now: int) -> Awaitable[Session | None]:
        """:meth:`sessionkeeper_take`, awaited in a group commit."""
        write = _Write(_TAKE, session_id, last_accessed=now)
        return self._adurable(write)

    @hookimpl
    def sessionkeeper_async_rotate(
        self, session_id: str, new_id: str, now: int
    ) -> Awaitable[Session | None]:
        """:meth:`sessionkeeper_rotate`, awaited in a group commit."""
        write = _Write(_ROTATE, session_id, last_accessed=now, new_id=new_id)
        return self._adurable(write)

    @hookimpl
    def sessionkeeper_async_delete_owner(self, owner: str) -> Awaitable[int | None]:
        """:meth:`sessionkeeper_delete_owner`, awaited in a group commit."""
        return self._adurable(_Write(_DELETE_OWNER, owner))

    def _commit_group(self, batch: list[_Write]) -> None:
        """Apply ``batch`` to the copy in order, then commit its changes in one transaction
        (called with the lock held: by the group's leader, or by ``store_many``).

        Each write sees the copy as the writes before it left it, as if they had run one after
        another, and the transaction holds the last change of each id. A write that changes
        nothing (a touch that would go backwards, a delete of an unknown id) does not depend on
        the commit, unless an earlier write of the group changed its id. When the commit fails,
        the writes are undone in reverse order (the copy is as before the group, as the file
        is) and each write that depended on it gets a :class:`~sessionkeeper.StorageError`;
        an error other than SQLite's is also raised in the leader.
        """
        # Checked under the lock, which close() takes to stop writes: a group is committed
        # before the backend closes, or refused whole.
        if not self._writable:
            for write in batch:
                write.error = self._refused(_OPERATIONS[write.kind])
            return
        undecodable = self._undecodable
        put, remove, touch, get = self._put, self._remove, self._touch, self._get
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
                    previous = put(session)
                    bad = undecodable.pop(key, None) if undecodable else None
                    undo.append((key, previous, bad))
                    changes[key] = session
                    depends = True
                elif kind == _TOUCH:
                    current = get(key)
                    if current is None:
                        reason = undecodable.get(key) if undecodable else None
                        if reason is not None:
                            write.error = self._row_error(RowError(key, reason))
                    else:
                        touched = write.result = touch(key, write.last_accessed)
                        if touched is not current:
                            undo.append((key, current, None))
                            changes[key] = touched
                            depends = True
                elif kind == _DELETE:
                    current = remove(key)
                    bad = undecodable.pop(key, None) if undecodable else None
                    if current is None and bad is None:
                        write.result = False
                    else:
                        undo.append((key, current, bad))
                        changes[key] = None
                        write.result = True
                        depends = True
                else:
                    depends = self._apply_atomic(write, undo, changes) or depends
                if depends:
                    held.append(write)
            if not changes:
                return
            committing = True
            self._writer.commit(changes)
        except BaseException as exc:
            for key, previous, bad in reversed(undo):
                if previous is None:
                    remove(key)
                else:
                    put(previous)
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

    def _apply_atomic(
        self,
        write: _Write,
        undo: list[tuple[str, Session | None, str | None]],
        changes: dict[str, Session | None],
    ) -> bool:
        """Apply an atomic ``write`` of a group to the copy (lock held), recording its undo and
        its changes; return whether its outcome depends on the transaction (it changed the
        copy). A refusal (a conflict, an undecodable row) is settled here and changes nothing.
        """
        key = write.session_id
        now = write.last_accessed
        kind = write.kind
        table = self._table
        undecodable = self._undecodable
        if kind == _STORE_IF:
            session = write.session
            assert session is not None
            if write.if_version is not None:
                error = self._undecodable_error(key)
                if error is not None:
                    write.error = error
                    return False
            previous = self._get(key)
            try:
                stored = self._store_if(session, write.if_version, now)
            except VersionConflict as exc:
                write.error = exc
                return False
            bad = undecodable.pop(key, None) if undecodable else None
            undo.append((key, previous, bad))
            changes[key] = write.result = stored
            return True
        if kind == _DELETE_OWNER:
            ids = table.owners.get(key)
            if not ids:
                write.result = 0
                return False
            removed = 0
            for session_id in list(ids):  # each removal shrinks ``ids``
                previous = self._remove(session_id)
                undo.append((session_id, previous, None))
                changes[session_id] = None
                removed += 1
            write.result = removed
            return True
        current = self._get(key)
        if current is None:
            write.error = self._undecodable_error(key)
            write.result = None
            return False
        if kind == _TAKE:
            self._remove(key)
            undo.append((key, current, None))
            changes[key] = None
            write.result = None if current.is_expired(now) else current
            return True
        rotated = table.rotate_unlocked(key, write.new_id, now)
        if rotated is None:  # expired: nothing moves
            write.result = None
            return False
        new_id = write.new_id
        undo.append((key, current, None))
        bad = undecodable.pop(new_id, None) if undecodable else None
        undo.append((new_id, None, bad))
        changes[key] = None
        changes[new_id] = write.result = rotated
        return True

    def _commit_error(self, exc: BaseException) -> StorageError:
        """The error a writer of a group whose commit failed with ``exc`` raises (one each)."""
        if isinstance(exc, StorageError):  # a refusal: the connection is gone
            return StorageError(exc.backend, str(exc).removeprefix(f"{exc.backend} backend: "))
        return self._error("commit", exc)

    # -- cleanup ------------------------------------------------------------------------------

    def _swept(self, deleted: list[Session]) -> None:
        """Delete a cleanup batch from the file in one transaction (the table puts the batch
        back in the copy when this raises)."""
        try:
            self._writer.commit({session.id: None for session in deleted})
        except BaseException as exc:
            self._failed_commits += 1
            if isinstance(exc, sqlite3.Error):
                self._last_error = f"{type(exc).__name__}: {exc}"
                raise self._error("cleanup commit", exc) from exc
            raise
        self._writes += len(deleted)
        self._committed += len(deleted)
        self._commits += 1
