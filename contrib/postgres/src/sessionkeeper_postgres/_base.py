"""What the backend's sync and async paths share, apart from I/O: its state, the errors it
raises, how a pooled connection is set up, and how a row becomes a session.

:class:`BackendBase` is the root of :class:`~sessionkeeper_postgres.PostgresBackend`; the
sync driver (:mod:`._sync`), the lifecycle (:mod:`._lifecycle`) and the async hooks
(:mod:`._async`) build on it, each one I/O path's thin layer over the same rules.
"""

from __future__ import annotations

import select
import threading
from typing import TYPE_CHECKING, Any, NoReturn

import psycopg

from sessionkeeper import Session, StorageError
from sessionkeeper.backend import BackendContext, CodecError, decode_session

from ._schema import CLEANUP_BATCH

if TYPE_CHECKING:
    from ._lender import Lender
    from ._options import PostgresOptions
    from ._schema import Statements

__all__ = ["BackendBase", "lost_under", "watch"]


def lost_under(
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], exc: Exception
) -> bool:
    """Whether ``exc``, raised by a statement on ``conn``, means the connection is lost (a
    server restart, a network cut) rather than that the statement failed."""
    return isinstance(exc, psycopg.OperationalError) and conn.broken


def watch(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> select.poll:
    """A poll of ``conn``'s socket for input: an idle connection has none, so input means the
    server's goodbye (the drivers' soundness check, under a microsecond)."""
    poll = select.poll()
    poll.register(conn.pgconn.socket, select.POLLIN)
    return poll


class BackendBase:
    """The backend's state, errors, connection settings and row decoding (see the module)."""

    def __init__(self, options: PostgresOptions, context: BackendContext) -> None:
        self.options = options
        self.context = context
        self.server = options.server_name()
        self._pool: Lender[Any] | None = None
        self._sql: Statements | None = None
        self._identity: str | None = None
        self._schema_name: str | None = None
        self._suspect = False  # a connection was lost: check the server before waiting
        self._counter_lock = threading.Lock()
        self._removed = 0
        self._timeout_s = options.connect_timeout_ms / 1000

    def __repr__(self) -> str:
        state = "open" if self._pool is not None else "closed"
        return f"<PostgresBackend table={self.table!r} on {self.server} {state}>"

    @property
    def table(self) -> str:
        """``schema.table`` once open (``table_name`` before)."""
        if self._schema_name is None:
            return self.options.table_name
        return f"{self._schema_name}.{self.options.table_name}"

    @property
    def statements(self) -> Statements:
        """The table's statements (after ``sessionkeeper_open``)."""
        if self._sql is None:
            self._refuse("use the table")
        return self._sql

    # -- errors -----------------------------------------------------------------------------------

    def _failed(self, operation: str, exc: BaseException) -> StorageError:
        where = f"{self.server} (table {self.table})"
        return StorageError.failed(self.context.name, operation, where, exc)

    def _damaged(self, session_id: str, problem: str) -> StorageError:
        record = f"with id {session_id!r} in table {self.table} on {self.server}"
        return StorageError.damaged(self.context.name, record, problem)

    def _refuse(self, operation: str) -> NoReturn:
        reason = "it was opened read-only" if self._pool is not None else "it is not open"
        raise StorageError(
            self.context.name,
            f"cannot {operation} in table {self.table} on {self.server}: {reason}",
        )

    def _unreachable(self, operation: str, exc: psycopg.Error) -> StorageError:
        return StorageError(
            self.context.name,
            f"{operation} failed: cannot connect to {self.server}: "
            f"{type(exc).__name__}: {str(exc).strip()}",
        )

    def _all_busy(self, operation: str) -> StorageError:
        return StorageError(
            self.context.name,
            f"{operation} failed on {self.server} (table {self.table}): no pooled connection "
            f"became free within {self.options.connect_timeout_ms} ms although the server "
            f"accepts connections: all {self.options.pool_max_size} are busy (raise "
            "pool_max_size, or the server's max_connections)",
        )

    def _problem(self, error: StorageError) -> str:
        """``error``'s message without the backend's name (what the quarantine table keeps)."""
        return str(error).removeprefix(f"{self.context.name} backend: ")

    def _take_damaged(self, problem: str, failure: StorageError | None) -> StorageError:
        """The error of a ``take`` that removed a row it cannot decode (``problem``), once
        the row's bytes were moved to ``<table>_quarantine`` (``failure``: why they could not
        be)."""
        if failure is None:
            return StorageError(
                self.context.name,
                f"{problem}; take removed it: its bytes are kept in {self.table}_quarantine",
            )
        return StorageError(
            self.context.name,
            f"{problem}; take removed it and could not keep its bytes in "
            f"{self.table}_quarantine: {self._problem(failure)}",
        )

    # -- connections ------------------------------------------------------------------------------

    def _settings(self) -> tuple[bytes, tuple[str, str, str]]:
        """The statement that applies the options to a pooled connection (sync or async)."""
        options = self.options
        return (
            b"SELECT set_config('statement_timeout', %s, false), "
            b"set_config('synchronous_commit', %s, false), "
            b"set_config('default_transaction_read_only', %s, false)",
            (
                str(options.statement_timeout_ms),
                options.synchronous_commit,
                "on" if self.context.read_only else "off",
            ),
        )

    def _pool_args(self) -> dict[str, Any]:
        """What the sync and the async pool are made with, but their connection class and
        ``configure``."""
        options = self.options
        return {
            "conninfo": options.conninfo(),
            "kwargs": {"autocommit": True, **options.connect_kwargs()},
            "min_size": options.pool_min_size,
            "max_size": options.pool_max_size,
            "open": False,
            "timeout": self._timeout_s,
            "reconnect_timeout": max(self._timeout_s, 1.0),
            "name": f"sessionkeeper-{self.table}",
        }

    # -- rows -------------------------------------------------------------------------------------

    def _decode(
        self, session_id: str, record: object, last_accessed: object, version: object
    ) -> Session:
        """The session of one row: its record, with the ``last_accessed`` and ``version``
        columns (which writes keep authoritative) in place of the record's."""
        if not isinstance(record, bytes):
            raise self._damaged(session_id, f"its record is {type(record).__name__}, not bytes")
        try:
            session = decode_session(record)
        except CodecError as exc:
            raise self._damaged(session_id, str(exc)) from None
        if session.id != session_id:
            raise self._damaged(session_id, f"it holds session {session.id!r}")
        if type(last_accessed) is not int:
            raise self._damaged(session_id, f"its last_accessed is {last_accessed!r}")
        if version != session.version:
            if type(version) is not int or version < 1:
                raise self._damaged(session_id, f"its version is {version!r}")
            session = session.with_version(version)
        if last_accessed > session.last_accessed:
            return session.touched(last_accessed)
        return session

    def _taken(self, session_id: str, row: Any, now: int) -> Session | None:
        """The session of the row a take removed, if it was live at ``now``; ``StorageError``
        when it does not decode (the caller then keeps the row's bytes)."""
        record, last_accessed, version, deadline = row
        session = self._decode(session_id, record, last_accessed, version)
        if deadline is not None and deadline < now:
            return None
        return session

    def _swept(self, done: int) -> bool:
        """Count the ``done`` rows one cleanup batch removed (``stats``' ``cleanup_removed``);
        whether the batch was full, so that another may follow."""
        with self._counter_lock:
            self._removed += done
        return done >= CLEANUP_BATCH
