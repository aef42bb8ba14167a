"""The MCP server the end-to-end tests run in uvicorn worker processes.

``uvicorn --factory worker_app:create_app`` with the environment:

- ``SKMCP_CONFIG``: the sessionkeeper config file (the shared store).
- ``SKMCP_FLAVOR``: ``app`` (``persistent_http_app`` on an mcp 1.x ``FastMCP`` / 2.x
  ``MCPServer``), ``manual`` (a ``PersistentSessionManager`` mounted by hand), ``fastmcp``
  (``fastmcp.FastMCP`` with the state store) or ``stock`` (the SDK alone, for comparison).
- ``SKMCP_IDLE``: ``session_idle_timeout`` in seconds (default 1800).
- ``SKMCP_JSON``: ``1`` for JSON responses instead of SSE.
- ``SKMCP_RESUMABLE``: ``1`` to keep resumability events in the store.

Bearer tokens ``token-<name>`` authenticate client ``<name>``; no token is anonymous. Tools:
``whoami``; ``story`` and ``long_story`` (log, close the SSE stream, log on and return: a client
must reconnect); ``ask`` (elicits a name: the client answers with a POST of its own).
"""

import os
import time
from typing import Any

import anyio
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend
from mcp.server.auth.provider import AccessToken
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route

import sessionkeeper_mcp
from sessionkeeper_mcp import McpStores, PersistentSessionManager, SessionKeeperEventStore

WORKER = os.environ.get("SKMCP_WORKER", "?")


class Name(BaseModel):
    """What the ``ask`` tool elicits."""

    name: str


class Tokens:
    """A token verifier: ``token-alice`` is client ``alice``."""

    async def verify_token(self, token: str) -> AccessToken | None:
        if not token.startswith("token-"):
            return None
        name = token.removeprefix("token-")
        return AccessToken(
            token=token, client_id=name, scopes=[], expires_at=int(time.time()) + 3600
        )


def _client_name(ctx: Any) -> str:
    params = ctx.session.client_params
    if params is None:
        return "<none>"
    info = getattr(params, "client_info", None) or params.clientInfo
    return str(info.name)


def _session_id(ctx: Any) -> str:
    headers = getattr(ctx, "headers", None)
    if headers is None:
        headers = ctx.request_context.request.headers
    return str(headers.get("mcp-session-id"))


def _sdk_server() -> Any:
    if sessionkeeper_mcp.SDK_VERSION.startswith("1."):
        from mcp.server.fastmcp import Context, FastMCP

        server: Any = FastMCP(
            "skmcp-test",
            json_response=os.environ.get("SKMCP_JSON") == "1",
            session_idle_timeout=float(os.environ.get("SKMCP_IDLE", "1800")),
        )
    else:
        from mcp.server.mcpserver import Context, MCPServer

        server = MCPServer("skmcp-test")
    _add_tools(server, Context)
    return server


def _add_tools(server: Any, context: Any) -> None:
    async def whoami(ctx: context) -> str:  # type: ignore[valid-type]
        """The client's name as the session knows it, the session id and the worker."""
        return f"{_client_name(ctx)}|{_session_id(ctx)}|{WORKER}"

    async def story(ctx: context) -> str:  # type: ignore[valid-type]
        """Log part 1, close the SSE stream, log parts 2 and 3 and return."""
        await ctx.info("part 1")
        await ctx.close_sse_stream()
        await anyio.sleep(0.2)  # a long-running tool: the client is away for a while
        await ctx.info("part 2")
        await ctx.info("part 3")
        return f"the end|{WORKER}"

    async def long_story(ctx: context) -> str:  # type: ignore[valid-type]
        """Log part 1, close the SSE stream, and take a few seconds more to end."""
        await ctx.info("part 1")
        await ctx.close_sse_stream()
        await anyio.sleep(3)  # the client polls meanwhile, on whichever worker
        await ctx.info("part 2")
        return f"the end|{WORKER}"

    async def ask(ctx: context) -> str:  # type: ignore[valid-type]
        """Elicit a name from the client and greet it, with the worker that asked."""
        answer = await ctx.elicit("Your name?", Name)
        name = answer.data.name if answer.action == "accept" and answer.data else answer.action
        return f"hello {name}|{WORKER}"

    for tool in (whoami, story, long_story, ask):
        server.tool()(tool)


def _auth(app: Any) -> Any:
    app.add_middleware(AuthContextMiddleware)
    app.add_middleware(AuthenticationMiddleware, backend=BearerAuthBackend(Tokens()))
    return app


def create_app() -> Any:
    """Build the app this worker serves (see the module docstring)."""
    flavor = os.environ.get("SKMCP_FLAVOR", "app")
    stores = McpStores.from_config(os.environ["SKMCP_CONFIG"])
    resumable = os.environ.get("SKMCP_RESUMABLE") == "1"
    json_response = os.environ.get("SKMCP_JSON") == "1"
    idle = float(os.environ.get("SKMCP_IDLE", "1800"))
    if flavor == "fastmcp":
        return _fastmcp_app(stores, resumable=resumable, json_response=json_response, idle=idle)
    server = _sdk_server()
    if flavor == "stock":  # the SDK alone, for comparison (load test)
        if sessionkeeper_mcp.SDK_VERSION.startswith("1."):
            return server.streamable_http_app()
        return server.streamable_http_app(json_response=json_response, session_idle_timeout=idle)
    if flavor == "manual":
        manager = PersistentSessionManager(
            app=sessionkeeper_mcp.lowlevel_server(server),
            event_store=SessionKeeperEventStore(stores) if resumable else None,
            json_response=json_response,
            session_idle_timeout=idle,
            stores=stores,
            check_interval=0.5,
        )
        return Starlette(
            routes=[Route("/mcp", endpoint=manager.asgi_app)],
            middleware=[
                Middleware(AuthenticationMiddleware, backend=BearerAuthBackend(Tokens())),
                Middleware(AuthContextMiddleware),
            ],
            lifespan=lambda _app: manager.run(),
        )
    kwargs: dict[str, Any] = {}
    if not sessionkeeper_mcp.SDK_VERSION.startswith("1."):
        kwargs = {"json_response": json_response, "session_idle_timeout": idle}
    app = sessionkeeper_mcp.persistent_http_app(
        server, stores, resumable=resumable, check_interval=0.5, **kwargs
    )
    return _auth(app)


def _fastmcp_app(stores: McpStores, *, resumable: bool, json_response: bool, idle: float) -> Any:
    from fastmcp import Context, FastMCP

    from sessionkeeper_mcp import SessionStateStore
    from sessionkeeper_mcp.fastmcp import persistent_http_app

    mcp = FastMCP("skmcp-fastmcp", session_state_store=SessionStateStore(stores))

    @mcp.tool
    async def count(ctx: Context) -> str:
        """Add one to this session's counter and return it with the worker's name."""
        value = (await ctx.get_state("count") or 0) + 1
        await ctx.set_state("count", value)
        return f"{value}|{WORKER}"

    @mcp.tool
    async def whoami(ctx: Context) -> str:
        """The client's name as the session knows it, the session id and the worker."""
        return f"{_client_name(ctx)}|{ctx.session_id}|{WORKER}"

    app = persistent_http_app(
        mcp,
        stores,
        resumable=resumable,
        check_interval=0.5,
        path="/mcp",
        json_response=json_response,
        session_idle_timeout=idle,
    )
    return _auth(app)
