"""``sessionkeeper check [--repair]`` for the ``sqlitedict`` backend.

Checking reads the file read-only (no lock: it can run beside the owner and sees what the owner
has committed): SQLite's ``PRAGMA integrity_check``, then every row of the table, each decoded
and validated. Rows are read in ``rowid`` order; when a damaged page stops the scan, the scan
probes forward for the next readable row and goes on from there, and the table's key index is
read too, so the report names every key whose row cannot be read.

Repairing takes the file's owner lock (the owner must be stopped), lets SQLite roll back a
journal left by a crash in a rollback-journal mode, and writes a new file beside the original
holding every intact session — and, unchanged, every readable row of the file's other
tables — then swaps it in. A configured path that is a symlink is followed: the real file is
the one repaired. A repair never replaces what is not a session table: it refuses (and
changes nothing) when the table has other columns than sqlitedict's, when none of its
readable rows is a session, and when the file has a second name (a hard link), which would
go on holding the damaged file:

1. the original (with its ``-wal``/``-journal``) gets a second name, ``<file>.<UTC time>.bak``;
2. its ``-wal``, ``-shm`` and ``-journal`` are removed, so that they can never be replayed into the
   new file;
3. the new file is renamed over ``<file>`` (atomic).

Rows that are readable but do not decode are copied to ``<file>.<UTC time>.quarantine``, a SQLite
file with one table ``quarantine (table_name, row_id, key, value, reason)``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from ._lock import OwnerLock
from ._sql import (
    COLUMNS,
    RowError,
    Statements,
    connect_read_only,
    decode_row,
    describe_key,
    file_problem,
    hot_journal_hint,
    quote,
    table_columns,
)

__all__ = ["check_file"]

#: Problems listed in a report before the rest are only counted.
MAX_PROBLEMS: Final = 100
#: Rows per read of the scan.
SCAN_BATCH: Final = 1_000
_MIN_ROWID: Final = -(2**63)
_MAX_ROWID: Final = 2**63 - 1
#: Files SQLite keeps beside a database.
SIDE_FILES: Final = ("-wal", "-shm", "-journal")


class _Problems:
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


def _scan(
    connection: sqlite3.Connection,
    table: str,
    columns: list[str],
    problems: _Problems,
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
    connection: sqlite3.Connection, table: str, problems: _Problems
) -> Iterator[object]:
    """The keys the table's key index holds (it may be readable where the table is not)."""
    try:
        for (key,) in connection.execute(f"SELECT key FROM {quote(table)} ORDER BY key"):  # noqa: S608
            yield key
    except sqlite3.DatabaseError as exc:
        problems.add(f"table {table!r}: its key index cannot be read to the end ({exc})")


class _Result:
    """What the scan of the session table found."""

    def __init__(self) -> None:
        self.checked = 0
        self.intact = 0
        self.undecodable = 0
        self.unreadable = 0
        self.quarantined: list[tuple[int, object, object, str]] = []


def _check_sessions(
    connection: sqlite3.Connection,
    table: str,
    problems: _Problems,
    *,
    keep: Callable[[int, str, bytes], None] | None,
    quarantine: bool,
) -> _Result:
    """Decode every row of the session table; hand each intact one to ``keep``."""
    result = _Result()
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

    for rowid, key, value in _scan(connection, table, list(COLUMNS), problems):
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


def _integrity(connection: sqlite3.Connection, problems: _Problems) -> list[str]:
    try:
        messages = [str(row[0]) for row in connection.execute("PRAGMA integrity_check(100)")]
    except sqlite3.DatabaseError as exc:
        messages = [f"integrity_check failed: {exc}"]
    if messages != ["ok"]:
        for message in messages:
            problems.add(f"integrity_check: {message}")
    return messages


def _schema(connection: sqlite3.Connection) -> list[tuple[str, str, str | None]]:
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


