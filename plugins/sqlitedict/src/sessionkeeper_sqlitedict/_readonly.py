"""The read-only store engine: inspection beside a running owner, reading rows per call.

Opened with ``read_only`` (the CLI's ``list``, ``show`` and ``stats``), the backend takes no lock,
connects with SQLite's ``mode=ro``, creates nothing and loads nothing: each call reads the rows it
needs, so it sees what the owner has committed. Every write is refused with a
:class:`~sessionkeeper.StorageError`. A class of its own, so that neither it nor the owner tests
a read-only flag on its paths.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence

from sessionkeeper import Session, StorageError
from sessionkeeper.backend import BackendContext, hookimpl

from ._backend import CLOSE_WAIT_S, SqliteDictBackend
from ._options import SqliteDictOptions
from ._sql import (
    RowError,
    close_connection,
    connect_read_only,
    decode_row,
    file_problem,
    hot_journal_hint,
    paged_rows,
    table_columns,
)
from ._writer import READ_BATCH

__all__ = ["ReadOnlyStore"]

log = logging.getLogger("sessionkeeper.sqlitedict")


class ReadOnlyStore(SqliteDictBackend):
    """A table read with SQLite's ``mode=ro``; nothing loaded, nothing locked, no write."""

    mode = "read-only"
    read_only = True

    def __init__(self, options: SqliteDictOptions, context: BackendContext) -> None:
        super().__init__(options, context)
        self._connection: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()  # the connection

    def _hint(self) -> str:
        # A read-only open cannot roll back what a crash left in a rollback journal.
        return hot_journal_hint(self.path)

    # -- lifecycle ----------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_open(self) -> None:
        """Connect read-only to an existing file and table (created by nobody here)."""
        if self._open:
            return
        # A directory or a FIFO is named as what it is (opening a FIFO would block).
        problem = file_problem(self.path, if_missing=" (a read-only open creates nothing)")
        if problem is not None:
            raise StorageError(self.context.name, problem)
        try:
            connection = connect_read_only(self.path, busy_timeout_ms=self.options.busy_timeout)
            st = os.stat(self.path)
        except sqlite3.Error as exc:
            raise self._error("opening read-only", exc) from exc
        except OSError as exc:
            connection.close()
            raise StorageError(
                self.context.name, f"{self.path}: {exc.strerror or exc} (it changed while opening)"
            ) from None
        self._file_identity = (st.st_dev, st.st_ino)
        try:
            columns = table_columns(connection, self.table)
            if not columns:
                raise StorageError(
                    self.context.name,
                    f"{self.path} has no table {self.table!r} (nothing was ever stored in it, "
                    "or table_name is wrong)",
                )
            self._check_columns(columns)
        except sqlite3.Error as exc:
            connection.close()
            raise self._error("reading the schema", exc) from exc
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        self._refusal = "it was opened read-only"
        self._open = True

    @hookimpl
    def sessionkeeper_close(self) -> None:
        """Close the connection. Idempotent."""
        if not self._open:
            return
        self._open = False
        self._refusal = "the backend is closed"
        connection, self._connection = self._connection, None
        if connection is not None:
            close_connection(connection, self._db_lock, CLOSE_WAIT_S, self._where())

    # -- reads --------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_fetch(self, session_id: str) -> Session | None:
        """The session in the row of ``session_id``, or ``None``; a row that is not a session
        raises :class:`~sessionkeeper.StorageError` (never "not found")."""
        connection = self._connection
        if connection is None:
            self._refuse("read")
        try:
            with self._db_lock:
                row = connection.execute(self._sql.select, (session_id,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error("read", exc) from exc
        if row is None:
            return None
        try:
            return decode_row(session_id, row[0])
        except RowError as exc:
            raise self._row_error(exc) from None

    def _rows(self) -> Iterator[tuple[object, object]]:
        """Every ``(key, value)`` of the table, in ``rowid`` order, read in batches."""
        connection = self._connection
        if connection is None:
            self._refuse("read")

        def page(after: int) -> list[tuple[int, object, object]]:
            try:
                with self._db_lock:
                    return connection.execute(
                        self._sql.select_batch, (after, READ_BATCH)
                    ).fetchall()
            except sqlite3.Error as exc:
                raise self._error("read", exc) from exc

        return paged_rows(page, READ_BATCH)

    def _sessions(self) -> Iterator[Session]:
        """The sessions of the table; undecodable rows are skipped and logged."""
        skipped = 0
        for key, value in self._rows():
            try:
                yield decode_row(key, value)
            except RowError as exc:
                skipped += 1
                if skipped == 1:
                    log.warning("%s: skipping a row that does not decode: %s", self._where(), exc)

    @hookimpl
    def sessionkeeper_list(self, now: int) -> list[str]:
        """The ids of the sessions live at ``now`` (undecodable rows are not sessions)."""
        return [s.id for s in self._sessions() if not s.is_expired(now)]

    @hookimpl
    def sessionkeeper_count(self, now: int) -> int:
        """Sessions live at ``now``, counted over every row."""
        return len(self.sessionkeeper_list(now))

    @hookimpl
    def sessionkeeper_iter_sessions(self) -> Iterator[Session]:
        """Every stored session, expired ones included, read in batches; then an error for
        the rows that do not decode (never skipped silently)."""
        return self._iter_file()

    def _iter_file(self) -> Iterator[Session]:
        bad: list[RowError] = []
        for key, value in self._rows():
            try:
                yield decode_row(key, value)
            except RowError as exc:
                bad.append(exc)
        if bad:
            raise self._left_out(len(bad), bad[0])

    # -- writes: refused ----------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        """Refused: the store was opened read-only."""
        self._refuse("store")

    @hookimpl
    def sessionkeeper_store_many(self, sessions: Sequence[Session]) -> int:
        """Refused: the store was opened read-only."""
        self._refuse("store")

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        """Refused: the store was opened read-only."""
        self._refuse("touch a session")

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        """Refused: the store was opened read-only."""
        self._refuse("delete a session")

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        """Refused: the store was opened read-only."""
        self._refuse("clean up expired sessions")

    # -- concurrent state (issue 14): the owner reads scan, the atomic writes are refused ----

    @hookimpl
    def sessionkeeper_list_owner(self, owner: str, now: int) -> list[str]:
        """The ids of ``owner``'s live sessions: a scan of the file (nothing is loaded here,
        so there is no owner index; inspection only)."""
        return [s.id for s in self._sessions() if s.owner == owner and not s.is_expired(now)]

    @hookimpl
    def sessionkeeper_count_owner(self, owner: str, now: int) -> int:
        """How many of ``owner``'s sessions are live: a scan of the file."""
        return len(self.sessionkeeper_list_owner(owner, now))

    @hookimpl
    def sessionkeeper_store_if(
        self, session: Session, if_version: int | None, now: int
    ) -> Session | None:
        """Refused: the store was opened read-only."""
        self._refuse("store")

    @hookimpl
    def sessionkeeper_take(self, session_id: str, now: int) -> Session | None:
        """Refused: the store was opened read-only."""
        self._refuse("take a session")

    @hookimpl
    def sessionkeeper_rotate(self, session_id: str, new_id: str, now: int) -> Session | None:
        """Refused: the store was opened read-only."""
        self._refuse("rotate a session")

    @hookimpl
    def sessionkeeper_delete_owner(self, owner: str) -> int:
        """Refused: the store was opened read-only."""
        self._refuse("delete an owner's sessions")
