"""Shared mode's layout beside sqlitedict's table, and every statement it sends (no I/O here).

The sessions stay in sqlitedict's table, ``"<table>" (key TEXT PRIMARY KEY, value BLOB)``, so a
file opens in either mode and data written by either reads in the other. What shared mode
needs to find rows without decoding them lives beside it, in the same file, and is written in
the same transaction as the row:

``"<table>__sk_index" (key TEXT PRIMARY KEY, expires_at INTEGER, owner TEXT, undecodable
INTEGER) WITHOUT ROWID``
    one entry per row of the table: the session's ``expires_at`` (the last live millisecond,
    ``NULL``: never; capped at 2**63-1) and ``owner``, with partial indexes on both, so that
    a sweep costs what has expired and an owner's sessions cost what the owner holds.
    ``undecodable = 1`` marks a row that is not a session (foreign or damaged): never listed,
    never swept, never an owner's.

``sessionkeeper_meta (name TEXT PRIMARY KEY, value)``
    per table (names are ``<table, lower-cased>:<what>``): ``layout`` (:data:`LAYOUT`, the
    version of this layout), ``index`` (``"valid"`` while the index matches the table) and
    ``sweep`` (the sweep lease, :mod:`._lease`).

A single owner writes only the table. It removes the ``index`` marker when it opens the file
for writing (:func:`invalidate_index`, called by :class:`~._writer.Writer`), before its first
write; the next shared open finds the marker gone and rebuilds the index from the rows in one
transaction. A shared open also compares the two row counts, which catches a file that rows
were added to or removed from by something else (``check --repair``, a script).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Final

from sessionkeeper import Session

from ._sql import RowError, decode_row, quote, table_exists

__all__ = [
    "INDEX_SUFFIX",
    "LAYOUT",
    "MAX_TIME",
    "META_TABLE",
    "SharedStatements",
    "expires_column",
    "index_entry",
    "invalidate_index",
]

#: The table that records each session table's layout, index state and sweep lease.
META_TABLE: Final = "sessionkeeper_meta"
#: Appended to the session table's name to name its index table.
INDEX_SUFFIX: Final = "__sk_index"
#: The layout version this code writes and reads.
LAYOUT: Final = 1
#: The largest SQLite integer: deadlines past it are stored as it.
MAX_TIME: Final = 2**63 - 1
#: Rows written per ``executemany`` when the index is rebuilt.
REBUILD_BATCH: Final = 2_048


def meta_name(table: str, what: str) -> str:
    """The ``sessionkeeper_meta`` key of ``what`` for ``table`` (SQLite ignores ASCII case)."""
    return f"{table.lower()}:{what}"


def expires_column(session: Session) -> int | None:
    """The ``expires_at`` column of ``session``: its last live millisecond, capped at the
    largest SQLite integer; ``None`` when it never expires."""
    expires = session.expires_at
    return expires if expires is None or expires < MAX_TIME else MAX_TIME


def index_entry(session: Session) -> tuple[str, int | None, str | None]:
    """``(key, expires_at, owner)`` of ``session``'s index entry."""
    return session.id, expires_column(session), session.owner


def invalidate_index(connection: sqlite3.Connection, table: str) -> None:
    """Mark ``table``'s shared-mode index stale (a single owner is about to write the table
    alone): the next shared open rebuilds it. Nothing when the file was never opened shared."""
    if table_exists(connection, META_TABLE):
        connection.execute(
            f"DELETE FROM {META_TABLE} WHERE name = ?",  # noqa: S608
            (meta_name(table, "index"),),
        )


