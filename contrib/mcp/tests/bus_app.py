"""An ``mcp`` 2.x ``MCPServer`` on a given ``SubscriptionBus``, for the cross-worker bus tests.

``touch`` publishes a resource-updated event for its ``uri`` (what a tool that changes a
resource does). (No ``from __future__ import annotations``: the SDK evaluates the tool's
annotations.)
"""

from typing import Any

from mcp.server.mcpserver import Context, MCPServer


async def touch(uri: str, ctx: Context) -> str:
    """Announce that the resource at ``uri`` changed."""
    await ctx.notify_resource_updated(uri)
    return "touched"


def build_server(bus: Any) -> Any:
    """One worker's ``MCPServer``, its listen streams fed by ``bus``."""
    server = MCPServer("bus-test", subscriptions=bus)
    server.add_tool(touch)
    return server
