"""sessionkeeper-leveldb: the ``leveldb`` backend of sessionkeeper, sessions in LevelDB (plyvel).

The sample third-party plugin: it uses only sessionkeeper's public API, as "Writing a backend"
documents it. Configure it with::

    [sessionkeeper]
    backend = "leveldb"

    [sessionkeeper.backend_opts]
    db_path = "data/sessions.leveldb"   # a directory; relative to the config file
    table_name = "sessions"             # a key prefix: several tables may share a database
    sync = true                         # fsync every write before acknowledging it
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._backend import BATCH, LevelDBBackend
from ._layout import LAYOUT_VERSION, TableKeys
from ._options import LevelDBOptions

__all__ = [
    "BATCH",
    "LAYOUT_VERSION",
    "LevelDBBackend",
    "LevelDBOptions",
    "TableKeys",
    "__version__",
]

try:
    __version__ = version("sessionkeeper-leveldb")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
