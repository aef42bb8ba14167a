"""sessionkeeper: server sessions that survive restarts, in the storage a config file chooses.

The package root holds the user API: the managers, the session, the configuration and the errors
an application catches. Three public submodules hold the rest:

- :mod:`sessionkeeper.backend`: what a backend author needs (``hookimpl``, the backend contract,
  the codec, the expiry index, ``check_store``);
- :mod:`sessionkeeper.transfer`: export, import, migration and the export format;
- :mod:`sessionkeeper.metrics`: Prometheus metrics (needs the ``metrics`` extra).

Modules with a leading underscore are private. The names that used to be importable from the
root and now live in a submodule still resolve here for one release, with a
:class:`DeprecationWarning` naming their new home.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Final

from ._async import AsyncSessionManager
from ._config import CONFIG_ENV, Config, find_config, load_config
from ._errors import (
    BackendNotFound,
    ConfigError,
    InvalidSession,
    ManagerClosed,
    SessionKeeperError,
    SessionNotFound,
    StorageError,
    Unsupported,
    VersionConflict,
)
from ._manager import SessionManager
from ._model import Session, generate_id, validate_id
from ._plugins import installed_backends

try:
    __version__ = version("sessionkeeper")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0"

__all__ = [
    "CONFIG_ENV",
    "AsyncSessionManager",
    "BackendNotFound",
    "Config",
    "ConfigError",
    "InvalidSession",
    "ManagerClosed",
    "Session",
    "SessionKeeperError",
    "SessionManager",
    "SessionNotFound",
    "StorageError",
    "Unsupported",
    "VersionConflict",
    "find_config",
    "generate_id",
    "installed_backends",
    "load_config",
    "validate_id",
]

#: The public submodule of each name that moved out of the root: its names, one per line.
_MOVED_NAMES: Final = {
    "sessionkeeper.backend": """
        FORMAT_VERSION BackendContext BackendPlugin Capabilities Clock CodecError ExpiryIndex
        FieldError NoOptions PluginValidationError check_store decode_session encode_session
        hookimpl installed_plugins system_clock
    """,
    "sessionkeeper.transfer": """
        EXPORT_FORMAT EXPORT_VERSION ExportError ExportFormatError ExportHeader ExportReader
        ExportReport ExportWriter ImportReport LineError MigrationReport SessionDigest
        TransferAborted VerificationFailed export_sessions import_sessions migrate_sessions
    """,
    "sessionkeeper.metrics": """
        METRIC_NAMES MetricsCollector MetricsServer metrics_registry metrics_text
        start_metrics_server
    """,
}

#: Moved name -> the public submodule that now holds it.
_MOVED: Final[dict[str, str]] = {
    name: module for module, names in _MOVED_NAMES.items() for name in names.split()
}


def __getattr__(name: str) -> object:
    """Resolve a name that moved to a submodule, warning where it lives now."""
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'sessionkeeper' has no attribute {name!r}")
    warnings.warn(
        f"sessionkeeper.{name} moved to {module}.{name}; import it with "
        f"'from {module} import {name}' (the root name goes away in a future release)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)
