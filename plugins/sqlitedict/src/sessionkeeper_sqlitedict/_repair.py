"""``sessionkeeper check --repair`` for the ``sqlitedict`` backend: rewrite a damaged file.

Called by :func:`._check.check_file` with the file's owner lock held (the owner is stopped). It
lets SQLite roll back a journal left by a crash in a rollback-journal mode, scans the file
(:mod:`._scan`) and, when something is wrong, writes a new file beside the original holding
every intact session — and, unchanged, every readable row of the file's other tables — then
swaps it in (the steps are listed in :mod:`._check`). It refuses, changing nothing, what is not
a session table: other columns than sqlitedict's, no readable row a session, or a file with a
second name (a hard link).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any, Final

from ._scan import (
    Problems,
    Result,
    check_sessions,
    fill_report,
    integrity_check,
    open_for_check,
    same_table,
    scan_rows,
    schema_objects,
    session_columns,
)
from ._sql import COLUMNS, Statements, quote, table_columns

__all__ = ["SIDE_FILES", "repair_file"]

#: Files SQLite keeps beside a database.
SIDE_FILES: Final = ("-wal", "-shm", "-journal")


def _stamp(path: Path) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for attempt in range(1000):
        suffix = stamp if attempt == 0 else f"{stamp}-{attempt}"
        if not any(
            path.with_name(f"{path.name}.{suffix}{kind}").exists()
            for kind in (".bak", ".quarantine")
        ):
            return suffix
    raise FileExistsError(f"too many backups of {path} this second")


def _fsync(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_file(path: Path) -> sqlite3.Connection:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    connection = sqlite3.connect(os.fspath(path), isolation_level=None)
    connection.execute("PRAGMA journal_mode = DELETE")
    connection.execute("PRAGMA synchronous = OFF")  # fsynced once, when complete
    return connection


def _write_quarantine(path: Path, table: str, rows: list[tuple[int, object, object, str]]) -> None:
    connection = _new_file(path)
    try:
        connection.execute(
            "CREATE TABLE quarantine (table_name TEXT, row_id INTEGER, key, value, reason TEXT)"
        )
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?)",
            [(table, rowid, key, value, reason) for rowid, key, value, reason in rows],
        )
        connection.execute("COMMIT")
    finally:
        connection.close()
    _fsync(path)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _swap_in(path: Path, new: Path, backup: Path) -> None:
    """Keep the original as ``backup`` and put ``new`` in its place (see the module docstring)."""
    _link_or_copy(path, backup)
    for kind in SIDE_FILES:
        side = path.with_name(path.name + kind)
        if side.exists():
            if kind != "-shm" and side.stat().st_size > 0:
                _link_or_copy(side, backup.with_name(backup.name + kind))
            side.unlink()
    os.replace(new, path)
    _fsync(path.parent, directory=True)


def _roll_back_hot_journal(path: Path, report: dict[str, Any]) -> None:
    """Let SQLite roll back a journal left by a crash in a rollback-journal mode.

    A read-only connection cannot do it (it would need to write the file), so a crashed
    ``DELETE``/``TRUNCATE``/``PERSIST``-mode store would look unreadable. Only called with the
    owner lock held, so no other process is writing.
    """
    journal = path.with_name(path.name + "-journal")
    if not journal.exists() or journal.stat().st_size == 0:
        return
    try:
        connection = sqlite3.connect(os.fspath(path), isolation_level=None)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        report["notes"].append(f"rolling back {journal.name} failed ({exc})")
        return
    report["notes"].append(f"SQLite rolled back the interrupted transaction in {journal.name}")


class _Refused(Exception):
    """A repair that must not rewrite the file (the reason is already among the problems)."""


def _refuse_foreign(connection: sqlite3.Connection, table: str, problems: Problems) -> None:
    """Raise :class:`_Refused` when ``table`` exists with columns that are not sqlitedict's."""
    try:
        columns = table_columns(connection, table)
    except sqlite3.DatabaseError:
        return  # a damaged schema: the salvage says what it can read
    if columns and tuple(columns) != COLUMNS:
        problems.add(
            f"table {table!r} has columns {columns}, not sqlitedict's (key, value): it is not a "
            "session table (is table_name right?); repair refused, nothing was changed"
        )
        raise _Refused


