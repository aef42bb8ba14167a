"""The ``memory`` backend plugin: sessions in a ``dict``, shared by table name within a process."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, NoReturn

import attrs

from sessionkeeper import Session, StorageError
from sessionkeeper.backend import BackendContext, Capabilities, FieldError, hookimpl

from ._table import Table, acquire, release

__all__ = ["MemoryBackend", "MemoryOptions"]


def _non_blank(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, f"must be a non-empty name, got {value!r}")


@attrs.frozen(kw_only=True)
class MemoryOptions:
    """``backend_opts`` of the ``memory`` backend.

    :param table_name: the in-process table to use. Managers in one process that name the same
        table share its sessions; the table is dropped when the last of them closes.
    """

    table_name: str = attrs.field(
        default="sessions", validator=[attrs.validators.instance_of(str), _non_blank]
    )


class MemoryBackend:
    """Sessions held in this process, in a ``dict`` (the ETS of the Erlang original).

    Fast and lost when the process exits. Stored :class:`~sessionkeeper.Session` objects are
    immutable, so ``fetch`` hands back the stored object itself. Reads take no lock; every write
    takes the table's lock, which keeps the sessions, the expiry index and the owner index
    consistent, so one table can be used from several threads and by several managers at once.

    ``atomic``: the conditional store, ``take``, ``rotate`` and ``delete_owner`` each run whole
    under the table's lock, so they are linearizable across every thread and every manager of
    the process (there is no other process: the table lives in this one).
    """

    options_class: ClassVar[type[MemoryOptions]] = MemoryOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=False,
        shared=False,
        replicated=False,
        blocking=False,
        read_only_open=True,
        atomic=True,
    )

    def __init__(self, options: MemoryOptions, context: BackendContext) -> None:
        self.options = options
        self.context = context
        self._table: Table | None = None
        self._put: Callable[[Session], Session | None]
        self._touch: Callable[[str, int], Session | None]
        self._delete: Callable[[str], Session | None]
        self._store_if: Callable[[Session, int | None, int], Session]
        self._take: Callable[[str, int], Session | None]
        self._rotate: Callable[[str, str, int], Session | None]
        self._delete_owner: Callable[[str], int]
        self._detach()

    def __repr__(self) -> str:
        state = "open" if self._table is not None else "closed"
        return f"<MemoryBackend table={self.options.table_name!r} {state}>"

    def _detach(self) -> None:
        # Closed (or not yet open): reads see an empty stand-in table, writes are refused.
        self._bind(Table(self.options.table_name), writable=False)

    def _bind(self, table: Table, *, writable: bool) -> None:
        # Copied onto the instance so that the hot paths cost one attribute load each; a
        # backend that may not write gets refusals in place of the table's writes.
        self._current = table
        self._sessions = table.sessions
        self._writable = writable
        if writable:
            self._put = table.put
            self._touch = table.touch
            self._delete = table.delete
            self._store_if = table.store_if
            self._take = table.take
            self._rotate = table.rotate
            self._delete_owner = table.delete_owner
        else:
            self._put = self._refuse_store
            self._touch = self._refuse_touch
            self._delete = self._refuse_delete
            self._store_if = self._refuse_store_if
            self._take = self._refuse_take
            self._rotate = self._refuse_rotate
            self._delete_owner = self._refuse_delete_owner

    def _refuse(self, operation: str) -> NoReturn:
        reason = "the backend is not open" if self._table is None else "it was opened read-only"
        raise StorageError(
            self.context.name,
            f"cannot {operation} in table {self.options.table_name!r}: {reason}",
        )

    def _refuse_store(self, _session: Session) -> NoReturn:
        self._refuse("store")

    def _refuse_touch(self, _session_id: str, _last_accessed: int) -> NoReturn:
        self._refuse("touch a session")

    def _refuse_delete(self, _session_id: str) -> NoReturn:
        self._refuse("delete a session")

    def _refuse_store_if(self, _session: Session, _if_version: int | None, _now: int) -> NoReturn:
        self._refuse("store")

    def _refuse_take(self, _session_id: str, _now: int) -> NoReturn:
        self._refuse("take a session")

    def _refuse_rotate(self, _session_id: str, _new_id: str, _now: int) -> NoReturn:
        self._refuse("rotate a session")

    def _refuse_delete_owner(self, _owner: str) -> NoReturn:
        self._refuse("delete an owner's sessions")

    # -- lifecycle --------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_open(self) -> None:
        """Attach to the shared table named ``table_name`` (created if no one uses it)."""
        if self._table is not None:
            return
        self._table = acquire(self.options.table_name)
        self._bind(self._table, writable=not self.context.read_only)

    @hookimpl
    def sessionkeeper_close(self) -> None:
        """Detach from the table; the last backend to detach drops it. Idempotent."""
        table = self._table
        if table is None:
            return
        self._table = None
        self._detach()
        release(table)

    @hookimpl
    def sessionkeeper_identity(self) -> str:
        """``memory:<pid>:<table_name>``: the named table of this process. Two managers naming
        one table in one process share it, so they have one identity; a forked child's tables
        are its own copies, and its pid differs."""
        return f"memory:{os.getpid()}:{self.options.table_name}"

    # -- the hot paths ----------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_fetch(self, session_id: str) -> Session | None:
        """The stored session (expired or not), or ``None``: one ``dict.get``, no lock."""
        return self._sessions.get(session_id)

    # The writes are the table's own methods (bound by _bind): each takes the table's lock and
    # keeps the expiry index in step with the dict.

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        """Insert or replace ``session``; index it when its deadline moved to an earlier bucket."""
        self._put(session)

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        """Move ``last_accessed`` forward (never back); ``None`` for an unknown id.

        A later deadline needs no index change: the entry in an earlier bucket is re-filed when
        a cleanup reaches it.
        """
        return self._touch(session_id, last_accessed)

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        """Remove the session; ``False`` when there was none. The table's index compacts
        itself once its stale entries outnumber the stored sessions (issue 12, item 7)."""
        return self._delete(session_id) is not None

    # -- the atomic operations (each under the table's lock) ------------------------------------

    @hookimpl
    def sessionkeeper_store_if(self, session: Session, if_version: int | None, now: int) -> Session:
        """Store ``session`` with the next version if the stored live version is ``if_version``
        (any, when ``None``; 0: none live) and return it as stored; raise
        :class:`~sessionkeeper.VersionConflict` else."""
        return self._store_if(session, if_version, now)

    @hookimpl
    def sessionkeeper_take(self, session_id: str, now: int) -> Session | None:
        """Remove the session and return it if it was live at ``now`` (an expired one is
        removed, and ``None`` returned)."""
        return self._take(session_id, now)

    @hookimpl
    def sessionkeeper_rotate(self, session_id: str, new_id: str, now: int) -> Session | None:
        """Move the live session to ``new_id`` (version + 1, ``last_accessed`` = ``now``);
        ``None`` when none is live."""
        return self._rotate(session_id, new_id, now)

    @hookimpl
    def sessionkeeper_list_owner(self, owner: str, now: int) -> list[str]:
        """The ids of ``owner``'s sessions live at ``now`` (cost: what the owner holds)."""
        return self._current.list_owner(owner, now)

    @hookimpl
    def sessionkeeper_count_owner(self, owner: str, now: int) -> int:
        """How many of ``owner``'s sessions are live at ``now`` (cost: what the owner holds)."""
        return self._current.count_owner(owner, now)

    @hookimpl
    def sessionkeeper_delete_owner(self, owner: str) -> int:
        """Delete every session of ``owner``, expired ones included; return how many."""
        return self._delete_owner(owner)

    # -- the rest ---------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_list(self, now: int) -> list[str]:
        """The ids of the sessions live at ``now``."""
        return self._current.list_live(now)

    @hookimpl
    def sessionkeeper_count(self, now: int) -> int:
        """Sessions live at ``now``: those stored less the expired ones the index finds."""
        return self._current.count_live(now)

    @hookimpl
    def sessionkeeper_iter_sessions(self) -> Iterator[Session]:
        """Every stored session, expired ones included, from a snapshot taken on first use."""
        return self._current.iter()

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        """Delete the sessions expired at ``now`` (cost: the number expired); return how many."""
        if not self._writable:
            self._refuse("clean up expired sessions")
        return self._current.sweep(now)

    @hookimpl
    def sessionkeeper_stats(self) -> dict[str, Any]:
        """``table_name``, ``stored`` (expired included), ``index_buckets``, ``index_entries``,
        ``owners`` (owners with a stored session) and ``table_users`` (backends sharing the
        table)."""
        table = self._current
        return {"table_name": self.options.table_name, **table.stats(), "table_users": table.refs}