def check_file(path: Path, table: str, *, backend: str, repair: bool) -> dict[str, Any]:
    """Check (and with ``repair``, repair) table ``table`` of the SQLite file ``path``.

    Returns the report described by the ``sessionkeeper_check`` hook: ``ok``, ``checked``,
    ``intact``, ``problems``, plus ``file``, ``table``, ``integrity``, ``undecodable`` and
    ``unreadable``; with ``repair`` also ``repaired``, ``backup``, ``quarantine``,
    ``salvaged``, ``quarantined`` and ``other_tables`` (rows copied per other table).
    """
    problems = _Problems()
    report: dict[str, Any] = {
        "ok": False,
        "file": str(path),
        "table": table,
        "checked": 0,
        "intact": 0,
        "undecodable": 0,
        "unreadable": 0,
        "integrity": [],
        "problems": [],
        "notes": [],
    }
    if repair:
        report.update(
            repaired=False,
            backup=None,
            quarantine=None,
            salvaged=0,
            quarantined=0,
            other_tables={},
        )
    problem = file_problem(path, if_missing=" (nothing was ever stored there)")
    if problem is not None:
        report["problems"] = [problem]
        return report
    # The real file, not the configured path: a repair renames files beside the real one
    # (replacing a symlink with the new file would leave the real file damaged).
    real = Path(os.path.realpath(path))
    if real != Path(os.path.abspath(path)):
        report["notes"].append(f"{path} leads to {real}: that file is the one checked")
    owner: OwnerLock | None = None
    if repair:
        owner = OwnerLock(real, None, backend=backend)
        owner.acquire()  # StorageError naming the owner's pid while it runs
    try:
        if repair:
            _repair(real, table, problems, report)
        else:
            _check(real, table, problems, report)
    finally:
        if owner is not None:
            owner.release()
    report["problems"] = problems.as_list()
    report["ok"] = problems.count == 0
    return report


def _open(path: Path, problems: _Problems) -> sqlite3.Connection | None:
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


def _session_columns(
    connection: sqlite3.Connection, table: str, problems: _Problems, report: dict[str, Any]
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


def _check(path: Path, table: str, problems: _Problems, report: dict[str, Any]) -> None:
    connection = _open(path, problems)
    if connection is None:
        return
    try:
        report["integrity"] = _integrity(connection, problems)
        if _session_columns(connection, table, problems, report):
            result = _check_sessions(connection, table, problems, keep=None, quarantine=False)
            _fill(report, result)
    finally:
        connection.close()


def _fill(report: dict[str, Any], result: _Result) -> None:
    report.update(
        checked=result.checked,
        intact=result.intact,
        undecodable=result.undecodable,
        unreadable=result.unreadable,
    )


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


def _refuse_foreign(connection: sqlite3.Connection, table: str, problems: _Problems) -> None:
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


def _refuse_hard_links(path: Path, problems: _Problems) -> None:
    """Raise :class:`_Refused` when ``path`` has other names: a rewrite replaces one name only."""
    links = os.stat(path).st_nlink
    if links > 1:
        problems.add(
            f"{path} has {links} names (hard links): a repair writes a new file under this "
            "name only, and the other names would go on holding the damaged file; repair "
            "refused, nothing was changed. Remove the other links (or repair a copy)"
        )
        raise _Refused


def _repair(path: Path, table: str, problems: _Problems, report: dict[str, Any]) -> None:
    _roll_back_hot_journal(path, report)
    connection = _open(path, problems)
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
    problems: _Problems,
    report: dict[str, Any],
) -> None:
    """The repair, with ``connection`` opened on the original (``None``: unreadable)."""
    schema: list[tuple[str, str, str | None]] = []
    if connection is not None:
        _refuse_foreign(connection, table, problems)
        report["integrity"] = _integrity(connection, problems)
        try:
            schema = _schema(connection)
        except sqlite3.DatabaseError as exc:
            problems.add(f"the schema cannot be read ({exc}); only the session table is salvaged")
            schema = [("table", table, None)]
    if connection is not None and problems.count == 0:
        # Nothing wrong with the file: check the rows, and rewrite only if one is bad.
        trial = _Problems()
        if _session_columns(connection, table, trial, report):
            _fill(report, _check_sessions(connection, table, trial, keep=None, quarantine=False))
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
        result = _Result()
        other_tables: dict[str, int] = {}
        if connection is not None:
            target.execute("BEGIN")
            result = _salvage_sessions(connection, target, table, problems, report)
            _fill(report, result)  # also what a refusal reports
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
    _fill(report, result)
    report.update(
        repaired=True,
        backup=str(backup),
        salvaged=result.intact,
        quarantined=len(result.quarantined),
        other_tables=other_tables,
    )


def _refuse_if_no_session(intact: int, undecodable: int, table: str, problems: _Problems) -> None:
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
    problems: _Problems,
    report: dict[str, Any],
) -> _Result:
    if not _session_columns(source, table, problems, report):
        return _Result()
    insert = f"INSERT OR IGNORE INTO {quote(table)} (rowid, key, value) VALUES (?, ?, ?)"  # noqa: S608

    def keep(rowid: int, key: str, value: bytes) -> None:
        target.execute(insert, (rowid, key, value))

    return _check_sessions(source, table, problems, keep=keep, quarantine=True)


def _copy_table(
    source: sqlite3.Connection,
    target: sqlite3.Connection,
    name: str,
    sql: str | None,
    problems: _Problems,
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
        for row in _scan(source, name, columns, problems):
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
    problems: _Problems,
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
    source: sqlite3.Connection, target: sqlite3.Connection, problems: _Problems
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
