"""The memory backend runs the whole conformance kit (sessionkeeper.testing)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sessionkeeper.testing import BackendConformance


class TestMemoryConformance(BackendConformance):
    """Every shared semantic, checked on the ``memory`` backend."""

    backend = "memory"

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        # Tables are shared by name within a process: a fresh name gives each test its own.
        return {"table_name": f"conformance-{uuid.uuid4().hex}"}
