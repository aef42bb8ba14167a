"""The ``memory`` backend plugin: sessions in a ``dict``, shared by table name within a process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, NoReturn

import attrs

from sessionkeeper import (
    BackendContext,
    Capabilities,
    FieldError,
    Session,
    StorageError,
    hookimpl,
)

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
    takes the table's lock, which keeps the sessions and the expiry index consistent, so one
    table can be used from several threads and by several managers at once.
    """

    options_class: ClassVar[type[MemoryOptions]] = MemoryOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=False, shared=False, replicated=False, blocking=False, read_only_open=True
    )

    def __init__(self, options: MemoryOptions, context: BackendContext) -> None:
        self.options = options
        self.context = context
        self._table: Table | None = None
        self._put: Callable[[Session], Session | None]
        self._touch: Callable[[str, int], Session | None]
        self._delete: Callable[[str], Session | None]
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
        else:
            self._put = self._refuse_store
            self._touch = self._refuse_touch
            self._delete = self._refuse_delete

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
        """``table_name``, ``stored`` (expired included), ``index_buckets``, ``index_entries``
        and ``table_users`` (backends sharing the table)."""
        table = self._current
        return {"table_name": self.options.table_name, **table.stats(), "table_users": table.refs}
