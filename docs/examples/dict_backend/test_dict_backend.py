"""The dict backend passes the sessionkeeper conformance kit."""

from pathlib import Path
from typing import Any

from sessionkeeper.testing import BackendConformance


# start-conformance
class TestDictBackend(BackendConformance):
    """The dict backend behaves as every sessionkeeper backend must."""

    backend = "dict"  # the entry-point name

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        """The backend_opts of a fresh, empty store for one test (tmp_path is its own)."""
        return {"max_sessions": 100_000}


# end-conformance
