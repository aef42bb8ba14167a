"""The ``sqlitedict`` backend plugin: the class the entry point names, and the store engines' base.

One SQLite file, in sqlitedict's table format (:mod:`._sql`), read and written with the standard
library's :mod:`sqlite3` rather than through ``sqlitedict.SqliteDict``, whose worker thread costs
tens of microseconds a call and whose connection never fsyncs (see docs/sqlitedict.md).

:class:`SqliteDictBackend` is what the ``sessionkeeper.backends`` entry point names, and the base
of the *store engines*: constructing it builds the engine that the options and the context call
for (as ``pathlib.Path()`` builds a ``PosixPath``), so that each engine is a class of its own,
with no mode tests on its paths:

=====================================  ====================================================
engine                                 when
=====================================  ====================================================
:class:`~._readonly.ReadOnlyStore`     ``read_only`` (the CLI's ``list``, ``show``, ``stats``)
:class:`~._durable.DurableStore`       the owner, ``auto_save = 0``: commit before returning
:class:`~._interval.IntervalStore`     the owner, ``auto_save > 0``: buffer, commit each window
:class:`~._shared.SharedStore`         ``shared``: every process of the host reads and writes
                                       the file, each read a ``SELECT``, each write a
                                       transaction
=====================================  ====================================================

The two owner engines share :class:`~._owner.OwnerStore` (the lock on the file, the load into a
:class:`~sessionkeeper._table.SessionTable`, reads from it, cleanup, close, fork). The pieces
they use live apart: :mod:`._writer` (the connection), :mod:`._group` (group commit),
:mod:`._flusher` (the interval thread), :mod:`._lock` (the file's owner lock). The shared
engine has its own pieces: :mod:`._shared_sql` (the index table beside sqlitedict's),
:mod:`._lease` (one sweep at a time across processes), :mod:`._busy` (who holds SQLite's lock).

This base holds what every engine shares: the options and paths, the error wording, the table's
column check, and the ``stats``, ``identity`` and ``check`` hooks.
"""

from __future__ import annotations

import sqlite3
from typing import Any, ClassVar, NoReturn

from sessionkeeper import StorageError
from sessionkeeper.backend import BackendContext, Capabilities, hookimpl

from ._check import check_file
from ._options import SqliteDictOptions
from ._sql import COLUMNS, RowError, Statements

__all__ = ["SqliteDictBackend"]

#: How long ``close`` waits for a commit in progress (the flusher's, a stuck fsync).
CLOSE_WAIT_S = 30.0


