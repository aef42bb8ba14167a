"""How the sqlitedict tests open a file as its single owner: :func:`open_owner`. Imported through
the folder that conftest.py puts on ``sys.path``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sessionkeeper import SessionManager
from sessionkeeper.backend import Clock


def open_owner(
    path: Path, *, clock: Clock | None = None, read_only: bool = False, **opts: Any
) -> SessionManager:
    """A manager owning the SQLite file ``path``: durable (``auto_save = 0``) unless ``opts``
    say otherwise (``opts`` are its ``backend_opts``), no cleanup scheduler, ``clock`` (the
    system clock when ``None``), read-only when asked."""
    return SessionManager(
        backend="sqlitedict",
        backend_opts={"file_path": str(path), "auto_save": 0, **opts},
        cleanup_interval=0,
        clock=clock,
        read_only=read_only,
    )
