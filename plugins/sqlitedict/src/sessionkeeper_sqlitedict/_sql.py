"""The file format and the SQLite plumbing shared by the backend and ``check``.

The table is exactly what ``sqlitedict.SqliteDict`` creates and reads::

    CREATE TABLE "<table_name>" (key TEXT PRIMARY KEY, value BLOB)

with the session id as ``key`` and the core's versioned msgpack record
(:func:`sessionkeeper.backend.encode_session`) as ``value``: a plain
``SqliteDict(file, tablename=..., decode=sessionkeeper.backend.decode_session)`` reads the file.
Rows are written with an upsert (``ON CONFLICT(key) DO UPDATE``), which keeps a row's ``rowid`` when
it is replaced, so a read-only iteration in ``rowid`` order sees each session once.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final, TypeVar

from sessionkeeper import Session
from sessionkeeper.backend import CodecError, decode_session

__all__ = [
    "RowError",
    "Statements",
    "close_connection",
    "connect_read_only",
    "connect_writer",
    "decode_row",
    "describe_key",
    "file_problem",
    "hot_journal_hint",
    "mode_problem",
    "paged_rows",
    "quote",
    "table_columns",
    "table_exists",
]

log = logging.getLogger("sessionkeeper.sqlitedict")

#: The columns sqlitedict gives its tables, in order.
COLUMNS: Final = ("key", "value")


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier (double quotes doubled, as sqlitedict does)."""
    return '"' + name.replace('"', '""') + '"'


class Statements:
    """The SQL of one table, built once.

    The table name is interpolated, quoted by :func:`quote`; the options class has already
    restricted it to letters, digits and underscores. Values always go through parameters.
    """

    __slots__ = (
        "count",
        "create",
        "delete",
        "select",
        "select_all",
        "select_batch",
        "table",
        "upsert",
    )

    def __init__(self, table: str) -> None:
        #: The table's name, as configured.
        self.table = table
        name = quote(table)
        self.create = f"CREATE TABLE IF NOT EXISTS {name} (key TEXT PRIMARY KEY, value BLOB)"
        self.select = f"SELECT value FROM {name} WHERE key = ?"  # noqa: S608
        self.select_all = f"SELECT key, value FROM {name}"  # noqa: S608
        self.select_batch = (
            f"SELECT rowid, key, value FROM {name} WHERE rowid > ? ORDER BY rowid LIMIT ?"  # noqa: S608
        )
        self.upsert = (
            f"INSERT INTO {name} (key, value) VALUES (?, ?) "  # noqa: S608
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        )
        self.delete = f"DELETE FROM {name} WHERE key = ?"  # noqa: S608
        self.count = f"SELECT count(*) FROM {name}"  # noqa: S608


C = TypeVar("C", bound=sqlite3.Connection)


def connect_writer(path: Path, *, busy_timeout_ms: int, factory: type[C]) -> C:
    """A read-write connection in autocommit mode (transactions are explicit), of class
    ``factory``."""
    connection = sqlite3.connect(
        os.fspath(path),
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=False,
        factory=factory,
    )
    return connection


def connect_read_only(path: Path, *, busy_timeout_ms: int = 5_000) -> sqlite3.Connection:
    """A connection that cannot write: SQLite URI ``mode=ro``; the file must exist."""
    uri = path.resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(
        uri,
        uri=True,
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=False,
    )


def close_connection(
    connection: sqlite3.Connection, lock: threading.Lock, wait: float, where: str
) -> None:
    """Close ``connection`` once the statement holding ``lock`` is over, waiting ``wait`` s
    at most: one stuck in the kernel (an fsync) leaves the connection to the process's exit.
    Errors are logged, naming ``where``: closing never raises."""
    if not lock.acquire(timeout=wait):
        log.error("closing %s: a statement did not finish in %.0f s", where, wait)
        return
    try:
        connection.close()
    except sqlite3.Error:
        log.exception("closing %s failed", where)
    finally:
        lock.release()


