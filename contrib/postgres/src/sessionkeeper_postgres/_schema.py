"""The table, its versioned schema, and every statement the backend sends (pure: no I/O here).

One table per ``table_name``::

    id            text COLLATE "C" PRIMARY KEY   -- the session id (byte order: keyset paging)
    record        bytea NOT NULL                 -- the core codec's record (msgpack, never pickle)
    last_accessed bigint NOT NULL                -- authoritative; a touch moves only this column
    deadline      bigint NULL                    -- last_accessed + timeout_ms; NULL = never
    version       bigint NOT NULL DEFAULT 1      -- +1 per store of an existing id
    owner         text NULL                      -- for the owner index (sessions gain owner)

with a partial index on ``deadline`` (cleanup costs what expired) and one on ``owner``. A touch
updates ``last_accessed`` and ``deadline`` in one ``UPDATE … RETURNING`` (one round trip, never
backwards, never a resurrection); the record's own ``last_accessed`` is what the session had
when it was last stored, and readers take the later of the two.

The schema version of each table is kept in ``sessionkeeper_meta`` beside it. Migrations are
forward-only: :data:`MIGRATIONS` lists, for each version, the statements that take a table from
the version before to it; a table of a newer version than this code knows is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Final

from psycopg import sql

__all__ = [
    "CLEANUP_BATCH",
    "LATEST_VERSION",
    "MAX_BIGINT",
    "META_TABLE",
    "MIGRATIONS",
    "PAGE_SIZE",
    "Statements",
    "deadline_of",
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


def deadline_of(last_accessed: int, timeout_ms: int | None) -> int | None:
    """The ``deadline`` column of a session: ``last_accessed + timeout_ms`` (capped at the
    largest bigint), ``None`` without a timeout. Expired at ``now`` ⇔ ``deadline < now``."""
    if timeout_ms is None:
        return None
    return min(last_accessed + timeout_ms, MAX_BIGINT)


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


#: ``(version, statements)`` pairs in order: applying each in turn builds the latest schema.
MIGRATIONS: Final[tuple[tuple[int, Migration], ...]] = ((1, _version_1),)
#: The schema version this code writes and reads.
LATEST_VERSION: Final = MIGRATIONS[-1][0]


class Statements:
    """Every statement of one table, each rendered once (to bytes) when first used.

    :param schema: the table's schema.
    :param table: the table's name.
    """

    def __init__(self, schema: str, table: str) -> None:
        self.schema = schema
        self.table = table

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
            .format(table=self.qualified, meta=self.meta, quarantine=self.quarantine)
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
        return self._render("SELECT record, last_accessed FROM {table} WHERE id = %s")

    @cached_property
    def store(self) -> bytes:
        return self._render(
            "INSERT INTO {table} AS s (id, record, last_accessed, deadline) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, "
            "last_accessed = EXCLUDED.last_accessed, deadline = EXCLUDED.deadline, "
            "version = s.version + 1"
        )

    @cached_property
    def store_many(self) -> bytes:
        return self._render(
            "INSERT INTO {table} AS s (id, record, last_accessed, deadline) "
            "SELECT * FROM unnest(%s::text[], %s::bytea[], %s::bigint[], %s::bigint[]) "
            "ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, "
            "last_accessed = EXCLUDED.last_accessed, deadline = EXCLUDED.deadline, "
            "version = s.version + 1"
        )

    @cached_property
    def touch(self) -> bytes:
        # SET reads the old row on every right-hand side: the deadline moves by as much as
        # last_accessed does (never back), capped at the largest bigint.
        return self._render(
            "UPDATE {table} SET last_accessed = GREATEST(last_accessed, %(at)s::bigint), "
            "deadline = LEAST(deadline::numeric + GREATEST(%(at)s::bigint - last_accessed, 0), "
            "9223372036854775807)::bigint "  # MAX_BIGINT
            "WHERE id = %(id)s RETURNING record, last_accessed"
        )

    @cached_property
    def delete(self) -> bytes:
        return self._render("DELETE FROM {table} WHERE id = %s")

    @cached_property
    def list_live(self) -> bytes:
        return self._render("SELECT id FROM {table} WHERE deadline IS NULL OR deadline >= %s")

    @cached_property
    def count_live(self) -> bytes:
        return self._render("SELECT count(*) FROM {table} WHERE deadline IS NULL OR deadline >= %s")

    @cached_property
    def page(self) -> bytes:
        return self._render(
            "SELECT id, record, last_accessed, deadline FROM {table} WHERE id > %s "
            "ORDER BY id LIMIT %s"
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
    def fix_deadline(self) -> bytes:
        return self._render("UPDATE {table} SET deadline = %s WHERE id = %s")
