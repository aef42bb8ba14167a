"""One call to serve an ``mcp`` SDK server with persistent sessions.

:func:`persistent_http_app` builds the Starlette app exactly as the SDK would
(``server.streamable_http_app(...)``: routes, auth middleware, custom routes) and then puts a
:class:`PersistentSessionManager` in the place of the SDK's session manager.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from ._events import SessionKeeperEventStore
from ._manager import PersistentSessionManager
from ._stores import McpStores

__all__ = ["lowlevel_server", "persistent_http_app", "persistent_session_manager"]

#: The SDK manager's settings copied onto the persistent manager.
_SETTINGS = (
    "json_response",
    "stateless",
    "security_settings",
    "retry_interval",
    "session_idle_timeout",
    "max_request_body_size",
    "max_sessions",
)


def lowlevel_server(server: Any) -> Any:
    """The low-level ``mcp.server.lowlevel.Server`` behind ``server``.

    ``server`` may be that server itself, an ``mcp`` 1.x ``FastMCP``, an ``mcp`` 2.x
    ``MCPServer`` or a ``fastmcp`` ``FastMCP``.
    """
    from mcp.server.lowlevel.server import Server

    if isinstance(server, Server):
        return server
    for attribute in ("_lowlevel_server", "_mcp_server"):
        inner = getattr(server, attribute, None)
        if isinstance(inner, Server):
            return inner
    raise TypeError(
        f"{type(server).__qualname__} is not an MCP server: pass an mcp Server, an mcp 1.x "
        "FastMCP, an mcp 2.x MCPServer or a fastmcp FastMCP"
    )


def persistent_session_manager(
    stock: Any,
    stores: McpStores,
    *,
    resumable: bool = False,
    check_interval: float = 5.0,
) -> PersistentSessionManager:
    """A :class:`PersistentSessionManager` with the settings of the SDK manager ``stock``.

    :param resumable: keep resumability events in ``stores`` (a :class:`SessionKeeperEventStore`)
        instead of ``stock``'s event store.
    """
    settings = {name: getattr(stock, name) for name in _SETTINGS if hasattr(stock, name)}
    event_store = SessionKeeperEventStore(stores) if resumable else stock.event_store
    return PersistentSessionManager(
        app=stock.app,
        event_store=event_store,
        stores=stores,
        check_interval=check_interval,
        **settings,
    )


def persistent_http_app(
    server: Any,
    stores: McpStores,
    *,
    resumable: bool = False,
    check_interval: float = 5.0,
    **kwargs: Any,
) -> Starlette:
    """The server's Streamable HTTP app, with sessions kept in ``stores``.

    ``server`` is an ``mcp`` 1.x ``FastMCP`` (settings come from its constructor) or an ``mcp``
    2.x ``MCPServer`` or low-level ``Server`` (``kwargs`` go to its ``streamable_http_app``:
    ``json_response``, ``event_store``, ``session_idle_timeout``, …). For ``fastmcp``'s
    ``FastMCP`` use :func:`sessionkeeper_mcp.fastmcp.persistent_http_app`.

    :param resumable: keep resumability events in ``stores`` (Last-Event-ID works on any worker).
    :param check_interval: see :class:`PersistentSessionManager`.
    """
    app: Starlette = server.streamable_http_app(**kwargs)
    stock = server.session_manager
    manager = persistent_session_manager(
        stock, stores, resumable=resumable, check_interval=check_interval
    )
    swapped = _swap_manager(app, stock, manager)
    if not swapped:
        raise RuntimeError(
            f"could not find the session manager in the app {type(server).__qualname__} built; "
            "mount a PersistentSessionManager yourself (see docs/mcp.md)"
        )
    for holder in (server, lowlevel_server(server)):
        if getattr(holder, "_session_manager", None) is stock:
            holder._session_manager = manager
    app.router.lifespan_context = lambda _app: manager.run()
    return app


def _swap_manager(app: Starlette, stock: Any, manager: PersistentSessionManager) -> int:
    """Point every ASGI wrapper in ``app``'s routes that serves ``stock`` at ``manager``."""
    swapped = 0
    for route in app.routes:
        seen: set[int] = set()
        todo = [getattr(route, "endpoint", None), getattr(route, "app", None)]
        while todo:
            node = todo.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if getattr(node, "session_manager", None) is stock:
                node.session_manager = manager
                swapped += 1
            todo.append(getattr(node, "app", None))
    return swapped
