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
    Unsupported,
    VersionConflict,
)
from ._expiry import ExpiryIndex
from ._manager import Clock, SessionManager, check_store, system_clock
from ._metrics import (
    METRIC_NAMES,
    MetricsCollector,
    MetricsServer,
    metrics_registry,
    metrics_text,
    start_metrics_server,
)
from ._model import Session, generate_id, validate_id
from ._plugins import installed_backends, installed_plugins
from ._transfer import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    ExportError,
    ExportFormatError,
    ExportHeader,
    ExportReader,
    ExportReport,
    ExportWriter,
    ImportReport,
    LineError,
    MigrationReport,
    SessionDigest,
    TransferAborted,
    VerificationFailed,
    export_sessions,
    import_sessions,
    migrate_sessions,
)
from .hookspecs import hookimpl

try:
    __version__ = version("sessionkeeper")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0"

__all__ = [
    "CONFIG_ENV",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "FORMAT_VERSION",
    "METRIC_NAMES",
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
    "ExportError",
    "ExportFormatError",
    "ExportHeader",
    "ExportReader",
    "ExportReport",
    "ExportWriter",
    "FieldError",
    "ImportReport",
    "InvalidSession",
    "LineError",
    "ManagerClosed",
    "MetricsCollector",
    "MetricsServer",
    "MigrationReport",
    "NoOptions",
    "PluginValidationError",
    "Session",
    "SessionDigest",
    "SessionKeeperError",
    "SessionManager",
    "SessionNotFound",
    "StorageError",
    "TransferAborted",
    "Unsupported",
    "VerificationFailed",
    "VersionConflict",
    "__version__",
    "check_store",
    "decode_session",
    "encode_session",
    "export_sessions",
    "find_config",
    "generate_id",
    "hookimpl",
    "import_sessions",
    "installed_backends",
    "installed_plugins",
    "load_config",
    "metrics_registry",
    "metrics_text",
    "migrate_sessions",
    "start_metrics_server",
    "system_clock",
    "validate_id",
]
