"""The backend's sync driver: psycopg ``Connection``s lent by a :class:`~._lender.Lender`, one
statement (:meth:`SyncDriver._exec`) or one plan of steps (:meth:`SyncDriver._drive`) on one,
psycopg errors as :class:`~sessionkeeper.StorageError`, and the rules for a lost connection.

A connection lost under a read or an idempotent write (``retry``) fails it only after the work
ran once more on a connection checked to be sound, which is what makes a server restart
invisible to callers whose connections sat idle in the pool. A write whose first attempt may
have done its work (delete, take, a conditional write, rotate, delete_owner) is never sent
twice: it starts on a connection checked for the server's goodbye, and a loss under it is a
``StorageError``. The async driver (:mod:`._async`) follows the same rules with ``await``.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import PoolClosed, PoolTimeout

from sessionkeeper import StorageError

from ._base import BackendBase, lost_under, watch
from ._lender import Lender
from ._plans import ALL, ONE, ROWCOUNT, Steps, drive, quarantine_steps

__all__ = ["Connection", "SyncDriver"]

Row = tuple[Any, ...]


class Connection(psycopg.Connection[Row]):
    """A pooled connection that keeps one cursor for its whole life.

    Creating a cursor per statement (what ``Connection.execute`` does) costs about as much
    client CPU as decoding the record: the backend's single-statement operations reuse
    :attr:`sk_cursor` instead (a connection serves one operation at a time). It reads results
    in binary: a ``bytea`` arrives as its bytes rather than twice as many hex digits (as cheap
    for a small record; a third of the client CPU for a 60 KiB one).
    """

    sk_cursor: psycopg.Cursor[Row]
    #: Polls the connection's socket for input: an idle connection has none (see
    #: :meth:`SyncDriver._sound_conn`).
    sk_poll: select.poll


class SyncDriver(BackendBase):
    """Statements on pooled sync connections, with the backend's errors and retries."""

    _pool: Lender[Connection] | None

    def _connect_direct(self, operation: str) -> Connection:
        """A connection of our own (not pooled); ``StorageError`` with libpq's reason."""
        options = self.options
        try:
            return Connection.connect(
                options.conninfo(), autocommit=True, **options.connect_kwargs()
            )
        except psycopg.Error as exc:
            raise self._unreachable(operation, exc) from exc

    def _configure(self, conn: Connection) -> None:
        """Each pooled connection's settings, in one statement, and its kept cursor."""
        conn.execute(*self._settings())
        conn.sk_cursor = conn.cursor(binary=True)
        conn.sk_poll = watch(conn)

    def _probe(self, operation: str) -> None:
        """Connect directly: fail now, with libpq's reason, when the server is unreachable."""
        self._connect_direct(operation).close()
        self._suspect = False

    def _forget(self, pool: Lender[Connection]) -> None:
        """After a lost connection: check the server before the next wait on the pool, and
        drop the idle connections the same loss broke."""
        self._suspect = True
        with contextlib.suppress(psycopg.Error):
            pool.check()

    def _getconn(self, pool: Lender[Connection], operation: str) -> Connection:
        if self._suspect:
            self._probe(operation)
        try:
            return pool.get()
        except PoolTimeout:
            pass
        except PoolClosed:
            self._refuse(operation)
        self._probe(operation)  # unreachable: StorageError with the reason
        raise self._all_busy(operation)

    def _sound_conn(self, pool: Lender[Connection], operation: str) -> Connection:
        """A pooled connection the server has not hung up on, for an operation that is never
        sent twice (its first attempt may have done its work).

        An idle connection has nothing to read: one that has input, an error or a hang-up on
        its socket holds the server's goodbye (a restart's "terminating connection", or the
        end of the stream). It is closed (the pool replaces it) and another taken, so that a
        restart between operations stays invisible to them too. One ``poll`` with no timeout,
        under a microsecond (the poll object is the connection's, made once).
        """
        for _ in range(self.options.pool_max_size + 1):
            conn = self._getconn(pool, operation)
            try:
                sound = not conn.sk_poll.poll(0)
            except (OSError, ValueError):
                sound = False
            if sound:
                return conn
            conn.close()
            pool.put(conn)
            self._forget(pool)
        return self._getconn(pool, operation)

    def _exec(
        self,
        operation: str,
        query: bytes,
        params: Any,
        want: int,
        *,
        write: bool = False,
        retry: bool = True,
    ) -> Any:
        """One statement on a pooled connection's own cursor (no closure, no new cursor); its
        answer as ``want`` says (:mod:`._plans`). With ``retry``, sent once more (without
        ``retry``) when the connection was lost under it; without, started on a sound
        connection and never sent twice. psycopg errors become ``StorageError``."""
        pool = self._pool
        if pool is None or (write and self.context.read_only):
            self._refuse(operation)
        conn = self._getconn(pool, operation) if retry else self._sound_conn(pool, operation)
        try:
            cursor = conn.sk_cursor.execute(query, params)
            if want == ONE:
                return cursor.fetchone()
            if want == ROWCOUNT:
                return cursor.rowcount
            return cursor.fetchall() if want == ALL else None
        except psycopg.Error as exc:
            error = exc
            lost = lost_under(conn, exc)
        finally:
            pool.put(conn)
        if lost:
            self._forget(pool)
        if not (lost and retry):
            raise self._failed(operation, error) from error
        return self._exec(operation, query, params, want, write=write, retry=False)

    def _drive(self, operation: str, make_steps: Callable[[], Steps], *, transaction: bool) -> Any:
        """Several statements (:mod:`._plans` steps) on one sound connection, in one
        transaction with ``transaction``; never sent twice. What the steps return."""
        pool = self._pool
        if pool is None or self.context.read_only:
            self._refuse(operation)
        conn = self._sound_conn(pool, operation)
        try:
            if not transaction:
                return drive(conn.sk_cursor, make_steps())
            with conn.transaction():
                return drive(conn.sk_cursor, make_steps())
        except psycopg.Error as exc:
            error = exc
            lost = lost_under(conn, exc)
        finally:
            pool.put(conn)
        if lost:
            self._forget(pool)
        raise self._failed(operation, error) from error

    def _keep_damaged(self, session_id: str, row: Any, error: StorageError) -> StorageError:
        """The error of a ``take`` that removed ``row``, which does not decode (``error``):
        the row's bytes are first moved to ``<table>_quarantine`` (where ``check --repair``
        moves damaged rows), so that a damaged record is reported, never lost."""
        statements, problem = self.statements, self._problem(error)

        def steps() -> Steps:
            return quarantine_steps(statements, session_id, row[0], row[1], problem)

        try:
            self._drive("take", steps, transaction=True)
        except StorageError as exc:
            return self._take_damaged(problem, exc)
        return self._take_damaged(problem, None)
