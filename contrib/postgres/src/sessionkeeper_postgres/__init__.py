"""sessionkeeper-postgres: the ``postgres`` backend of sessionkeeper.

Sessions in a table of the PostgreSQL database the deployment already runs, shared by every
process and host, durable at the server's ``synchronous_commit``::

    [sessionkeeper]
    backend = "postgres"

    [sessionkeeper.backend_opts]
    dsn = "postgresql://app@db.internal:5432/app?sslmode=verify-full"
    table_name = "sessions"
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._backend import STORE_CHUNK, PostgresBackend
from ._options import IDENTIFIER_MAX, SYNCHRONOUS_COMMIT, PostgresOptions
from ._schema import CLEANUP_BATCH, LATEST_VERSION, META_TABLE, PAGE_SIZE

__all__ = [
    "CLEANUP_BATCH",
    "IDENTIFIER_MAX",
    "LATEST_VERSION",
    "META_TABLE",
    "PAGE_SIZE",
    "PostgresBackend",
    "PostgresOptions",
    "STORE_CHUNK",
    "SYNCHRONOUS_COMMIT",
    "__version__",
]

try:
    __version__ = version("sessionkeeper-postgres")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
