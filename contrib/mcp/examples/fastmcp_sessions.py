"""A ``fastmcp`` 4 server for protocol 2026-07-28 (sessionless) whose session state lives in
sessionkeeper, so every worker serves it and a restart keeps it: a running total in a
``session_id: SessionId`` session, and facts in each user's ``UserSession``.

``UserSession`` is keyed by the authenticated principal, so the server needs FastMCP auth: give
``build_server`` your auth provider (a ``JWTVerifier``, an OAuth provider). Then serve
``build_server(McpStores.from_config(), auth).http_app(path="/mcp")`` from every worker, all on
one shared store (a sqlitedict file with ``shared = true`` on one host; redis or postgres
across hosts). (No ``from __future__ import annotations``: FastMCP reads the tools'
annotations.)
"""

from typing import Any

from fastmcp import FastMCP
from fastmcp.server.dependencies import get_session
from fastmcp.server.sessions import SessionId, SessionProvider, UserSession

from sessionkeeper_mcp import McpStores, SessionStateStore


# start-server
def build_server(stores: McpStores, auth: Any = None) -> FastMCP:
    """The notes server: its session state in ``stores``, its users authenticated by ``auth``."""
    state = SessionStateStore(stores, max_value_bytes=16_384)  # larger values are refused
    mcp = FastMCP("notes", session_state_store=state, auth=auth)
    mcp.add_provider(SessionProvider())  # the create_session and end_session tools

    @mcp.tool
    async def add(session_id: SessionId, amount: int) -> int:
        """Add to the total of a session made by create_session; return the total."""
        session = await get_session(session_id)  # refuses an id of another principal
        total = await session.get("total", 0) + amount
        await session.set("total", total)
        return total

    @mcp.tool
    async def remember(fact: str, session: UserSession) -> int:
        """Keep a fact for the calling user; return how many they have."""
        facts = [*await session.get("facts", []), fact]
        await session.set("facts", facts)
        return len(facts)

    @mcp.tool
    async def recall(session: UserSession) -> list[str]:
        """The calling user's facts."""
        return list(await session.get("facts", []))

    return mcp


# end-server
