"""The table, its versioned schema, and every statement the backend sends (pure: no I/O here).

One table per ``table_name``::

    id                text COLLATE "C" PRIMARY KEY -- the session id (byte order: keyset paging)
    record            bytea NOT NULL               -- the core codec's record (msgpack, no pickle)
    last_accessed     bigint NOT NULL              -- authoritative; a touch moves only this column
    deadline          bigint NULL                  -- the session's expires_at; NULL = never
    version           bigint NOT NULL DEFAULT 1    -- authoritative: what conditional writes check
    owner             text NULL                    -- the record's owner: the owner index
    absolute_deadline bigint NULL                  -- created_at + absolute_timeout_ms (schema 2)

with a partial index on ``deadline`` (cleanup costs what expired) and one on ``owner`` (listing,
counting and deleting by owner cost what the owner holds). ``deadline`` is the earlier of the
idle deadline (``last_accessed + timeout_ms``) and ``absolute_deadline``: a session is expired
at ``now`` exactly when ``deadline < now``. A touch updates ``last_accessed`` and ``deadline``
in one ``UPDATE … RETURNING`` (one round trip, never backwards, never past
``absolute_deadline``, never a resurrection). The record's own ``last_accessed`` and
``version`` are what the session had when it was last written; readers take the columns.

Conditional writes are one statement that checks and writes: ``UPDATE … WHERE version =
$expected AND <live>`` for a version read, ``INSERT … ON CONFLICT (id) DO UPDATE … WHERE
<expired>`` for "only if absent" (an expired row counts as absent), and the row count or
``RETURNING`` says whether it happened.

The schema version of each table is kept in ``sessionkeeper_meta`` beside it. Migrations are
forward-only: :data:`MIGRATIONS` lists, for each version, the statements that take a table from
the version before to it; a table of a newer version than this code knows is refused. Version 2
adds ``absolute_deadline`` (a nullable column: instant, no rewrite); rows written under version
1 keep working as they are (no absolute timeout, their version and owner columns as written).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Final

from psycopg import sql

from sessionkeeper import Session

__all__ = [
    "CLEANUP_BATCH",
    "COLUMNS",
    "LATEST_VERSION",
    "MAX_BIGINT",
    "META_TABLE",
    "MIGRATIONS",
    "PAGE_SIZE",
    "Statements",
    "deadlines",
]

#: The largest value of a PostgreSQL ``bigint``: deadlines past it are stored as it.
MAX_BIGINT: Final = 2**63 - 1
#: The table, in each schema used, that records each session table's schema version.
META_TABLE: Final = "sessionkeeper_meta"
#: Rows deleted per statement by ``cleanup_expired`` (each batch is its own transaction).
CLEANUP_BATCH: Final = 1_000
#: Rows read per round trip by ``iter_sessions`` and ``check``.
PAGE_SIZE: Final = 500

Migration = Callable[[sql.Identifier, str], list[sql.Composed]]


def deadlines(session: Session) -> tuple[int | None, int | None]:
    """The ``deadline`` and ``absolute_deadline`` columns of ``session``: its ``expires_at``
    (the earlier of the idle and the absolute deadline) and ``created_at +
    absolute_timeout_ms``, each capped at the largest bigint (``None``: no such limit)."""
    timeout = session.timeout_ms
    absolute = session.absolute_timeout_ms
    idle = None if timeout is None else min(session.last_accessed + timeout, MAX_BIGINT)
    if absolute is None:
        return idle, None
    limit = min(session.created_at + absolute, MAX_BIGINT)
    return (limit if idle is None or limit < idle else idle), limit


def _version_1(table: sql.Identifier, name: str) -> list[sql.Composed]:
    deadline_index = sql.Identifier(f"{name}_deadline_idx")
    owner_index = sql.Identifier(f"{name}_owner_idx")
    return [
        sql.SQL(
            'CREATE TABLE {table} (id text COLLATE "C" PRIMARY KEY, record bytea NOT NULL, '
            "last_accessed bigint NOT NULL, deadline bigint, "
            "version bigint NOT NULL DEFAULT 1, owner text)"
        ).format(table=table),
        sql.SQL("CREATE INDEX {index} ON {table} (deadline) WHERE deadline IS NOT NULL").format(
            index=deadline_index, table=table
        ),
        sql.SQL("CREATE INDEX {index} ON {table} (owner) WHERE owner IS NOT NULL").format(
            index=owner_index, table=table
        ),
    ]


def _version_2(table: sql.Identifier, name: str) -> list[sql.Composed]:
    # A nullable column without a default: PostgreSQL records it in the catalogue only (no
    # table rewrite, whatever the size); the rows of version 1 have no absolute timeout.
    return [sql.SQL("ALTER TABLE {table} ADD COLUMN absolute_deadline bigint").format(table=table)]


#: ``(version, statements)`` pairs in order: applying each in turn builds the latest schema.
MIGRATIONS: Final[tuple[tuple[int, Migration], ...]] = ((1, _version_1), (2, _version_2))
#: The schema version this code writes and reads.
LATEST_VERSION: Final = MIGRATIONS[-1][0]
#: The columns every write sets, in the order of :meth:`Statements.row` parameters.
COLUMNS: Final = "id, record, last_accessed, deadline, absolute_deadline, version, owner"
#: ``deadline`` not before ``now`` (the session is live), for a statement's ``%(now)s``.
_LIVE: Final = "(deadline IS NULL OR deadline >= %(now)s)"
#: What a write sets on conflict, but the version.
_SET: Final = (
    "record = EXCLUDED.record, last_accessed = EXCLUDED.last_accessed, "
    "deadline = EXCLUDED.deadline, absolute_deadline = EXCLUDED.absolute_deadline, "
    "owner = EXCLUDED.owner"
)
_VALUES: Final = (
    "VALUES (%(id)s, %(record)s, %(last_accessed)s, %(deadline)s, %(absolute_deadline)s, "
    "%(version)s, %(owner)s)"
)
#: The fragments the statement templates name: ``{columns}``, ``{values}`` (``{values_new}``
#: with version 1), ``{set}`` and ``{live}`` (``{live_s}`` on the row aliased ``s``).
_FRAGMENTS: Final = {
    "columns": sql.SQL(COLUMNS),
    "values": sql.SQL(_VALUES),
    "values_new": sql.SQL(_VALUES.replace("%(version)s", "1")),
    "set": sql.SQL(_SET),
    "live": sql.SQL(_LIVE),
    "live_s": sql.SQL(_LIVE.replace("deadline", "s.deadline")),
}


class Statements:
    """Every statement of one table, each rendered once (to bytes) when first used.

    :param schema: the table's schema.
    :param table: the table's name.
    """

    def __init__(self, schema: str, table: str) -> None:
        self.schema = schema
        self.table = table
        #: The table's schema version: older than :data:`LATEST_VERSION` only when a table
        #: not migrated yet is opened read-only (the reads then name only its columns).
        self.version = LATEST_VERSION

    @property
    def qualified(self) -> sql.Identifier:
        """``"schema"."table"``."""
        return sql.Identifier(self.schema, self.table)

    @property
    def meta(self) -> sql.Identifier:
        """``"schema"."sessionkeeper_meta"``."""
        return sql.Identifier(self.schema, META_TABLE)

    @property
    def quarantine(self) -> sql.Identifier:
        """``"schema"."<table>_quarantine"``, where ``check --repair`` moves damaged rows."""
        return sql.Identifier(self.schema, f"{self.table}_quarantine")

    def _render(self, template: str) -> bytes:
        return (
            sql.SQL(template)
            .format(table=self.qualified, meta=self.meta, quarantine=self.quarantine, **_FRAGMENTS)
            .as_bytes(None)
        )

    def migration(self, version: int) -> list[sql.Composed]:
        """The statements that take this table to ``version`` from the version before."""
        for number, build in MIGRATIONS:
            if number == version:
                return build(self.qualified, self.table)
        raise KeyError(version)

    # -- the hot paths ----------------------------------------------------------------------------

    @cached_property
    def fetch(self) -> bytes:
        return self._render("SELECT record, last_accessed, version FROM {table} WHERE id = %s")

    @cached_property
    def store(self) -> bytes:
        # Exactly as given, version included (import and migrate carry versions as data).
        return self._render(
            "INSERT INTO {table} AS s ({columns}) {values} "
            "ON CONFLICT (id) DO UPDATE SET {set}, version = EXCLUDED.version"
        )

    @cached_property
    def store_many(self) -> bytes:
        return self._render(
            "INSERT INTO {table} AS s ({columns}) "
            "SELECT * FROM unnest(%s::text[], %s::bytea[], %s::bigint[], %s::bigint[], "
            "%s::bigint[], %s::bigint[], %s::text[]) "
            "ON CONFLICT (id) DO UPDATE SET {set}, version = EXCLUDED.version"
        )

    @cached_property
    def store_counted(self) -> bytes:
        # An unconditional write on an atomic manager: the live version + 1, or 1 over an
        # expired row or none; RETURNING says which.
        return self._render(
            "INSERT INTO {table} AS s ({columns}) {values_new} ON CONFLICT (id) DO UPDATE SET "
            "{set}, version = CASE WHEN {live_s} THEN s.version + 1 ELSE 1 END "
            "RETURNING version"
        )

    @cached_property
    def store_if_absent(self) -> bytes:
        # if_version=0: insert, or replace a row that has expired; a live row is left alone
        # (locked, not written) and nothing is returned.
        return self._render(
            "INSERT INTO {table} AS s ({columns}) {values} ON CONFLICT (id) DO UPDATE SET "
            "{set}, version = EXCLUDED.version WHERE s.deadline < %(now)s RETURNING version"
        )

    @cached_property
    def store_if_version(self) -> bytes:
        # if_version=N: only the live row at version N is written (an UPDATE: a row that is
        # gone is never recreated). Under READ COMMITTED a row changed by a concurrent write
        # is re-checked against its newest version before this one writes it.
        return self._render(
            "UPDATE {table} SET record = %(record)s, last_accessed = %(last_accessed)s, "
            "deadline = %(deadline)s, absolute_deadline = %(absolute_deadline)s, "
            "owner = %(owner)s, version = %(version)s "
            "WHERE id = %(id)s AND version = %(expected)s AND {live}"
        )

    @cached_property
    def live_version(self) -> bytes:
        """The version of the live row (what a refused conditional write reports)."""
        return self._render("SELECT version FROM {table} WHERE id = %(id)s AND {live}")

    @cached_property
    def touch(self) -> bytes:
        # SET reads the old row on every right-hand side: the deadline moves by as much as
        # last_accessed does (never back), capped at the largest bigint and never past the
        # absolute deadline (LEAST ignores a NULL one). min(idle, absolute) + d capped at
        # absolute is min(idle + d, absolute): the idle deadline need not be stored.
        return self._render(
            "UPDATE {table} SET last_accessed = GREATEST(last_accessed, %(at)s::bigint), "
            "deadline = LEAST(LEAST(deadline::numeric + GREATEST(%(at)s::bigint - "
            "last_accessed, 0), 9223372036854775807)::bigint, absolute_deadline) "  # MAX_BIGINT
            "WHERE id = %(id)s RETURNING record, last_accessed, version"
        )

    @cached_property
    def delete(self) -> bytes:
        return self._render("DELETE FROM {table} WHERE id = %s")

    @cached_property
    def take(self) -> bytes:
        return self._render(
            "DELETE FROM {table} WHERE id = %s RETURNING record, last_accessed, version, deadline"
        )

    @cached_property
    def rotate_remove(self) -> bytes:
        # The first statement of a rotation's transaction: the live row, removed (and locked
        # until the commit, so that a concurrent write of the old id waits, then finds it gone).
        return self._render(
            "DELETE FROM {table} WHERE id = %(id)s AND {live} "
            "RETURNING record, last_accessed, version"
        )

    @cached_property
    def insert(self) -> bytes:
        # The second: the session under its fresh id (an id already there is an error, never
        # overwritten).
        return self._render("INSERT INTO {table} ({columns}) {values}")

    @cached_property
    def list_live(self) -> bytes:
        return self._render("SELECT id FROM {table} WHERE deadline IS NULL OR deadline >= %s")

    @cached_property
    def count_live(self) -> bytes:
        return self._render("SELECT count(*) FROM {table} WHERE deadline IS NULL OR deadline >= %s")

    @cached_property
    def list_owner(self) -> bytes:
        return self._render("SELECT id FROM {table} WHERE owner = %(owner)s AND {live}")

    @cached_property
    def count_owner(self) -> bytes:
        return self._render("SELECT count(*) FROM {table} WHERE owner = %(owner)s AND {live}")

    @cached_property
    def delete_owner(self) -> bytes:
        return self._render("DELETE FROM {table} WHERE owner = %s")

    @cached_property
    def page(self) -> bytes:
        if self.version < 2:  # no absolute_deadline column yet: none of its rows has one
            return self._render(
                "SELECT id, record, last_accessed, deadline, version, owner, NULL::bigint "
                "FROM {table} WHERE id > %s ORDER BY id LIMIT %s"
            )
        return self._render(
            "SELECT id, record, last_accessed, deadline, version, owner, absolute_deadline "
            "FROM {table} WHERE id > %s ORDER BY id LIMIT %s"
        )

    @cached_property
    def cleanup(self) -> bytes:
        # The ids are claimed through the deadline index in deadline order, locked and skipped
        # when another sweeper (or writer) holds them, then deleted through the primary key:
        # several processes or hosts sweep at once without waiting on or double-counting rows.
        return self._render(
            "DELETE FROM {table} WHERE id = ANY(ARRAY("
            "SELECT id FROM {table} WHERE deadline < %s ORDER BY deadline LIMIT %s "
            "FOR UPDATE SKIP LOCKED))"
        )

    @cached_property
    def stats(self) -> bytes:
        return self._render("SELECT count(*), count(deadline) FROM {table}")

    # -- schema bookkeeping -----------------------------------------------------------------------

    @cached_property
    def create_meta(self) -> bytes:
        return self._render(
            "CREATE TABLE IF NOT EXISTS {meta} (table_name text PRIMARY KEY, "
            "schema_version integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
        )

    @cached_property
    def read_version(self) -> bytes:
        return self._render("SELECT schema_version FROM {meta} WHERE table_name = %s")

    @cached_property
    def write_version(self) -> bytes:
        return self._render(
            "INSERT INTO {meta} (table_name, schema_version) VALUES (%s, %s) "
            "ON CONFLICT (table_name) DO UPDATE SET schema_version = EXCLUDED.schema_version, "
            "updated_at = now()"
        )

    @cached_property
    def create_quarantine(self) -> bytes:
        return self._render(
            "CREATE TABLE IF NOT EXISTS {quarantine} (id text NOT NULL, record bytea, "
            "last_accessed bigint, problem text NOT NULL, "
            "quarantined_at timestamptz NOT NULL DEFAULT now())"
        )

    @cached_property
    def quarantine_row(self) -> bytes:
        return self._render(
            "WITH moved AS (DELETE FROM {table} WHERE id = %s RETURNING id, record, "
            "last_accessed) INSERT INTO {quarantine} (id, record, last_accessed, problem) "
            "SELECT id, record, last_accessed, %s FROM moved"
        )

    @cached_property
    def insert_quarantine(self) -> bytes:
        return self._render(
            "INSERT INTO {quarantine} (id, record, last_accessed, problem) VALUES (%s, %s, %s, %s)"
        )

    @cached_property
    def fix_columns(self) -> bytes:
        return self._render(
            "UPDATE {table} SET deadline = %s, absolute_deadline = %s, owner = %s WHERE id = %s"
        )
