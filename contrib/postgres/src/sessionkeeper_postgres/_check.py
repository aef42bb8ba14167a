"""``sessionkeeper check`` for the ``postgres`` backend: the schema version and every row.

A row is intact when its record decodes (the core codec) under the row's own id, its
``last_accessed`` column is not before the record's, its ``version`` column is a version, and
the columns the indexes read agree with the record: ``deadline`` is the session's
``expires_at`` at the row's ``last_accessed``, ``absolute_deadline`` its absolute deadline and
``owner`` its owner (a table written by schema version 1 code, which knew no owners, may hold
rows whose record names an owner that the column lacks). With ``repair``, a row whose record is
damaged moves (in one statement) to ``<table>_quarantine``, keeping its bytes and the problem
found; wrong index columns are recomputed from the record. The rows are read in pages on the
primary key, each page its own statement, so a check runs beside the processes that use the
table.
"""

from __future__ import annotations

from typing import Any

import psycopg

from sessionkeeper.backend import CodecError, decode_session

from ._schema import LATEST_VERSION, PAGE_SIZE, Statements, deadlines

__all__ = ["check_table", "row_problem"]

#: Problems listed in a report before the rest are only counted.
MAX_LISTED = 1_000


#: The index columns of a row: ``(deadline, absolute_deadline, owner)``.
IndexColumns = tuple[int | None, int | None, str | None]


def row_problem(
    session_id: str,
    record: object,
    last_accessed: object,
    deadline: object,
    version: object = 1,
    owner: object = None,
    absolute_deadline: object = None,
) -> tuple[str | None, IndexColumns | None]:
    """What is wrong with one row, if anything: ``(problem, None)`` for a damaged record,
    ``(problem, right_columns)`` when only the index columns are wrong, ``(None, None)`` when
    the row is intact."""
    if not isinstance(record, bytes):
        return f"its record is {type(record).__name__}, not bytes", None
    try:
        session = decode_session(record)
    except CodecError as exc:
        return f"its record does not decode: {exc}", None
    if session.id != session_id:
        return f"its record holds session {session.id!r}", None
    if type(last_accessed) is not int or last_accessed < session.last_accessed:
        return (
            f"its last_accessed column ({last_accessed!r}) is before the record's "
            f"({session.last_accessed})",
            None,
        )
    if type(version) is not int or version < 1:
        return f"its version column is {version!r}", None
    right_deadline, right_absolute = deadlines(session.touched(last_accessed))
    right = (right_deadline, right_absolute, session.owner)
    found = (deadline, absolute_deadline, owner)
    if found != right:
        wrong = ", ".join(
            f"its {name} is {value!r}, expected {expected!r}"
            for name, value, expected in zip(
                ("deadline", "absolute_deadline", "owner"), found, right, strict=True
            )
            if value != expected
        )
        return wrong, right
    return None, None


def check_table(
    conn: psycopg.Connection[Any], statements: Statements, version: int | None, *, repair: bool
) -> dict[str, Any]:
    """Check (and with ``repair`` fix) the table; the report of ``sessionkeeper_check``."""
    problems: list[str] = []
    report: dict[str, Any] = {"ok": True, "checked": 0, "intact": 0, "problems": problems}
    if repair:
        report.update(repaired=False, quarantined=0, columns_fixed=0)
    if version != LATEST_VERSION:
        what = "no recorded schema version" if version is None else f"schema version {version}"
        problems.append(
            f"table {statements.schema}.{statements.table} has {what} (version "
            f"{LATEST_VERSION} expected): open it read-write to create or migrate it"
        )
        report["ok"] = False
        return report
    report["schema_version"] = version
    unlisted = 0
    after = ""
    while True:
        rows = conn.execute(statements.page, (after, PAGE_SIZE)).fetchall()
        for session_id, record, last_accessed, deadline, version, owner, absolute in rows:
            report["checked"] += 1
            problem, right = row_problem(
                session_id, record, last_accessed, deadline, version, owner, absolute
            )
            if problem is None:
                report["intact"] += 1
                continue
            report["ok"] = False
            if len(problems) < MAX_LISTED:
                problems.append(f"row {session_id!r}: {problem}")
            else:
                unlisted += 1
            if not repair:
                continue
            if right is not None:
                conn.execute(statements.fix_columns, (*right, session_id))
                report["columns_fixed"] += 1
                report["intact"] += 1
            else:
                conn.execute(statements.create_quarantine)
                conn.execute(statements.quarantine_row, (session_id, problem))
                report["quarantined"] += 1
        if len(rows) < PAGE_SIZE:
            break
        after = rows[-1][0]
    if unlisted:
        problems.append(f"... and {unlisted} more rows with problems")
    if repair:
        report["repaired"] = bool(report["quarantined"] or report["columns_fixed"])
        if report["quarantined"]:
            report["quarantine_table"] = f"{statements.schema}.{statements.table}_quarantine"
    return report
