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

This module holds the entry point, :func:`check_file`, and the report; reading a damaged table is
:mod:`._scan`'s, rewriting the file :mod:`._repair`'s.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._lock import OwnerLock
from ._repair import repair_file
from ._scan import (
    Problems,
    check_sessions,
    fill_report,
    integrity_check,
    open_for_check,
    session_columns,
)
from ._sql import file_problem

__all__ = ["check_file"]


def check_file(path: Path, table: str, *, backend: str, repair: bool) -> dict[str, Any]:
    """Check (and with ``repair``, repair) table ``table`` of the SQLite file ``path``.

    Returns the report described by the ``sessionkeeper_check`` hook: ``ok``, ``checked``,
    ``intact``, ``problems``, plus ``file``, ``table``, ``integrity``, ``undecodable`` and
    ``unreadable``; with ``repair`` also ``repaired``, ``backup``, ``quarantine``,
    ``salvaged``, ``quarantined`` and ``other_tables`` (rows copied per other table).
    """
    problems = Problems()
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
            repair_file(real, table, problems, report)
        else:
            _check(real, table, problems, report)
    finally:
        if owner is not None:
            owner.release()
    report["problems"] = problems.as_list()
    report["ok"] = problems.count == 0
    return report


def _check(path: Path, table: str, problems: Problems, report: dict[str, Any]) -> None:
    connection = open_for_check(path, problems)
    if connection is None:
        return
    try:
        report["integrity"] = integrity_check(connection, problems)
        if session_columns(connection, table, problems, report):
            result = check_sessions(connection, table, problems, keep=None, quarantine=False)
            fill_report(report, result)
    finally:
        connection.close()
