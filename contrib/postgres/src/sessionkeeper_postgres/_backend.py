"""The ``postgres`` backend plugin: sessions in a PostgreSQL table, over a psycopg 3 pool."""

from __future__ import annotations

import contextlib
import select
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, NoReturn, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from sessionkeeper import Session, StorageError
from sessionkeeper.backend import (
    BackendContext,
    Capabilities,
    CodecError,
    decode_session,
    hookimpl,
)

from ._async import AsyncHooks
from ._check import check_table
from ._lender import Lender
from ._options import PostgresOptions
from ._plans import STORE_CHUNK, StoreIf, chunks, drive, rotate_steps, storable_id, write_params
from ._schema import CLEANUP_BATCH, LATEST_VERSION, PAGE_SIZE, Statements

__all__ = ["STORE_CHUNK", "PostgresBackend"]

T = TypeVar("T")
Row = tuple[Any, ...]
Params = Any


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
    #: :meth:`PostgresBackend._sound_conn`).
    sk_poll: select.poll


class PostgresBackend(AsyncHooks):
    """Sessions in one PostgreSQL table, shared by every process and host that names it.

    Every operation is one statement in its own transaction (autocommit), so one round trip:
    ``fetch`` a primary-key lookup, ``store`` an upsert, ``touch`` an ``UPDATE … RETURNING``
    that moves ``last_accessed`` and the deadline forward only (a deleted row is never
    recreated), ``cleanup_expired`` batches of ``DELETE`` claimed through the deadline index
    with ``FOR UPDATE SKIP LOCKED``. See :mod:`sessionkeeper_postgres._schema` for the table.

    Nothing connects in the constructor: :meth:`sessionkeeper_open` checks the server with a
    connection of its own, creates or migrates the table, then opens the pool.

    A connection lost under an operation fails it with :class:`~sessionkeeper.StorageError`
    naming the server; every operation but ``delete`` (whose answer would be ambiguous) is
    first retried once on a fresh connection, which is what makes a server restart invisible
    to callers whose connections sat idle in the pool.
    """

    options_class: ClassVar[type[PostgresOptions]] = PostgresOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=True,
        shared=True,
        replicated=False,
        blocking=True,
        read_only_open=True,
        atomic=True,
    )

    def __init__(self, options: PostgresOptions, context: BackendContext) -> None:
        self.options = options
        self.context = context
        self.server = options.server_name()
        self._pool: Lender[Connection] | None = None
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
        """The table's statements (after :meth:`sessionkeeper_open`)."""
        if self._sql is None:
            self._refuse("use the table")
        return self._sql

    # -- errors -----------------------------------------------------------------------------------

    def _failed(self, operation: str, exc: BaseException) -> StorageError:
        detail = str(exc).strip() or type(exc).__name__
        return StorageError(
            self.context.name,
            f"{operation} failed on {self.server} (table {self.table}): "
            f"{type(exc).__name__}: {detail}",
        )

    def _damaged(self, session_id: str, problem: str) -> StorageError:
        return StorageError(
            self.context.name,
            f"the session record with id {session_id!r} in table {self.table} on {self.server} "
            f"is damaged: {problem}",
        )

    def _refuse(self, operation: str) -> NoReturn:
        reason = "it was opened read-only" if self._pool is not None else "it is not open"
        raise StorageError(
            self.context.name,
            f"cannot {operation} in table {self.table} on {self.server}: {reason}",
        )

    # -- connections ------------------------------------------------------------------------------

    def _connect_direct(self, operation: str) -> Connection:
        """A connection of our own (not pooled); ``StorageError`` with libpq's reason."""
        options = self.options
        try:
            return Connection.connect(
                options.conninfo(), autocommit=True, **options.connect_kwargs()
            )
        except psycopg.Error as exc:
            raise self._unreachable(operation, exc) from exc

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

    def _configure(self, conn: Connection) -> None:
        """Each pooled connection's settings, in one statement, and its kept cursor."""
        conn.execute(*self._settings())
        conn.sk_cursor = conn.cursor(binary=True)
        conn.sk_poll = select.poll()
        conn.sk_poll.register(conn.pgconn.socket, select.POLLIN)

    def _probe(self, operation: str) -> None:
        """Connect directly: fail now, with libpq's reason, when the server is unreachable."""
        self._connect_direct(operation).close()
        self._suspect = False

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
            self._suspect = True
            with contextlib.suppress(psycopg.Error):
                pool.check()
        return self._getconn(pool, operation)

    def _run(
        self,
        operation: str,
        work: Callable[[Connection], T],
        *,
        write: bool = False,
        retry: bool = True,
    ) -> T:
        """``work(connection)`` on a pooled connection; psycopg errors become ``StorageError``.

        When the connection turns out lost (a server restart, a network cut), the pool's idle
        connections are checked, and with ``retry`` the work runs once more on a fresh one.
        Without ``retry`` (a write whose first attempt may have happened: delete, take, a
        conditional write, rotate, delete_owner), the connection is first checked to be still
        there (:meth:`_sound_conn`) and a loss under the work is a ``StorageError``.
        """
        pool = self._pool
        if pool is None or (write and self.context.read_only):
            self._refuse(operation)
        for attempt in (0, 1):
            conn = self._getconn(pool, operation) if retry else self._sound_conn(pool, operation)
            try:
                return work(conn)
            except psycopg.OperationalError as exc:
                if not conn.broken:
                    raise self._failed(operation, exc) from exc
                self._suspect = True
                if attempt or not retry:
                    raise self._failed(operation, exc) from exc
            except psycopg.Error as exc:
                raise self._failed(operation, exc) from exc
            finally:
                pool.put(conn)
            with contextlib.suppress(psycopg.Error):  # drop what the same loss broke
                pool.check()
        raise AssertionError("unreachable")  # pragma: no cover

    def _one(self, operation: str, query: bytes, params: Params, *, write: bool = False) -> Any:
        """The first row (or ``None``) of one retried statement on a pooled connection's own
        cursor: the reads' and the idempotent writes' path, kept short (no closure, no new
        cursor); the same errors and the same single retry after a lost connection as
        :meth:`_run`."""
        pool = self._pool
        if pool is None or (write and self.context.read_only):
            self._refuse(operation)
        conn = self._getconn(pool, operation)
        try:
            return conn.sk_cursor.execute(query, params).fetchone()
        except psycopg.Error as exc:
            lost = isinstance(exc, psycopg.OperationalError) and conn.broken
            if not lost:
                raise self._failed(operation, exc) from exc
            self._suspect = True
        finally:
            pool.put(conn)
        with contextlib.suppress(psycopg.Error):
            pool.check()
        return self._run(  # once more, on a connection checked to be sound
            operation,
            lambda c: c.sk_cursor.execute(query, params).fetchone(),
            write=write,
            retry=False,
        )

    def _once(self, operation: str, query: bytes, params: Params, *, returning: bool) -> Any:
        """One write that is never sent twice (its first attempt may have done its work), on
        a connection checked to be sound: the first row it returns with ``returning``, else
        its row count. The short path of ``delete`` and ``take`` (no closure): the same errors
        as :meth:`_run` with ``retry=False``."""
        pool = self._pool
        if pool is None or self.context.read_only:
            self._refuse(operation)
        conn = self._sound_conn(pool, operation)
        try:
            cursor = conn.sk_cursor.execute(query, params)
            return cursor.fetchone() if returning else cursor.rowcount
        except psycopg.Error as exc:
            error = exc
            lost = isinstance(exc, psycopg.OperationalError) and conn.broken
        finally:
            pool.put(conn)
        if lost:
            self._suspect = True
            with contextlib.suppress(psycopg.Error):
                pool.check()
        raise self._failed(operation, error) from error

    # -- lifecycle --------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_open(self) -> None:
        """Check the server, create or migrate the table (read-write), open the pool."""
        if self._pool is not None:
            return
        conn = self._connect_direct("open")
        try:
            with conn:
                schema, identity = self._inspect(conn)
                statements = Statements(schema, self.options.table_name)
                self._schema_name = schema
                self._prepare_table(conn, statements)
        except psycopg.Error as exc:
            raise self._failed("open", exc) from exc
        pool: ConnectionPool[Connection] = ConnectionPool(
            connection_class=Connection, configure=self._configure, **self._pool_args()
        )
        try:  # min_size connections before the first operation (none made in its path)
            pool.open(wait=True, timeout=self._timeout_s)
        except PoolTimeout as exc:
            raise self._failed("open", exc) from exc
        self._sql = statements
        self._identity = identity
        self._pool = Lender(pool)

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

    def _inspect(self, conn: Connection) -> tuple[str, str]:
        """The table's schema and the store's identity, from the server itself."""
        row = conn.execute(
            "SELECT current_schema(), current_database(), "
            "(SELECT system_identifier FROM pg_control_system())"
        ).fetchone()
        assert row is not None
        current_schema, database, system_identifier = row
        schema = self.options.schema or current_schema
        if schema is None:
            raise StorageError(
                self.context.name,
                f"cannot open {self.server}: the role's search_path names no existing schema; "
                "set the schema option",
            )
        identity = f"postgres:{system_identifier}/{database}/{schema}.{self.options.table_name}"
        return schema, identity

    def _prepare_table(self, conn: Connection, statements: Statements) -> None:
        """Bring the table to :data:`LATEST_VERSION`; refuse a newer one. Read-only: only
        check that it is there, at the latest version or an older one whose rows it reads as
        they are (a migration's source is opened read-only)."""
        version = self._schema_version(conn, statements)
        if version == LATEST_VERSION:
            return
        if self.context.read_only and version is not None and 1 <= version < LATEST_VERSION:
            statements.version = version
            return
        if version is not None and version > LATEST_VERSION:
            raise StorageError(
                self.context.name,
                f"cannot open table {self.table} on {self.server}: its schema is version "
                f"{version}, written by a newer sessionkeeper-postgres (this one knows up to "
                f"version {LATEST_VERSION}): upgrade sessionkeeper-postgres",
            )
        if self.context.read_only:
            what = "does not exist" if version is None else f"has schema version {version}"
            raise StorageError(
                self.context.name,
                f"cannot open table {self.table} on {self.server} read-only: it {what} "
                f"(version {LATEST_VERSION} expected); open it once read-write to create or "
                "migrate it",
            )
        with conn.transaction():
            # One migrator per schema at a time; the version is read again under the lock.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"sessionkeeper:{statements.schema}",),
            )
            conn.execute(statements.create_meta)
            row = conn.execute(statements.read_version, (statements.table,)).fetchone()
            current = 0 if row is None else int(row[0])
            if row is None and self._table_exists(conn, statements):
                raise StorageError(
                    self.context.name,
                    f"cannot use table {self.table} on {self.server}: it exists but "
                    f"sessionkeeper did not create it (no row in {statements.schema}."
                    "sessionkeeper_meta): choose another table_name",
                )
            for number in range(current + 1, LATEST_VERSION + 1):
                for statement in statements.migration(number):
                    conn.execute(statement)
            conn.execute(statements.write_version, (statements.table, LATEST_VERSION))

    @staticmethod
    def _table_exists(conn: Connection, statements: Statements) -> bool:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL",
            (statements.qualified.as_string(conn),),
        ).fetchone()
        return bool(row and row[0])

    def _schema_version(self, conn: Connection, statements: Statements) -> int | None:
        """The table's recorded schema version, ``None`` when it has none (or no meta table)."""
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (statements.meta.as_string(conn),)
        ).fetchone()
        if not (row and row[0]):
            return None
        row = conn.execute(statements.read_version, (statements.table,)).fetchone()
        return None if row is None else int(row[0])

    @hookimpl
    def sessionkeeper_close(self) -> None:
        """Close the pool and its connections. Idempotent."""
        lender, self._pool = self._pool, None
        if lender is not None:
            lender.close()
            lender.pool.close(timeout=self._timeout_s)

    @hookimpl
    def sessionkeeper_identity(self) -> str | None:
        """``postgres:<system identifier>/<database>/<schema>.<table>``: the cluster's own id
        (``pg_control_system()``), so every spelling of the address names one store."""
        return self._identity

    # -- decoding ---------------------------------------------------------------------------------

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

    # -- the hooks --------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_fetch(self, session_id: str) -> Session | None:
        """The stored session (expired or not), or ``None``: one primary-key lookup."""
        if not storable_id(session_id):
            return None  # no such session (the manager says why the id is bad)
        row = self._one("fetch", self.statements.fetch, (session_id,))
        if row is None:
            return None
        return self._decode(session_id, row[0], row[1], row[2])

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        """Insert or replace ``session`` exactly as given (its version included: what
        ``create``, import and migrate write): one upsert."""
        query = self.statements.store
        params = write_params(session)

        def work(conn: Connection) -> None:
            conn.sk_cursor.execute(query, params)

        self._run("store", work, write=True)

    @hookimpl
    def sessionkeeper_store_many(self, sessions: Sequence[Session]) -> int:
        """Insert or replace each session as given: one ``INSERT … SELECT FROM unnest(…)``
        (one round trip, one transaction) per :data:`STORE_CHUNK` sessions."""
        query = self.statements.store_many
        for columns in chunks(sessions):

            def work(conn: Connection, columns: tuple[list[Any], ...] = columns) -> None:
                conn.sk_cursor.execute(query, columns)

            self._run("store_many", work, write=True)
        return len(sessions)

    @hookimpl
    def sessionkeeper_store_if(
        self, session: Session, if_version: int | None, now: int
    ) -> Session | None:
        """Store ``session`` with the live stored version + 1 if that version is
        ``if_version`` (``None``: whatever it is); one statement that checks and writes.

        ``if_version`` N >= 1 is an ``UPDATE … WHERE version = N AND <live>`` (a row that is
        gone or expired is never written), 0 an ``INSERT … ON CONFLICT DO UPDATE … WHERE
        <expired>``, ``None`` an upsert counting the version in SQL. A refused write reads the
        live version to name it in :class:`~sessionkeeper.VersionConflict`. An unconditional
        write is retried after a lost connection (it may count one version more); a
        conditional one is not: its first attempt may have succeeded.
        """
        plan = StoreIf(self.statements, session, if_version, now)
        if plan.counted:
            return plan.counted_result(self._one("store", plan.query, plan.params, write=True))
        steps = plan.steps
        actual = self._run("store", lambda c: drive(c.sk_cursor, steps()), write=True, retry=False)
        return plan.outcome(actual)

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        """Move ``last_accessed`` and the deadline forward (never back, never past the absolute
        deadline) in one ``UPDATE … RETURNING``; ``None`` when the row is gone (it is never
        recreated)."""
        if not storable_id(session_id):
            return None
        params = {"at": last_accessed, "id": session_id}
        row = self._one("touch", self.statements.touch, params, write=True)
        if row is None:
            return None
        return self._decode(session_id, row[0], row[1], row[2])

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        """Remove the row; ``False`` when there was none. Not retried after a lost connection
        (the first attempt may have deleted it), so that the answer is never wrong."""
        if not storable_id(session_id):
            return False
        query = self.statements.delete
        return bool(self._once("delete", query, (session_id,), returning=False) > 0)

    @hookimpl
    def sessionkeeper_take(self, session_id: str, now: int) -> Session | None:
        """Remove the row and return its session if it was live at ``now``: one ``DELETE …
        RETURNING`` (of concurrent takes, the one whose delete found the row gets it). An
        expired row is removed too. Not retried after a lost connection."""
        if not storable_id(session_id):
            return None
        row = self._once("take", self.statements.take, (session_id,), returning=True)
        if row is None:
            return None
        try:
            return self._taken(session_id, row, now)
        except StorageError as exc:
            raise self._keep_damaged(session_id, row[0], row[1], exc) from None

    def _taken(self, session_id: str, row: Any, now: int) -> Session | None:
        """The session of the row a take removed, if it was live at ``now``; ``StorageError``
        when it does not decode (the caller keeps its bytes: :meth:`_keep_damaged`)."""
        record, last_accessed, version, deadline = row
        session = self._decode(session_id, record, last_accessed, version)
        if deadline is not None and deadline < now:
            return None
        return session

    def _keep_damaged(
        self, session_id: str, record: object, last_accessed: object, error: StorageError
    ) -> StorageError:
        """The error of a ``take`` that removed a row it cannot decode: the row's bytes are
        first moved to ``<table>_quarantine`` (where ``check --repair`` moves damaged rows),
        so that a damaged record is reported, never lost."""
        statements = self.statements
        prefix = f"{self.context.name} backend: "
        message = str(error).removeprefix(prefix)

        def work(conn: Connection) -> None:
            with conn.transaction():
                conn.execute(statements.create_quarantine)
                conn.execute(
                    statements.insert_quarantine, (session_id, record, last_accessed, message)
                )

        try:
            self._run("take", work, write=True, retry=False)
        except StorageError as exc:
            failure = str(exc).removeprefix(prefix)
            return StorageError(
                self.context.name,
                f"{message}; take removed it and could not keep its bytes in "
                f"{self.table}_quarantine: {failure}",
            )
        return StorageError(
            self.context.name,
            f"{message}; take removed it: its bytes are kept in {self.table}_quarantine",
        )

    @hookimpl
    def sessionkeeper_rotate(self, session_id: str, new_id: str, now: int) -> Session | None:
        """Move the live session to ``new_id`` in one transaction: ``DELETE … RETURNING`` the
        live row (locking it), then ``INSERT`` it under the new id with version + 1 and
        ``last_accessed`` now; both ids change at the commit, so no reader sees both or
        neither. ``None`` (nothing changed) when no live session has the id."""
        if not storable_id(session_id):
            return None
        statements = self.statements

        def work(conn: Connection) -> Session | None:
            with conn.transaction():
                steps = rotate_steps(statements, session_id, new_id, now, self._decode)
                rotated: Session | None = drive(conn.sk_cursor, steps)
            return rotated

        return self._run("rotate", work, write=True, retry=False)

    @hookimpl
    def sessionkeeper_list(self, now: int) -> list[str]:
        """The ids live at ``now`` (no deadline, or a deadline not before ``now``)."""
        query = self.statements.list_live

        def work(conn: Connection) -> list[str]:
            return [row[0] for row in conn.sk_cursor.execute(query, (now,))]

        return self._run("list", work)

    @hookimpl
    def sessionkeeper_count(self, now: int) -> int:
        """How many sessions are live at ``now``."""
        row = self._one("count", self.statements.count_live, (now,))
        return int(row[0]) if row else 0

    @hookimpl
    def sessionkeeper_list_owner(self, owner: str, now: int) -> list[str]:
        """The ids of ``owner``'s sessions live at ``now``, through the owner index: the cost
        is what the owner holds."""
        query = self.statements.list_owner
        params = {"owner": owner, "now": now}

        def work(conn: Connection) -> list[str]:
            return [row[0] for row in conn.sk_cursor.execute(query, params)]

        return self._run("list", work)

    @hookimpl
    def sessionkeeper_count_owner(self, owner: str, now: int) -> int:
        """How many of ``owner``'s sessions are live at ``now`` (the owner index)."""
        row = self._one("count", self.statements.count_owner, {"owner": owner, "now": now})
        return int(row[0]) if row else 0

    @hookimpl
    def sessionkeeper_delete_owner(self, owner: str) -> int:
        """Delete every row of ``owner``, expired ones included, in one ``DELETE`` through the
        owner index; return how many. Every row committed before the statement began is
        deleted (a row being rewritten meanwhile is re-checked once its writer commits). Not
        retried after a lost connection."""
        query = self.statements.delete_owner

        def work(conn: Connection) -> int:
            return conn.sk_cursor.execute(query, (owner,)).rowcount

        return int(self._run("delete_owner", work, write=True, retry=False))

    @hookimpl
    def sessionkeeper_iter_sessions(self) -> Iterator[Session]:
        """Every stored session, expired ones included, in id order, :data:`PAGE_SIZE` rows per
        round trip (keyset paging on the primary key: bounded memory, no long transaction)."""
        query = self.statements.page
        if self._pool is None:
            self._refuse("read sessions")

        def generate() -> Iterator[Session]:
            after = ""
            while True:

                def work(conn: Connection, after: str = after) -> list[Any]:
                    return conn.sk_cursor.execute(query, (after, PAGE_SIZE)).fetchall()

                rows = self._run("iter_sessions", work)
                for session_id, record, last_accessed, _deadline, version, *_ in rows:
                    yield self._decode(session_id, record, last_accessed, version)
                if len(rows) < PAGE_SIZE:
                    return
                after = rows[-1][0]

        return generate()

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        """Remove the sessions whose deadline is before ``now``; return how many.

        Batches of :data:`CLEANUP_BATCH` rows, each its own transaction, claimed through the
        deadline index with ``FOR UPDATE SKIP LOCKED``: the cost is what expired, and sweepers
        in other processes or hosts take other rows instead of waiting or counting twice.
        """
        query = self.statements.cleanup
        params = (now, CLEANUP_BATCH)
        removed = 0

        def work(conn: Connection) -> int:
            return conn.sk_cursor.execute(query, params).rowcount

        try:
            while True:
                done = self._run("cleanup_expired", work, write=True)
                removed += done
                if done < CLEANUP_BATCH:
                    return removed
        finally:
            with self._counter_lock:
                self._removed += removed

    @hookimpl
    def sessionkeeper_stats(self) -> dict[str, Any]:
        """``server``, ``table``, ``schema_version``, ``stored`` (expired included),
        ``expiring`` (sessions with a timeout), ``synchronous_commit``, the pool's figures
        (``pool_size``, ``pool_available``, ``connections_lost``) and ``cleanup_removed`` (by
        this backend). Never a password or the DSN."""
        query = self.statements.stats

        def work(conn: Connection) -> Any:
            return conn.execute(query).fetchone()

        stored, expiring = self._run("stats", work)
        lender = self._pool
        pool_stats = lender.pool.get_stats() if lender is not None else {}
        kept = lender.kept if lender is not None else 0
        return {
            "server": self.server,
            "table": self.table,
            "schema_version": LATEST_VERSION,
            "stored": int(stored),
            "expiring": int(expiring),
            "synchronous_commit": self.options.synchronous_commit,
            "pool_size": int(pool_stats.get("pool_size", 0)),
            "pool_available": int(pool_stats.get("pool_available", 0)) + kept,
            "connections_lost": int(pool_stats.get("connections_lost", 0)),
            "cleanup_removed": self._removed,
        }

    @hookimpl
    def sessionkeeper_check(self, repair: bool) -> dict[str, Any]:
        """``sessionkeeper check``: the schema version and every row (the record decodes under
        its own id, the columns agree with it); with ``repair``, damaged rows move to
        ``<table>_quarantine`` and wrong deadlines are recomputed (see
        :mod:`sessionkeeper_postgres._check`). Connects for the check alone."""
        conn = self._connect_direct("check")
        try:
            with conn:
                schema, _identity = self._inspect(conn)
                self._schema_name = schema
                statements = Statements(schema, self.options.table_name)
                version = self._schema_version(conn, statements)
                report = check_table(conn, statements, version, repair=repair)
        except psycopg.Error as exc:
            raise self._failed("check", exc) from exc
        report["server"] = self.server
        report["table"] = self.table
        return report
