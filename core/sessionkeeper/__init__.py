"""sessionkeeper: server sessions that survive restarts, in the storage a config file chooses.

The public API lives here; modules with a leading underscore are private.
"""

from importlib.metadata import PackageNotFoundError, version

from ._async import AsyncSessionManager
from ._backend import BackendContext, BackendPlugin, Capabilities, NoOptions
from ._codec import FORMAT_VERSION, decode_session, encode_session
from ._config import CONFIG_ENV, Config, FieldError, find_config, load_config
from ._errors import (
    BackendNotFound,
    CodecError,
    ConfigError,
    InvalidSession,
    ManagerClosed,
    PluginValidationError,
    SessionKeeperError,
    SessionNotFound,
    StorageError,
)
from ._expiry import ExpiryIndex
from ._manager import Clock, SessionManager, check_store, system_clock
from ._model import Session, generate_id, validate_id
from ._plugins import installed_backends, installed_plugins
from .hookspecs import hookimpl

try:
    __version__ = version("sessionkeeper")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0"

__all__ = [
    "CONFIG_ENV",
    "FORMAT_VERSION",
    "AsyncSessionManager",
    "BackendContext",
    "BackendNotFound",
    "BackendPlugin",
    "Capabilities",
    "Clock",
    "CodecError",
    "Config",
    "ConfigError",
    "ExpiryIndex",
    "FieldError",
    "InvalidSession",
    "ManagerClosed",
    "NoOptions",
    "PluginValidationError",
    "Session",
    "SessionKeeperError",
    "SessionManager",
    "SessionNotFound",
    "StorageError",
    "__version__",
    "check_store",
    "decode_session",
    "encode_session",
    "find_config",
    "generate_id",
    "hookimpl",
    "installed_backends",
    "installed_plugins",
    "load_config",
    "system_clock",
    "validate_id",
]
