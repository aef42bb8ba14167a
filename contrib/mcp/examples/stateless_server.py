"""An MCP server for protocol 2026-07-28 (mcp 2.x ``MCPServer``, sessionless): a shopping cart
kept behind a state handle, and a checkout that asks the user to confirm (one extra round trip)
whose ``requestState`` can be used once, on whichever worker the retry lands.

Run several workers on one shared store (redis, or postgres)::

    export MCP_STATE_KEY=$(python -c "import secrets; print(secrets.token_hex(32))")
    SESSIONKEEPER_CONFIG=redis.toml \\
        uvicorn --factory stateless_server:create_app --workers 3 --port 8000

Every worker needs the same ``MCP_STATE_KEY`` (it seals ``requestState``) and the same store.
(No ``from __future__ import annotations``: the SDK evaluates the tools' annotations.)
"""

import os
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.server.request_state import AESGCMRequestStateCodec, RequestStateSecurity
from pydantic import BaseModel

from sessionkeeper_mcp import Handle, Handles, McpStores, SingleUseRequestStateCodec


class Confirm(BaseModel):
    """What checkout asks the user."""

    ok: bool


def confirm() -> Elicit[Confirm]:
    """Ask the user to confirm the checkout."""
    return Elicit("Place the order?", Confirm)


# start-server
def build_server(stores: McpStores, state_key: str) -> MCPServer:
    """The cart server: its state in ``stores``, its requestState sealed with ``state_key``."""
    handles = Handles(stores, idle_timeout=1800, absolute_timeout=8 * 3600)
    codec = SingleUseRequestStateCodec(AESGCMRequestStateCodec([state_key]), stores)
    server = MCPServer("cart", request_state_security=RequestStateSecurity(codec=codec))
    Cart = Annotated[Handle, Resolve(handles.resolve_arg)]  # the `handle` argument, resolved

    @server.tool()
    async def new_cart() -> str:
        """Open a cart; pass the returned handle to the other tools."""
        return (await handles.mint({"items": []})).id

    @server.tool()
    async def add_item(handle: str, item: str, cart: Cart) -> list[str]:
        """Add an item (atomically: parallel calls lose nothing)."""
        stored = await handles.update(cart, lambda s: {"items": [*s["items"], item]})
        return list(stored.state["items"])

    @server.tool()
    async def checkout(
        handle: str, cart: Cart, answer: Annotated[Confirm, Resolve(confirm)]
    ) -> str:
        """Place the order once the user confirmed; the cart handle ends."""
        if not answer.ok:
            return "not ordered"
        await handles.revoke(cart.id)
        return f"ordered {len(cart.state['items'])} items"

    return server


# end-server


def create_app() -> Any:
    """The ASGI app of one worker (config from ``SESSIONKEEPER_CONFIG``)."""
    stores = McpStores.from_config()
    return build_server(stores, os.environ["MCP_STATE_KEY"]).streamable_http_app()
