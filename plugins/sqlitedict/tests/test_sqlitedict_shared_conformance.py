"""The whole conformance kit on the sqlitedict backend in shared mode (``shared = true``),
the multi-process atomicity races included: the kit's worker processes open the same file."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sessionkeeper import SessionManager
from sessionkeeper.testing import BackendConformance


class TestSharedConformance(BackendConformance):
    """Every shared semantic in shared mode: each read a SELECT, each write a transaction."""

    backend = "sqlitedict"

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        return {"file_path": str(tmp_path / "data" / "sessions.sqlite"), "shared": True}

    def shared_store_config(self, backend_opts: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Another process opens the same file with the same options (the path is absolute)."""
        return dict(backend_opts)

    def corrupt_stored_session(self, manager: SessionManager, session_id: str) -> None:
        """Overwrite the row with bytes that do not decode, through a connection of our own:
        shared mode reads the file on every call, so the damage is seen at once."""
        backend = manager.backend
        connection = sqlite3.connect(backend.path)
        try:
            with connection:
                updated = connection.execute(
                    f'UPDATE "{backend.table}" SET value = ? WHERE key = ?',
                    (b"\x93not a session record", session_id),
                ).rowcount
        finally:
            connection.close()
        assert updated == 1, f"{session_id!r} was not on disk"
