"""The shared in-process tables: :class:`~sessionkeeper._table.SessionTable` by name.

A :class:`Table` is what a ``table_name`` names: a core ``SessionTable`` (the ``dict`` of
sessions, the expiry index with O(expired) cleanup, the lock and the sweep lock) with a name and a
count of its users. The tables live in a module-level registry, reference-counted by
:func:`acquire` and :func:`release`, so that several managers in one process that name the same
table share it (like a named ETS table), and the table is dropped when the last of them closes.
"""

from __future__ import annotations

import threading
from typing import Final

from sessionkeeper._table import BATCH as _BATCH
from sessionkeeper._table import BUCKET_MS as _BUCKET_MS
from sessionkeeper._table import SessionTable

__all__ = ["BATCH", "BUCKET_MS", "Table", "acquire", "release"]

#: Width of one expiry bucket, in ms.
BUCKET_MS: Final = _BUCKET_MS
#: Index entries examined per lock hold during a cleanup.
BATCH: Final = _BATCH


class Table(SessionTable):
    """One named table: a :class:`~sessionkeeper._table.SessionTable` and how many open
    backends use it (``refs``, changed under the registry's lock)."""

    __slots__ = ("name", "refs")

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.refs = 0


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
    table.clear()  # after a sweep still running in another thread
