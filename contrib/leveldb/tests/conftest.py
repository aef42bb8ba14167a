"""Fixtures of the leveldb tests: a manual clock and managers on one database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper import SessionManager
from sessionkeeper.testing import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    """The clock of every manager in a test."""
    return ManualClock()


@pytest.fixture
def open_manager(tmp_path: Path, clock: ManualClock) -> Iterator[Any]:
    """Open managers on ``tmp_path/db`` (options overridable); all are closed after the test.
    Managers of one test share the database's handle and lock, as managers of one process do."""
    opened: list[SessionManager] = []

    def make(**opts: Any) -> SessionManager:
        read_only = opts.pop("read_only", False)
        options = {"db_path": str(tmp_path / "db"), **opts}
        manager = SessionManager(
            backend="leveldb",
            backend_opts=options,
            clock=clock,
            cleanup_interval=0,
            read_only=read_only,
            base_dir=tmp_path,
        )
        opened.append(manager)
        return manager

    yield make
    for manager in reversed(opened):
        manager.close()
