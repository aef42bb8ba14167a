"""The shared in-process tables.

A :class:`Table` is what a ``table_name`` names: the ``dict`` of sessions plus the core's
:class:`~sessionkeeper.ExpiryIndex` (lazy deadline buckets, O(expired) cleanup; its docstring
explains it). The tables live in a module-level registry, reference-counted by :func:`acquire` and
:func:`release`, so that several managers in one process that name the same table share it (like
a named ETS table), and the table is dropped when the last of them closes.

A sweep works in steps of :data:`BATCH` index entries, releasing the lock between steps, so a
large cleanup does not hold up stores for more than a fraction of a millisecond at a time.
"""

from __future__ import annotations

import threading
from typing import Final

from sessionkeeper import ExpiryIndex, Session

__all__ = ["BATCH", "BUCKET_MS", "Table", "acquire", "release"]

#: Width of one expiry bucket, in ms.
BUCKET_MS: Final = ExpiryIndex.BUCKET_MS
#: Index entries examined per lock hold during a cleanup.
BATCH: Final = ExpiryIndex.BATCH


class Table:
    """One named table: the sessions, the expiry index and the lock that keeps them consistent.

    ``lock`` guards every write to ``sessions`` and ``index``; reads of ``sessions`` by key need
    no lock (a ``dict.get`` is atomic). ``sweep_lock`` lets one cleanup run at a time.
    """

    __slots__ = ("index", "lock", "name", "refs", "sessions", "sweep_lock")

    def __init__(self, name: str) -> None:
        self.name = name
        self.sessions: dict[str, Session] = {}
        self.index = ExpiryIndex()
        self.lock = threading.Lock()
        self.sweep_lock = threading.Lock()
        self.refs = 0

    def cleanup_expired(self, now: int) -> int:
        """Delete every session expired at ``now``; return how many were deleted."""
        removed = 0
        with self.sweep_lock:
            steps = self.index.sweep(now, self.sessions)
            while True:
                with self.lock:
                    deleted = next(steps, None)
                if deleted is None:
                    return removed
                removed += len(deleted)

    def count_live(self, now: int) -> int:
        """How many stored sessions are live at ``now``: all less the expired the index finds."""
        with self.lock:
            return len(self.sessions) - self.index.count_expired(now, self.sessions)

    def snapshot(self) -> list[Session]:
        """Every stored session, taken under the lock."""
        with self.lock:
            return list(self.sessions.values())

    def index_entries(self) -> int:
        """How many entries the expiry index holds (live and stale)."""
        with self.lock:
            return self.index.entries()


_registry: dict[str, Table] = {}
_registry_lock = threading.Lock()


def acquire(name: str) -> Table:
    """The table named ``name``, created if no open backend uses it; counts one more user."""
    with _registry_lock:
        table = _registry.get(name)
        if table is None:
            table = _registry[name] = Table(name)
        table.refs += 1
        return table


def release(table: Table) -> None:
    """Count one user less; drop the table (and its sessions) when it was the last."""
    with _registry_lock:
        table.refs -= 1
        if table.refs > 0:
            return
        if _registry.get(table.name) is table:
            del _registry[table.name]
    with table.sweep_lock, table.lock:  # after a sweep still running in another thread
        table.sessions.clear()
        table.index.clear()
