"""sessionkeeper-redis: the ``redis`` backend of sessionkeeper (standalone, Sentinel, Cluster).

Configure it with ``backend = "redis"`` and one of ``url``, ``sentinel`` or ``cluster``::

    [sessionkeeper]
    backend = "redis"

    [sessionkeeper.backend_opts]
    url = "redis://127.0.0.1:6379/0"
    table_name = "sessions"
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._backend import RedisBackend
from ._operations import PAGE_SIZE, STORE_CHUNK
from ._options import MAX_TTL_MS, ClusterOptions, RedisOptions, SentinelOptions

__all__ = [
    "MAX_TTL_MS",
    "PAGE_SIZE",
    "ClusterOptions",
    "RedisBackend",
    "STORE_CHUNK",
    "RedisOptions",
    "SentinelOptions",
    "__version__",
]

try:
    __version__ = version("sessionkeeper-redis")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
