"""A ``fastmcp`` 4 server on protocol 2026-07-28 (no transport session) whose session state is
kept by :class:`~sessionkeeper_mcp.SessionStateStore` in the shared store.

``uvicorn --factory fastmcp_app:create_app`` with ``SKMCP_CONFIG`` naming the sessionkeeper
config. FastMCP's own ``StaticTokenVerifier`` authenticates ``token-alice`` and ``token-bob``.
Tools: ``create_session`` (FastMCP's ``SessionProvider``), ``add`` (a total in a
``session_id: SessionId`` session), ``remember`` and ``recall`` (facts in the caller's
``UserSession``); each answer ends with ``|<worker>``. (No ``from __future__ import
annotations``: FastMCP reads the tools' annotations.)
"""

import os
from typing import Any

from fastmcp import FastMCP
from fastmcp.server.auth.providers.jwt import StaticTokenVerifier
from fastmcp.server.dependencies import get_session
from fastmcp.server.sessions import SessionId, SessionProvider, UserSession

from sessionkeeper_mcp import McpStores, SessionStateStore

WORKER = os.environ.get("SKMCP_WORKER", "?")
TOKENS = {f"token-{name}": {"client_id": name, "scopes": []} for name in ("alice", "bob")}


def build_server(stores: McpStores) -> FastMCP:
    """The server, its session state in ``stores``."""
    mcp = FastMCP(
        "skmcp-fastmcp-sessionless",
        session_state_store=SessionStateStore(stores),
        auth=StaticTokenVerifier(tokens=TOKENS),
    )
    mcp.add_provider(SessionProvider())

    @mcp.tool
    async def add(session_id: SessionId, amount: int) -> str:
        """Add ``amount`` to the session's total; return it and the worker."""
        session = await get_session(session_id)
        total = await session.get("total", 0) + amount
        await session.set("total", total)
        return f"{total}|{WORKER}"

    @mcp.tool
    async def remember(fact: str, session: UserSession) -> str:
        """Add a fact to the caller's own session; return how many it holds and the worker."""
        facts = [*await session.get("facts", []), fact]
        await session.set("facts", facts)
        return f"{len(facts)}|{WORKER}"

    @mcp.tool
    async def recall(session: UserSession) -> str:
        """The caller's facts, then the worker."""
        return "|".join([*await session.get("facts", []), WORKER])

    return mcp


def create_app() -> Any:
    """The app one worker serves."""
    stores = McpStores.from_config(os.environ["SKMCP_CONFIG"])
    return build_server(stores).http_app(path="/mcp")
