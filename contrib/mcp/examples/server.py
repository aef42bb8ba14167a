"""An MCP server whose Streamable HTTP sessions survive restarts (sessionkeeper + sqlitedict).

Run it (see README.md)::

    SESSIONKEEPER_CONFIG=sessionkeeper.toml uvicorn --factory server:create_app --port 8000

Works with ``mcp`` 1.30 (``FastMCP``) and 2.3 (``MCPServer``): the server is built the SDK's way
and served with :func:`sessionkeeper_mcp.persistent_http_app`.
"""

from typing import Any

import sessionkeeper_mcp
from sessionkeeper_mcp import McpStores

if sessionkeeper_mcp.SDK_VERSION.startswith("1."):
    from mcp.server.fastmcp import Context
    from mcp.server.fastmcp import FastMCP as Server
else:
    from mcp.server.mcpserver import Context
    from mcp.server.mcpserver import MCPServer as Server

server: Any = Server("sessionkeeper-example")


@server.tool()
async def whoami(ctx: Context) -> str:  # type: ignore[type-arg]
    """Who this session belongs to: the client's name from its initialize request."""
    params = ctx.session.client_params
    info = getattr(params, "client_info", None) or params.clientInfo
    return f"you are {info.name} {info.version}"


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def create_app() -> Any:
    """The ASGI app: the SDK's Streamable HTTP app with sessions kept in sessionkeeper.

    The store comes from the sessionkeeper config file ($SESSIONKEEPER_CONFIG, else
    ./sessionkeeper.toml); resumability events are kept there too.
    """
    stores = McpStores.from_config()
    return sessionkeeper_mcp.persistent_http_app(server, stores, resumable=True)
