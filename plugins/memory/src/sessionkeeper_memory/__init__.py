"""sessionkeeper-memory: the in-process ``memory`` backend of sessionkeeper.

Configure it with ``backend = "memory"`` (the default); its one option is ``table_name``::

    [sessionkeeper]
    backend = "memory"

    [sessionkeeper.backend_opts]
    table_name = "sessions"
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._backend import MemoryBackend, MemoryOptions
from ._table import BUCKET_MS

__all__ = ["BUCKET_MS", "MemoryBackend", "MemoryOptions", "__version__"]

try:
    __version__ = version("sessionkeeper-memory")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