class SharedStatements:
    """The SQL of one table in shared mode, built once (names quoted; values as parameters)."""

    def __init__(self, table: str) -> None:
        self.table = table
        t = quote(table)
        ix = quote(table + INDEX_SUFFIX)
        self.index_table = table + INDEX_SUFFIX
        self.layout_key = meta_name(table, "layout")
        self.index_key = meta_name(table, "index")
        self.sweep_key = meta_name(table, "sweep")
        live = "(expires_at IS NULL OR expires_at >= ?)"
        self.schema = (
            f"CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, value BLOB)",
            f"CREATE TABLE IF NOT EXISTS {META_TABLE} (name TEXT PRIMARY KEY, value)",
            f"CREATE TABLE IF NOT EXISTS {ix} (key TEXT PRIMARY KEY, expires_at INTEGER, "
            "owner TEXT, undecodable INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID",
            f"CREATE INDEX IF NOT EXISTS {quote(table + '__sk_expires')} ON {ix} (expires_at) "
            "WHERE expires_at IS NOT NULL",
            f"CREATE INDEX IF NOT EXISTS {quote(table + '__sk_owner')} ON {ix} (owner) "
            "WHERE owner IS NOT NULL",
        )
        # -- the table --
        self.select = f"SELECT value FROM {t} WHERE key = ?"  # noqa: S608
        self.upsert = (
            f"INSERT INTO {t} (key, value) VALUES (?, ?) "  # noqa: S608
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        )
        self.update_value = f"UPDATE {t} SET value = ? WHERE key = ?"  # noqa: S608
        self.delete = f"DELETE FROM {t} WHERE key = ?"  # noqa: S608
        self.select_page = (
            f"SELECT rowid, key, value FROM {t} WHERE rowid > ? ORDER BY rowid LIMIT ?"  # noqa: S608
        )
        self.select_all = f"SELECT key, value FROM {t}"  # noqa: S608
        self.count_rows = f"SELECT count(*) FROM {t}"  # noqa: S608
        # -- the index --
        self.index_put = (
            f"INSERT OR REPLACE INTO {ix} (key, expires_at, owner, undecodable) "  # noqa: S608
            "VALUES (?, ?, ?, 0)"
        )
        self.index_row = (
            f"INSERT OR REPLACE INTO {ix} (key, expires_at, owner, undecodable) "  # noqa: S608
            "VALUES (?, ?, ?, ?)"
        )
        self.index_bad = (
            f"INSERT OR REPLACE INTO {ix} (key, expires_at, owner, undecodable) "  # noqa: S608
            "VALUES (?, NULL, NULL, 1)"
        )
        self.index_expires = f"UPDATE {ix} SET expires_at = ? WHERE key = ?"  # noqa: S608
        self.index_delete = f"DELETE FROM {ix} WHERE key = ?"  # noqa: S608
        self.index_clear = f"DELETE FROM {ix}"  # noqa: S608
        self.count_index = f"SELECT count(*) FROM {ix}"  # noqa: S608
        self.list_live = f"SELECT key FROM {ix} WHERE undecodable = 0 AND {live}"  # noqa: S608
        self.count_live = f"SELECT count(*) FROM {ix} WHERE undecodable = 0 AND {live}"  # noqa: S608
        self.count_undecodable = f"SELECT count(*) FROM {ix} WHERE undecodable = 1"  # noqa: S608
        self.list_owner = f"SELECT key FROM {ix} WHERE owner = ? AND {live}"  # noqa: S608
        self.count_owner = f"SELECT count(*) FROM {ix} WHERE owner = ? AND {live}"  # noqa: S608
        self.owner_keys = f"SELECT key FROM {ix} WHERE owner = ?"  # noqa: S608
        self.expired = f"SELECT key FROM {ix} WHERE expires_at < ? ORDER BY expires_at LIMIT ?"  # noqa: S608
        # -- meta --
        self.meta_get = f"SELECT value FROM {META_TABLE} WHERE name = ?"  # noqa: S608
        self.meta_put = f"INSERT OR REPLACE INTO {META_TABLE} (name, value) VALUES (?, ?)"  # noqa: S608
        self.meta_delete = f"DELETE FROM {META_TABLE} WHERE name = ?"  # noqa: S608


def index_rows(
    rows: Iterable[tuple[object, object]],
) -> Iterator[tuple[object, int | None, str | None, int]]:
    """The index entry ``(key, expires_at, owner, undecodable)`` of each ``(key, value)``
    row: a row that is not a session gets ``undecodable = 1`` (and no deadline, no owner)."""
    for key, value in rows:
        try:
            session = decode_row(key, value)
        except RowError:
            yield key, None, None, 1
            continue
        _, expires, owner = index_entry(session)
        yield key, expires, owner, 0
