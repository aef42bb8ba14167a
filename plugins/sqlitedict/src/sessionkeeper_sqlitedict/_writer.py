"""The owning process's SQLite connection: opened with the options' pragmas, one commit at a time.

Both write modes of the single owner (:mod:`._durable`, :mod:`._interval`) write the file through
one :class:`Writer`: it sets ``journal_mode`` and ``synchronous``, creates the table, reads every
row for the load, and commits a set of upserts and deletes as one transaction (rolled back when
it fails). Its own lock serialises the connection, so that a commit (the interval flusher's)
never runs beside another, and ``close`` can wait for a commit in progress, boundedly. It raises
:mod:`sqlite3`'s errors as they are: the store turns them into
:class:`~sessionkeeper.StorageError` naming the operation.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, NoReturn

from sessionkeeper import Session
from sessionkeeper.backend import encode_session

from ._options import SqliteDictOptions
from ._shared_sql import invalidate_index
from ._sql import Statements, close_connection, connect_writer, table_columns

__all__ = ["READ_BATCH", "Writer"]

log = logging.getLogger("sessionkeeper.sqlitedict")

#: Rows read per round trip when loading or iterating.
READ_BATCH: Final = 2_048
#: Connections a forked child inherited: kept referenced so that they are never closed there.
_inherited: list[sqlite3.Connection] = []


class Writer:
    """The read-write connection of the process that owns a table.

    :param refuse: raises the store's refusal (``StorageError``) for an operation attempted
        once the connection is closed.
    """

    __slots__ = ("_connection", "_lock", "_refuse", "_sql", "where")

    def __init__(self, sql: Statements, where: str, refuse: Callable[[str], NoReturn]) -> None:
        self._sql = sql
        self._refuse = refuse
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # the connection
        #: The file and table, for log messages.
        self.where = where

    def open(self, path: Path, options: SqliteDictOptions) -> list[str]:
        """Connect, apply ``journal_mode`` and ``synchronous``, create the table if needed;
        return its columns (for the caller to check). Raises :class:`sqlite3.Error`."""
        # The owner lock created the file with mode 0600 before SQLite could (SQLite gives its
        # -wal and -shm files the database file's mode).
        connection = connect_writer(
            path, busy_timeout_ms=options.busy_timeout, factory=sqlite3.Connection
        )
        try:
            journal_mode = options.journal_mode.upper()
            mode = connection.execute(f"PRAGMA journal_mode = {journal_mode}")
            actual = str(mode.fetchone()[0]).upper()
            if actual != journal_mode:
                raise sqlite3.OperationalError(
                    f"journal_mode {journal_mode} was refused (still {actual})"
                )
            connection.execute(f"PRAGMA synchronous = {options.synchronous.upper()}")
            connection.execute(self._sql.create)
            columns = table_columns(connection, self._sql.table)
            # This owner writes the table alone from now on: shared mode's index of it, if
            # the file has one, is stale until a shared open rebuilds it.
            invalidate_index(connection, self._sql.table)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return columns

    def rows(self) -> Iterator[tuple[object, object]]:
        """Every ``(key, value)`` of the table, fetched :data:`READ_BATCH` at a time (the
        load, before anyone else uses the connection)."""
        connection = self._connected("read")
        cursor = connection.execute(self._sql.select_all)
        while rows := cursor.fetchmany(READ_BATCH):
            yield from rows

    def commit(self, changes: dict[str, Session | None], wait: float = -1) -> None:
        """Commit ``changes`` (id -> session, ``None``: delete) in one transaction.

        One change is one statement in SQLite's implicit transaction; more are one
        ``BEGIN IMMEDIATE`` … ``COMMIT``. ``wait`` bounds the wait for a commit in progress
        (``-1``: no bound; then :class:`TimeoutError`).
        """
        connection = self._connected("write")
        if not self._lock.acquire(timeout=wait):
            raise TimeoutError(f"the connection stayed busy for {wait:.0f} s")
        try:
            if len(changes) == 1:
                [(key, session)] = changes.items()
                if session is None:
                    connection.execute(self._sql.delete, (key,))
                else:
                    connection.execute(self._sql.upsert, (key, encode_session(session)))
                return
            self._transaction(connection, changes)
        finally:
            self._lock.release()

    def _transaction(
        self, connection: sqlite3.Connection, changes: dict[str, Session | None]
    ) -> None:
        upserts = [(key, encode_session(s)) for key, s in changes.items() if s is not None]
        deletes = [(key,) for key, s in changes.items() if s is None]
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
                    log.exception("rolling back a failed commit to %s failed", self.where)
            raise

    def _connected(self, operation: str) -> sqlite3.Connection:
        connection = self._connection
        if connection is None:
            self._refuse(operation)
        return connection

    def close(self, wait: float) -> None:
        """Close the connection once a commit in progress is over (waiting ``wait`` s at most:
        a commit stuck in the kernel leaves the connection to the process's exit)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            close_connection(connection, self._lock, wait, self.where)

    def abandon(self) -> None:
        """In a forked child: never use, nor close, the parent's connection here."""
        self._lock = threading.Lock()  # a parent thread may have held it at the fork
        if self._connection is not None:
            _inherited.append(self._connection)
            self._connection = None
