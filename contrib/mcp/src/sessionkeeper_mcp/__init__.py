"""MCP Streamable HTTP sessions that survive restarts and roam across workers, on sessionkeeper.

The ``mcp`` SDK (and FastMCP) keep Streamable HTTP sessions in a dict of the process that
created them. This package keeps them in the configured sessionkeeper store instead:

- :class:`PersistentSessionManager`: a drop-in ``StreamableHTTPSessionManager`` that records
  each session and brings it back on any worker, after any restart (owner and expiry checked).
- :class:`SessionKeeperEventStore`: resumability (``Last-Event-ID``) across workers.
- :class:`SessionStateStore`: FastMCP's ``session_state_store`` in the store, a py-key-value
  ``AsyncKeyValue`` (``SessionId`` / ``UserSession`` state on 2026-07-28, ``ctx.set_state`` on
  handshake-era sessions).
- :class:`Handles`: state handles for protocol 2026-07-28 (sessionless): mint, resolve (a
  ``Resolve`` dependency of ``MCPServer`` tools), atomic update, revoke, per principal.
- :class:`SingleUseRequestStateCodec`: each sealed ``requestState`` used at most once, on any
  worker (``RequestStateSecurity(codec=...)``).
- :class:`RedisSubscriptionBus`: ``MCPServer(subscriptions=...)`` shared by every worker
  (Redis pub/sub), so change notifications reach listen streams on any worker (mcp 2.x).
- :func:`persistent_http_app`: one call for an ``mcp`` 1.x ``FastMCP`` or 2.x ``MCPServer``;
  :func:`sessionkeeper_mcp.fastmcp.persistent_http_app` for ``fastmcp``.

Importing this package checks the installed ``mcp`` release (:data:`SUPPORTED_SDK`).
"""

from importlib.metadata import PackageNotFoundError, version

from ._app import lowlevel_server, persistent_http_app, persistent_session_manager
from ._bus import RedisSubscriptionBus
from ._compat import SDK_VERSION, SKIP_VERSION_CHECK_ENV, SUPPORTED_SDK, UnsupportedSDK, check_sdk
from ._events import SessionEventStore, SessionKeeperEventStore, purge_session_events
from ._handles import UNKNOWN_HANDLE, Handle, HandleNotFound, Handles, authenticated_principal
from ._manager import REHYDRATE_REQUEST_ID, PersistentSessionManager
from ._record import SessionRecord
from ._request_state import SingleUseRequestStateCodec
from ._state import SessionStateStore, purge_session_state
from ._stores import McpStores

try:
    __version__ = version("sessionkeeper-mcp")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0"

__all__ = [
    "REHYDRATE_REQUEST_ID",
    "SDK_VERSION",
    "SKIP_VERSION_CHECK_ENV",
    "SUPPORTED_SDK",
    "UNKNOWN_HANDLE",
    "Handle",
    "HandleNotFound",
    "Handles",
    "McpStores",
    "PersistentSessionManager",
    "SessionEventStore",
    "SessionKeeperEventStore",
    "SessionRecord",
    "RedisSubscriptionBus",
    "SessionStateStore",
    "SingleUseRequestStateCodec",
    "UnsupportedSDK",
    "__version__",
    "authenticated_principal",
    "check_sdk",
    "lowlevel_server",
    "persistent_http_app",
    "persistent_session_manager",
    "purge_session_events",
    "purge_session_state",
]
