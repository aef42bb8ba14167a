"""sessionkeeper-sqlitedict: the ``sqlitedict`` backend of sessionkeeper — sessions in one SQLite
file that survive restarts and crashes.

Configure it with ``backend = "sqlitedict"``::

    [sessionkeeper]
    backend = "sqlitedict"

    [sessionkeeper.backend_opts]
    file_path = "data/sessions.sqlite"   # relative to the config file
    table_name = "sessions"
    auto_save = 60000                    # ms between commits; 0 = durable (commit per write)

The file is in sqlitedict's format (``CREATE TABLE "<table>" (key TEXT PRIMARY KEY, value BLOB)``)
with the core's msgpack records as values; :func:`open_sqlitedict` opens it as a
``sqlitedict.SqliteDict`` for scripts. The backend itself reads and writes the file with the
standard library's :mod:`sqlite3` (see the documentation page for why).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._backend import SqliteDictBackend
from ._check import check_file
from ._dict import SessionDict, open_sqlitedict
from ._lock import LOCK_SUFFIX, lock_path
from ._options import SqliteDictOptions

__all__ = [
    "LOCK_SUFFIX",
    "SessionDict",
    "SqliteDictBackend",
    "SqliteDictOptions",
    "__version__",
    "check_file",
    "lock_path",
    "open_sqlitedict",
]

try:
    __version__ = version("sessionkeeper-sqlitedict")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
