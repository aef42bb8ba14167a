"""Reading a session table that may be damaged: what ``check`` reports and ``repair`` salvages.

The scan reads rows in ``rowid`` order; when a damaged page stops it, it probes forward for the
next readable row and goes on from there, and the table's key index is read too, so every key
whose row cannot be read is named. Each row is decoded and validated (:func:`check_sessions`).
Problems are collected in a :class:`Problems` (the first :data:`MAX_PROBLEMS` listed, all
counted). Used by :mod:`._check` (report) and :mod:`._repair` (salvage), read-only both times.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from ._sql import (
    COLUMNS,
    RowError,
    connect_read_only,
    decode_row,
    describe_key,
    hot_journal_hint,
    quote,
    table_columns,
)

__all__ = [
    "MAX_PROBLEMS",
    "Problems",
    "Result",
    "check_sessions",
    "fill_report",
    "integrity_check",
    "open_for_check",
    "same_table",
    "scan_rows",
    "schema_objects",
    "session_columns",
]

#: Problems listed in a report before the rest are only counted.
MAX_PROBLEMS: Final = 100
#: Rows per read of the scan.
SCAN_BATCH: Final = 1_000
_MIN_ROWID: Final = -(2**63)
_MAX_ROWID: Final = 2**63 - 1


class Problems:
    """The problems of one check: the first :data:`MAX_PROBLEMS` kept, all counted."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(text)

    def as_list(self) -> list[str]:
        extra = self.count - len(self.items)
        return self.items + ([f"... and {extra} more problem(s)"] if extra > 0 else [])


def scan_rows(
    connection: sqlite3.Connection,
    table: str,
    columns: list[str],
    problems: Problems,
) -> Iterator[tuple[Any, ...]]:
    """Every readable row of ``table`` as ``(rowid, *columns)``, skipping damaged pages."""
    names = ", ".join(quote(c) for c in columns)
    # Identifiers are quoted (they come from the file's own schema); values are parameters.
    select = f"SELECT rowid, {names} FROM {quote(table)} WHERE rowid >= ? ORDER BY rowid LIMIT ?"  # noqa: S608

    def readable(start: int) -> tuple[bool, int | None]:
        """Whether the first row at or after ``start`` reads (and its rowid, if any)."""
        try:
            row = connection.execute(select, (start, 1)).fetchone()
        except sqlite3.DatabaseError:
            return False, None
        return True, None if row is None else row[0]

    lower = _MIN_ROWID
    while True:
        last: int | None = None
        read = 0
        try:
            cursor = connection.execute(select, (lower, SCAN_BATCH))
            for row in cursor:
                read += 1
                last = row[0]
                yield row
        except sqlite3.DatabaseError as exc:
            # Reading from ``bad`` fails. Probe forward (1, 2, 4, ... rowids on) for a start
            # that reads, then narrow down to the smallest one, so that no readable row past
            # the damage is skipped. Every retry starts strictly after ``bad``.
            bad = last + 1 if last is not None else lower
            step, found = 1, None
            while bad + step <= _MAX_ROWID:
                if readable(bad + step)[0]:
                    found = bad + step
                    break
                step *= 2
            where = f"from rowid {bad}" if bad > _MIN_ROWID else "from the first row"
            if found is None:
                problems.add(
                    f"table {table!r}: rows {where} on cannot be read ({exc}); the rest of the "
                    "table is lost"
                )
                return
            low, high = bad, found  # reading from low fails, from high works
            while high - low > 1:
                middle = (low + high) // 2
                if readable(middle)[0]:
                    high = middle
                else:
                    low = middle
            _, first = readable(high)
            end = f"{high - 1}" if first is not None else "the end"
            problems.add(
                f"table {table!r}: rows with rowid {bad}..{end} cannot be read ({exc}); skipped"
            )
            if first is None:
                return
            lower = high
            continue
        if read < SCAN_BATCH or last is None:
            return
        lower = last + 1


def _keys_from_index(
    connection: sqlite3.Connection, table: str, problems: Problems
) -> Iterator[object]:
    """The keys the table's key index holds (it may be readable where the table is not)."""
    try:
        for (key,) in connection.execute(f"SELECT key FROM {quote(table)} ORDER BY key"):  # noqa: S608
            yield key
    except sqlite3.DatabaseError as exc:
        problems.add(f"table {table!r}: its key index cannot be read to the end ({exc})")


class Result:
    """What the scan of the session table found."""

    def __init__(self) -> None:
        self.checked = 0
        self.intact = 0
        self.undecodable = 0
        self.unreadable = 0
        self.quarantined: list[tuple[int, object, object, str]] = []


