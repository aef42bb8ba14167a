"""FastMCP (the ``fastmcp`` package, 4.x) with sessions kept in sessionkeeper.

Install with ``pip install "sessionkeeper-mcp[fastmcp]"``. Two pieces::

    from fastmcp import FastMCP
    from sessionkeeper_mcp import McpStores, SessionStateStore
    from sessionkeeper_mcp.fastmcp import persistent_http_app

    stores = McpStores.from_config("sessionkeeper.toml")
    mcp = FastMCP("demo", session_state_store=SessionStateStore(stores))   # ctx.set_state follows
    app = persistent_http_app(mcp, stores, resumable=True)                 # sessions follow

``persistent_http_app`` builds the app with ``mcp.http_app(**kwargs)`` and makes its lifespan
create a :class:`~sessionkeeper_mcp.PersistentSessionManager` where FastMCP would create its
``FastMCPStreamableHTTPSessionManager``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from ._events import SessionEventStore, SessionKeeperEventStore
from ._manager import PersistentSessionManager
from ._state import SessionStateStore
from ._stores import McpStores

__all__ = ["FastMCPPersistentSessionManager", "SessionStateStore", "persistent_http_app"]

#: Where FastMCP looks up the session manager class it builds in the app's lifespan.
_FACTORY_MODULE = "fastmcp.server.http"
_FACTORY_NAME = "FastMCPStreamableHTTPSessionManager"


class FastMCPPersistentSessionManager(PersistentSessionManager):
    """:class:`PersistentSessionManager` that scopes a non-sessionkeeper event store as FastMCP
    does (``SessionScopedEventStore``), but by the real session id, so replay works after the
    session moved to another worker when that store is shared."""

    def _event_view(self, session_id: str) -> Any:
        view: SessionEventStore | None = super()._event_view(session_id)
        if view is not None or self.event_store is None:
            return view
        scoped: Any = importlib.import_module("fastmcp.server.session_scoped_event_store")
        return scoped.SessionScopedEventStore(self.event_store, session_id=session_id)


def _factory(
    stores: McpStores, resumable: bool, check_interval: float
) -> Callable[..., PersistentSessionManager]:
    def build(
        *,
        app: Any,
        event_store: Any = None,
        json_response: bool = False,
        stateless: bool = False,
        security_settings: Any = None,
        retry_interval: int | None = None,
        session_idle_timeout: Any = "auto",
    ) -> PersistentSessionManager:
        options: dict[str, Any] = {}
        if session_idle_timeout != "auto":
            options["session_idle_timeout"] = session_idle_timeout
        return FastMCPPersistentSessionManager(
            app=app,
            event_store=SessionKeeperEventStore(stores) if resumable else event_store,
            json_response=json_response,
            stateless=stateless,
            security_settings=security_settings,
            retry_interval=retry_interval,
            stores=stores,
            check_interval=check_interval,
            **options,
        )

    return build


def persistent_http_app(
    server: Any,
    stores: McpStores,
    *,
    resumable: bool = False,
    check_interval: float = 5.0,
    **kwargs: Any,
) -> Any:
    """``server.http_app(**kwargs)`` with sessions kept in ``stores``.

    :param server: a ``fastmcp.FastMCP``.
    :param resumable: keep resumability events in ``stores`` (Last-Event-ID works on any worker).
    :param check_interval: see :class:`~sessionkeeper_mcp.PersistentSessionManager`.
    """
    module = importlib.import_module(_FACTORY_MODULE)
    if not hasattr(module, _FACTORY_NAME):
        raise RuntimeError(
            f"{_FACTORY_MODULE}.{_FACTORY_NAME} is gone: this fastmcp release is not supported "
            "by sessionkeeper-mcp (tested with fastmcp 4.2)"
        )
    app = server.http_app(**kwargs)
    original = app.router.lifespan_context
    build = _factory(stores, resumable, check_interval)

    @contextlib.asynccontextmanager
    async def lifespan(starlette_app: Any) -> AsyncIterator[None]:
        stock = getattr(module, _FACTORY_NAME)

        def one_shot(**options: Any) -> PersistentSessionManager:
            setattr(module, _FACTORY_NAME, stock)
            return build(**options)

        # FastMCP's lifespan builds its session manager before its first await; the swap is
        # undone by that very call, so no other code ever sees it.
        setattr(module, _FACTORY_NAME, one_shot)
        try:
            context = original(starlette_app)
            state = await context.__aenter__()
        finally:
            setattr(module, _FACTORY_NAME, stock)
        try:
            yield state
        except BaseException as exc:
            if not await context.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await context.__aexit__(None, None, None)

    app.router.lifespan_context = lifespan
    return app
