"""An ``mcp`` 2.x ``MCPServer`` with one multi-round-trip tool, for the requestState tests.

``greet`` elicits a name through a ``Resolve`` dependency: on protocol 2026-07-28 the first call
answers ``InputRequiredResult`` with a sealed ``requestState``, the retry completes. (No
``from __future__ import annotations``: the SDK evaluates the tool's annotations.)
"""

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.server.request_state import RequestStateSecurity
from pydantic import BaseModel


class Name(BaseModel):
    """What ``greet`` asks for."""

    name: str


def ask() -> Elicit[Name]:
    """The resolver: ask the client for a name."""
    return Elicit("Your name?", Name)


async def greet(who: Annotated[Name, Resolve(ask)]) -> str:
    """Greet whoever the client names."""
    return f"hello {who.name}"


def build_server(codec: Any) -> MCPServer:
    """The server, its requestState sealed by ``codec``."""
    server = MCPServer("rs-test", request_state_security=RequestStateSecurity(codec=codec))
    server.tool()(greet)
    return server
