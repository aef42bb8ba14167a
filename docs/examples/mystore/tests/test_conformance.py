"""The mystore backend passes sessionkeeper's conformance kit.

The kit comes with sessionkeeper (its pytest plugin is loaded through the ``pytest11`` entry
point): subclassing ``BackendConformance`` and naming the backend is enough to run every test of
the semantics all backends share, through ``SessionManager`` and, with ``AsyncConformance``,
through ``AsyncSessionManager`` (whichever path each operation takes there). Run ``python -m
pytest`` once the package is installed (``pip install -e .``): entry points exist only in
installed metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sessionkeeper import SessionManager
from sessionkeeper.testing import AsyncConformance, BackendConformance

from sessionkeeper_mystore import MystoreBackend


class MystoreStore:
    """The store every test opens: the backend, and the options of a fresh, empty store."""

    backend = "mystore"  # the entry-point name

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        """The ``backend_opts`` of a fresh, empty store for one test; ``tmp_path`` is its own
        (a backend on disk puts its files there)."""
        return {"max_sessions": 100_000}


class TestMystoreAsyncConformance(MystoreStore, AsyncConformance):
    """The shared semantics through ``AsyncSessionManager``, with tasks of one loop racing."""


class TestMystoreConformance(MystoreStore, BackendConformance):
    """Every shared semantic, checked on the ``mystore`` backend."""

    def corrupt_stored_session(self, manager: SessionManager, session_id: str) -> None:
        """Damage a stored record behind the manager's back, so that the kit checks that damage
        is reported as a StorageError (never as "not found")."""
        backend = manager.backend
        assert isinstance(backend, MystoreBackend)
        backend.records[session_id] = b"\x92\x01not a session"
