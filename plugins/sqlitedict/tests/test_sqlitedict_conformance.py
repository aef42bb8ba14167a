"""The sqlitedict backend runs the whole conformance kit (sessionkeeper.testing), in both modes."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sessionkeeper import SessionManager
from sessionkeeper.testing import BackendConformance


class _SqliteDictConformance(BackendConformance):
    backend = "sqlitedict"

    def corrupt_stored_session(self, manager: SessionManager, session_id: str) -> None:
        """Overwrite the row on disk with bytes that do not decode, then restart the backend.

        The owner serves reads from its in-memory copy, which a change made behind its back does
        not reach: the damage is seen when the file is read, at the next open. So the back door
        closes the backend (committing what it buffered), damages the row with a connection of
        its own, and opens the backend again through its hooks, as a process restart would.
        """
        backend = manager.backend
        backend.sessionkeeper_close()
        with sqlite3.connect(backend.path) as connection:
            updated = connection.execute(
                f'UPDATE "{backend.table}" SET value = ? WHERE key = ?',
                (b"\x93not a session record", session_id),
            ).rowcount
        connection.close()
        assert updated == 1, f"{session_id!r} was not on disk"
        backend.sessionkeeper_open()


class TestDurableConformance(_SqliteDictConformance):
    """Every shared semantic in durable mode: each write committed and fsynced."""

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        # Relative: resolved against the manager's base_dir (the test's directory).
        return {"file_path": "sessions.sqlite", "auto_save": 0}


class TestIntervalConformance(_SqliteDictConformance):
    """Every shared semantic in interval mode: writes buffered, committed every auto_save ms."""

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        # A short interval, so that the flusher runs while the tests do.
        return {"file_path": str(tmp_path / "data" / "sessions.sqlite"), "auto_save": 20}