def _refuse_hard_links(path: Path, problems: Problems) -> None:
    """Raise :class:`_Refused` when ``path`` has other names: a rewrite replaces one name only."""
    links = os.stat(path).st_nlink
    if links > 1:
        problems.add(
            f"{path} has {links} names (hard links): a repair writes a new file under this "
            "name only, and the other names would go on holding the damaged file; repair "
            "refused, nothing was changed. Remove the other links (or repair a copy)"
        )
        raise _Refused


def repair_file(path: Path, table: str, problems: Problems, report: dict[str, Any]) -> None:
    _roll_back_hot_journal(path, report)
    connection = open_for_check(path, problems)
    try:
        _repair_open(path, table, connection, problems, report)
    except _Refused:
        pass
    finally:
        if connection is not None:
            connection.close()


def _repair_open(
    path: Path,
    table: str,
    connection: sqlite3.Connection | None,
    problems: Problems,
    report: dict[str, Any],
) -> None:
    """The repair, with ``connection`` opened on the original (``None``: unreadable)."""
    schema: list[tuple[str, str, str | None]] = []
    if connection is not None:
        _refuse_foreign(connection, table, problems)
        report["integrity"] = integrity_check(connection, problems)
        try:
            schema = schema_objects(connection)
        except sqlite3.DatabaseError as exc:
            problems.add(f"the schema cannot be read ({exc}); only the session table is salvaged")
            schema = [("table", table, None)]
    if connection is not None and problems.count == 0:
        # Nothing wrong with the file: check the rows, and rewrite only if one is bad.
        trial = Problems()
        if session_columns(connection, table, trial, report):
            fill_report(
                report, check_sessions(connection, table, trial, keep=None, quarantine=False)
            )
        if trial.count == 0:
            report["notes"].append("nothing to repair")
            return
        _refuse_if_no_session(report["intact"], report["undecodable"], table, problems)
    _refuse_hard_links(path, problems)
    # The session table under the name the file gives it (names ignore ASCII case).
    table = next(
        (name for kind, name, _ in schema if kind == "table" and same_table(name, table)), table
    )
    stamp = _stamp(path)
    new = path.with_name(f"{path.name}.repair-{os.getpid()}.tmp")
    backup = path.with_name(f"{path.name}.{stamp}.bak")
    quarantine_path = path.with_name(f"{path.name}.{stamp}.quarantine")
    target = _new_file(new)
    try:
        target.execute(Statements(table).create)
        result = Result()
        other_tables: dict[str, int] = {}
        if connection is not None:
            target.execute("BEGIN")
            result = _salvage_sessions(connection, target, table, problems, report)
            fill_report(report, result)  # also what a refusal reports
            _refuse_if_no_session(result.intact, result.undecodable, table, problems)
            for kind, name, sql in schema:
                if kind == "table" and not same_table(name, table):
                    other_tables[name] = _copy_table(connection, target, name, sql, problems)
            _copy_sequences(connection, target, problems)
            target.execute("COMMIT")
            for kind, name, sql in schema:
                if kind != "table" and sql is not None:
                    try:
                        target.execute(sql)
                    except sqlite3.Error as exc:
                        problems.add(f"{kind} {name!r} could not be recreated ({exc})")
        target.close()
        _fsync(new)
        if result.quarantined:
            _write_quarantine(quarantine_path, table, result.quarantined)
            report["quarantine"] = str(quarantine_path)
        _swap_in(path, new, backup)
    except BaseException:
        target.close()
        with contextlib.suppress(OSError):
            new.unlink()
        raise
    fill_report(report, result)
    report.update(
        repaired=True,
        backup=str(backup),
        salvaged=result.intact,
        quarantined=len(result.quarantined),
        other_tables=other_tables,
    )