class SqliteDictBackend:
    """Sessions in one SQLite file, in sqlitedict's table format, with an in-memory copy.

    ``SqliteDictBackend(options, context)`` returns the engine for them (see the module
    docstring); every engine is an instance of this class. One instance serves one manager;
    one process owns a table for writing at a time.
    """

    options_class: ClassVar[type[SqliteDictOptions]] = SqliteDictOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=True,
        shared=False,
        replicated=False,
        blocking=True,
        read_only_open=True,
        atomic=True,
    )
    #: The engine's mode, as ``stats`` and ``repr`` show it.
    mode: ClassVar[str] = "?"
    read_only: ClassVar[bool] = False
    durable: ClassVar[bool] = False
    #: The hooks this engine serves without blocking (``sessionkeeper_inline_hooks``): none
    #: here; each engine names what it serves from memory without waiting on a lock held
    #: across I/O.
    inline_hooks: ClassVar[frozenset[str]] = frozenset()

    def __new__(cls, options: SqliteDictOptions, context: BackendContext) -> SqliteDictBackend:
        engine = _engine(options, context) if cls is SqliteDictBackend else cls
        return object.__new__(engine)

    def __init__(self, options: SqliteDictOptions, context: BackendContext) -> None:
        # No I/O here: resources are opened by sessionkeeper_open.
        self.options = options
        self.context = context
        self.path = context.resolve(options.file_path)
        self.table = options.table_name
        self._sql = Statements(self.table)
        #: (st_dev, st_ino) of the file opened, for sessionkeeper_identity.
        self._file_identity: tuple[int, int] | None = None
        self._open = False
        #: Why a write is refused (while it is).
        self._refusal = "the backend is not open"

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<SqliteDictBackend {str(self.path)!r} table={self.table!r} {self.mode} {state}>"

    # -- errors -------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.path}, table {self.table!r}"

    def _hint(self) -> str:
        """Advice to add to an error of SQLite's (an engine may know more)."""
        return ""

    def _error(self, operation: str, exc: BaseException) -> StorageError:
        hint = self._hint()
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

    def _left_out(self, count: int, first: RowError) -> StorageError:
        """What iterating raises after the good sessions when ``count`` rows did not decode."""
        return StorageError(
            self.context.name,
            f"{self._where()}: {count} row(s) do not decode and were left out (first: "
            f"{first}); run `sessionkeeper check --repair`",
        )

    def _refuse(self, operation: str) -> NoReturn:
        raise self._refused(operation)

    def _refused(self, operation: str) -> StorageError:
        return StorageError(
            self.context.name, f"{self._where()}: cannot {operation}: {self._refusal}"
        )

    def _make_directory(self) -> None:
        """Create the file's missing parent directories (mode 0700), or raise
        :class:`~sessionkeeper.StorageError` saying why not."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                self.context.name,
                f"cannot create the directory {self.path.parent}: {exc.strerror or exc}",
            ) from None

    def _check_columns(self, columns: list[str]) -> None:
        """Refuse a table that is not sqlitedict's ``(key, value)``."""
        if tuple(columns) != COLUMNS:
            raise StorageError(
                self.context.name,
                f"{self._where()} has columns {columns}, not sqlitedict's (key, value): it is "
                "not a session table",
            )

    # -- what every engine implements ---------------------------------------------------------
    # Each engine marks its own with @hookimpl; these exist so that the entry point's class
    # names every required hook (the kernel checks the class before building it).

    def sessionkeeper_open(self) -> None:
        raise NotImplementedError

    def sessionkeeper_close(self) -> None:
        raise NotImplementedError

    def sessionkeeper_fetch(self, session_id: str) -> Any:
        raise NotImplementedError

    def sessionkeeper_store(self, session: Any) -> None:
        raise NotImplementedError

    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Any:
        raise NotImplementedError

    def sessionkeeper_delete(self, session_id: str) -> bool:
        raise NotImplementedError

    def sessionkeeper_list(self, now: int) -> list[str]:
        raise NotImplementedError

    def sessionkeeper_count(self, now: int) -> int:
        raise NotImplementedError

    def sessionkeeper_iter_sessions(self) -> Any:
        raise NotImplementedError

    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        raise NotImplementedError

    def sessionkeeper_store_if(self, session: Any, if_version: int | None, now: int) -> Any:
        raise NotImplementedError

    def sessionkeeper_take(self, session_id: str, now: int) -> Any:
        raise NotImplementedError

    def sessionkeeper_rotate(self, session_id: str, new_id: str, now: int) -> Any:
        raise NotImplementedError

    def sessionkeeper_list_owner(self, owner: str, now: int) -> list[str]:
        raise NotImplementedError

    def sessionkeeper_count_owner(self, owner: str, now: int) -> int:
        raise NotImplementedError

    def sessionkeeper_delete_owner(self, owner: str) -> int:
        raise NotImplementedError

    def flush(self) -> int:
        """Commit the buffered changes now (interval mode); return how many were committed.

        Raises :class:`~sessionkeeper.StorageError` when the commit fails (the changes stay
        buffered), or when the store cannot write. In durable mode there is never anything
        buffered.
        """
        self._refuse("flush")

    # -- hooks shared by every engine ---------------------------------------------------------

    def _figures(self) -> dict[str, Any]:
        """The engine's own figures for ``stats``."""
        return {}

    @hookimpl
    def sessionkeeper_stats(self) -> dict[str, Any]:
        """Where the store is, its mode, and the engine's figures (the owner's: what the copy
        holds and how commits went)."""
        figures: dict[str, Any] = {
            "file": str(self.path),
            "table_name": self.table,
            "mode": self.mode,
            "auto_save_ms": self.options.auto_save,
            "journal_mode": self.options.journal_mode.upper(),
            "synchronous": self.options.synchronous.upper(),
        }
        figures.update(self._figures())
        return figures

    @hookimpl
    def sessionkeeper_inline_hooks(self) -> frozenset[str] | None:
        """The hooks the async manager may call on its event loop (the engine's
        :attr:`inline_hooks`); ``None`` when there are none (every call in a worker thread)."""
        return self.inline_hooks or None

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


def _engine(options: SqliteDictOptions, context: BackendContext) -> type[SqliteDictBackend]:
    """The engine class for ``options`` and ``context`` (imported here: they subclass the
    base this module defines)."""
    if context.read_only:
        from ._readonly import ReadOnlyStore

        return ReadOnlyStore
    if options.shared:
        from ._shared import SharedStore

        return SharedStore
    if options.durable:
        from ._durable import DurableStore

        return DurableStore
    from ._interval import IntervalStore

    return IntervalStore
