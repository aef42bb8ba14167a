"""The backend's lifecycle: open (check the server, create or migrate the table, open the
pool), close, the store's identity and ``sessionkeeper check``, on connections of its own.

The table's schema is versioned in ``<schema>.sessionkeeper_meta``; migrations run forward
only, one migrator per schema at a time (an advisory lock), and a newer schema than this
release knows is refused. A table opened read-only is never created or migrated: a schema-1
table, a migration's source, reads as it is.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from sessionkeeper import StorageError
from sessionkeeper.backend import hookimpl

from ._check import check_table
from ._lender import Lender
from ._schema import LATEST_VERSION, Statements
from ._sync import Connection, SyncDriver

__all__ = ["Lifecycle"]


class Lifecycle(SyncDriver):
    """``sessionkeeper_open``, ``_close``, ``_identity`` and ``_check`` (see the module)."""

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