def _refuse_if_no_session(intact: int, undecodable: int, table: str, problems: Problems) -> None:
    """Raise :class:`_Refused` when rows were read and none of them is a session: the table is
    another program's (a plain sqlitedict table, say), not a damaged session table."""
    if intact == 0 and undecodable > 0:
        problems.add(
            f"table {table!r}: none of its {undecodable} readable row(s) is a sessionkeeper "
            "session: it does not look like a session table (is table_name right?); repair "
            "refused, nothing was changed. If it is a session table whose every row is "
            "damaged, delete those ids (or the rows) and run the repair again"
        )
        raise _Refused


def _salvage_sessions(
    source: sqlite3.Connection,
    target: sqlite3.Connection,
    table: str,
    problems: Problems,
    report: dict[str, Any],
) -> Result:
    if not session_columns(source, table, problems, report):
        return Result()
    insert = f"INSERT OR IGNORE INTO {quote(table)} (rowid, key, value) VALUES (?, ?, ?)"  # noqa: S608

    def keep(rowid: int, key: str, value: bytes) -> None:
        target.execute(insert, (rowid, key, value))

    return check_sessions(source, table, problems, keep=keep, quarantine=True)


def _copy_table(
    source: sqlite3.Connection,
    target: sqlite3.Connection,
    name: str,
    sql: str | None,
    problems: Problems,
) -> int:
    """Copy every readable row of another table unchanged; return how many."""
    try:
        columns = table_columns(source, name)
    except sqlite3.DatabaseError as exc:
        problems.add(f"table {name!r}: its schema cannot be read ({exc}); not copied")
        return 0
    if sql is None or not columns:
        problems.add(f"table {name!r}: no schema; not copied")
        return 0
    try:
        target.execute(sql)
    except sqlite3.Error as exc:
        problems.add(f"table {name!r} could not be recreated ({exc}); not copied")
        return 0
    names = ", ".join(quote(c) for c in columns)
    if not _has_rowid(source, name):
        return _copy_rows(source, target, name, names, len(columns), problems)
    marks = ", ".join("?" for _ in range(len(columns) + 1))
    insert = f"INSERT OR IGNORE INTO {quote(name)} (rowid, {names}) VALUES ({marks})"  # noqa: S608
    copied = 0
    try:
        for row in scan_rows(source, name, columns, problems):
            target.execute(insert, row)
            copied += 1
    except sqlite3.Error as exc:
        problems.add(f"table {name!r}: copied {copied} row(s), then {exc}")
    return copied


def _has_rowid(connection: sqlite3.Connection, name: str) -> bool:
    """False for a ``WITHOUT ROWID`` table (it has no rowid to scan by)."""
    try:
        connection.execute(f"SELECT rowid FROM {quote(name)} LIMIT 0")  # noqa: S608
    except sqlite3.OperationalError:
        return False
    return True


def _copy_rows(
    source: sqlite3.Connection,
    target: sqlite3.Connection,
    name: str,
    names: str,
    width: int,
    problems: Problems,
) -> int:
    """Copy a table without rowids in one pass (up to the first row that cannot be read)."""
    marks = ", ".join("?" for _ in range(width))
    insert = f"INSERT OR IGNORE INTO {quote(name)} ({names}) VALUES ({marks})"  # noqa: S608
    copied = 0
    try:
        for row in source.execute(f"SELECT {names} FROM {quote(name)}"):  # noqa: S608
            target.execute(insert, row)
            copied += 1
    except sqlite3.Error as exc:
        problems.add(f"table {name!r} (WITHOUT ROWID): copied {copied} row(s), then {exc}")
    return copied


def _copy_sequences(
    source: sqlite3.Connection, target: sqlite3.Connection, problems: Problems
) -> None:
    """Carry over the AUTOINCREMENT counters (``sqlite_sequence``), so that a repaired table
    never hands out again an id it handed out before."""
    try:
        rows = source.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
    except sqlite3.OperationalError:
        return  # no AUTOINCREMENT table in the file
    except sqlite3.DatabaseError as exc:
        problems.add(f"the AUTOINCREMENT counters cannot be read ({exc})")
        return
    for name, seq in rows:
        try:
            updated = target.execute(
                "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, name)
            ).rowcount
            if not updated:
                target.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, seq))
        except sqlite3.Error as exc:
            problems.add(f"the AUTOINCREMENT counter of {name!r} could not be kept ({exc})")
