"""The leveldb backend runs the whole conformance kit (sessionkeeper.testing), as any third-party
backend does: the kit arrives through the ``pytest11`` plugin of the installed core."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from sessionkeeper import SessionManager
from sessionkeeper.testing import BackendConformance
from sessionkeeper_leveldb import LevelDBBackend


class TestLevelDBConformance(BackendConformance):
    """Every shared semantic, checked on the ``leveldb`` backend with sync writes."""

    backend = "leveldb"
    # No example database: the kit's state machine has one Hypothesis key for every backend, so
    # an example saved by another backend's failing run would be replayed here.
    stateful_settings: ClassVar[Mapping[str, Any]] = {
        **BackendConformance.stateful_settings,
        "database": None,
    }

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        # Relative: resolved against the manager's base_dir, which the kit sets to tmp_path.
        return {"db_path": "sessions.leveldb", "table_name": "conformance"}

    def shared_store_config(self, backend_opts: Mapping[str, Any]) -> Mapping[str, Any] | None:
        # None: the kit's multi-process races are skipped. LevelDB lets one process open a
        # database (a second one gets "already open by another process", test_durability.py),
        # so every user of the store is a thread of the owning process; the kit's thread races
        # and test_atomic.py cover those.
        return None

    def corrupt_stored_session(self, manager: SessionManager, session_id: str) -> None:
        backend = manager.backend
        assert isinstance(backend, LevelDBBackend)
        backend.db.put(backend.keys.session(session_id), b"\x92\x01not a session")