def check_sessions(
    connection: sqlite3.Connection,
    table: str,
    problems: Problems,
    *,
    keep: Callable[[int, str, bytes], None] | None,
    quarantine: bool,
) -> Result:
    """Decode every row of the session table; hand each intact one to ``keep``."""
    result = Result()
    seen: set[object] = set()

    def judge(rowid: int, key: object, value: object) -> None:
        try:
            session = decode_row(key, value)
        except RowError as exc:
            result.undecodable += 1
            problems.add(f"table {table!r}, rowid {rowid}, {exc}")
            if quarantine:
                result.quarantined.append((rowid, key, value, exc.reason))
            return
        result.intact += 1
        if keep is not None:
            assert isinstance(value, bytes)  # decode_row checked it
            keep(rowid, session.id, value)

    for rowid, key, value in scan_rows(connection, table, list(COLUMNS), problems):
        result.checked += 1
        seen.add(key)
        judge(rowid, key, value)
    # Keys the index knows but the scan did not reach: read each one, or name it as lost.
    for key in _keys_from_index(connection, table, problems):
        if key in seen:
            continue
        seen.add(key)
        result.checked += 1
        try:
            row = connection.execute(
                f"SELECT rowid, value FROM {quote(table)} WHERE key = ?",  # noqa: S608
                (key,),
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            result.unreadable += 1
            problems.add(
                f"table {table!r}, key {describe_key(key)}: the row cannot be read ({exc})"
            )
            continue
        if row is None:
            result.unreadable += 1
            problems.add(
                f"table {table!r}, key {describe_key(key)}: in the key index but not in the table"
            )
            continue
        judge(row[0], key, row[1])
    return result


def integrity_check(connection: sqlite3.Connection, problems: Problems) -> list[str]:
    try:
        messages = [str(row[0]) for row in connection.execute("PRAGMA integrity_check(100)")]
    except sqlite3.DatabaseError as exc:
        messages = [f"integrity_check failed: {exc}"]
    if messages != ["ok"]:
        for message in messages:
            problems.add(f"integrity_check: {message}")
    return messages


def schema_objects(connection: sqlite3.Connection) -> list[tuple[str, str, str | None]]:
    """``(type, name, sql)`` of every table, index, view and trigger but SQLite's own.

    SQLite's own objects are those whose name starts with ``sqlite_``, compared exactly: in
    ``LIKE 'sqlite_%'`` the ``_`` is a wildcard, which would also match ``sqliteapp``.
    """
    rows = connection.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE substr(name, 1, 7) != 'sqlite_' "
        "ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END, rowid"
    ).fetchall()
    return [(str(kind), str(name), sql) for kind, name, sql in rows]


def same_table(a: str, b: str) -> bool:
    """Whether two table names name one SQLite table (SQLite ignores ASCII case in names)."""
    return a.lower() == b.lower()


def open_for_check(path: Path, problems: Problems) -> sqlite3.Connection | None:
    """A read-only connection whose schema reads, or ``None`` (and a problem)."""
    try:
        connection = connect_read_only(path)
    except sqlite3.Error as exc:
        problems.add(f"cannot open {path}: {exc}")
        return None
    try:
        # Lets SQLite read a file shorter than its header says (a truncated file) instead of
        # refusing it whole; the connection is read-only, so nothing can be written anyway.
        connection.execute("PRAGMA writable_schema = ON")
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        connection.close()
        problems.add(f"{path} cannot be read as a SQLite database: {exc}{hot_journal_hint(path)}")
        return None
    return connection


def session_columns(
    connection: sqlite3.Connection, table: str, problems: Problems, report: dict[str, Any]
) -> bool:
    """True when ``table`` exists with sqlitedict's columns (else a note or a problem)."""
    try:
        columns = table_columns(connection, table)
    except sqlite3.DatabaseError as exc:
        problems.add(f"table {table!r}: its schema cannot be read ({exc})")
        return False
    if not columns:
        note = f"table {table!r} does not exist yet: no session was stored"
        if note not in report["notes"]:
            report["notes"].append(note)
        return False
    if tuple(columns) != COLUMNS:
        problems.add(f"table {table!r} has columns {columns}, not sqlitedict's (key, value)")
        return False
    return True


def fill_report(report: dict[str, Any], result: Result) -> None:
    report.update(
        checked=result.checked,
        intact=result.intact,
        undecodable=result.undecodable,
        unreadable=result.unreadable,
    )