def paged_rows(
    page: Callable[[int], list[tuple[int, object, object]]], size: int
) -> Iterator[tuple[object, object]]:
    """Every ``(key, value)`` of a table in ``rowid`` order, from ``page(after)``: the rows
    ``(rowid, key, value)`` after ``rowid`` ``after``, at most ``size`` of them (one read each:
    bounded memory, no long transaction)."""
    after = -(2**63)
    while True:
        rows = page(after)
        for rowid, key, value in rows:
            yield key, value
            after = rowid
        if len(rows) < size:
            return


def table_exists(connection: sqlite3.Connection, table: str) -> bool:
    """True when ``table`` exists in the connected file."""
    row = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return row is not None


def table_columns(connection: sqlite3.Connection, table: str) -> list[str]:
    """The column names of ``table``, in order."""
    return [row[1] for row in connection.execute(f"PRAGMA table_info({quote(table)})")]


class RowError(ValueError):
    """A row that is not a valid session; the message says which row and why."""

    def __init__(self, key: object, reason: str) -> None:
        super().__init__(f"key {describe_key(key)}: {reason}")
        self.key = key
        self.reason = reason


def describe_key(key: object) -> str:
    """A key for a message: ``'abc'`` for text, ``<bytes b'..'>`` for anything foreign."""
    if isinstance(key, str):
        shown = key if len(key) <= 80 else key[:77] + "..."
        return repr(shown)
    text = repr(key)
    return f"<{type(key).__name__} {text if len(text) <= 80 else text[:77] + '...'}>"


def decode_row(key: object, value: object) -> Session:
    """The session a row holds; :class:`RowError` when it is not one (never ``None``)."""
    if type(key) is not str:
        raise RowError(key, f"the key is {type(key).__name__}, not text (a foreign row)")
    if not isinstance(value, bytes):
        raise RowError(
            key, f"the value is {type(value).__name__}, not a sessionkeeper record (a foreign row)"
        )
    try:
        session = decode_session(value)
    except CodecError as exc:
        raise RowError(key, f"the value does not decode ({exc})") from None
    if session.id != key:
        raise RowError(key, f"the record holds session {session.id!r} under another key")
    return session


_KINDS: Final = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_problem(path: Path, *, if_missing: str = "") -> str | None:
    """Why ``path`` (links followed) is not a SQLite file a store can use, or ``None``.

    A missing file gives ``"<path> does not exist"`` plus ``if_missing``; a directory, a FIFO
    or a device is named as what it is. Opening a FIFO would block, and a directory is not
    "missing": the configured path is never trusted to be a regular file.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{path} does not exist{if_missing}"
    except NotADirectoryError:
        return f"{path}: a parent of it is not a directory"
    except OSError as exc:
        return f"{path} cannot be examined: {exc.strerror or exc}"
    return mode_problem(path, mode)


def mode_problem(path: Path, mode: int) -> str | None:
    """Why a file of mode ``mode`` at ``path`` is not a SQLite file, or ``None`` (regular)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return f"{path} is a directory, not a SQLite file: file_path must name a file"
    kind = next((name for test, name in _KINDS if test(mode)), "an unknown kind of file")
    return f"{path} is not a regular file (it is {kind}): file_path must name a SQLite file"


def hot_journal_hint(path: Path) -> str:
    """Advice when a read-only open fails because a crash left a rollback journal, else ``""``."""
    real = Path(os.path.realpath(path))  # SQLite names the journal after the real file
    journal = real.with_name(real.name + "-journal")
    try:
        if journal.stat().st_size == 0:
            return ""
    except OSError:
        return ""
    return (
        f" ({journal.name} holds a transaction interrupted by a crash; a read-only open cannot "
        "roll it back: open the store for writing once, or run `sessionkeeper check --repair`, "
        "with the owner stopped)"
    )


def salvage_note(problems: Sequence[str]) -> str:
    """A short summary of ``problems`` for an error message."""
    if not problems:
        return ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{problems[0]}{more}"
