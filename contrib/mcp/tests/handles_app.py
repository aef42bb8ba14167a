"""The ``mcp`` 2.x ``MCPServer`` the handle tests serve (protocol 2026-07-28, no transport
session): a counter kept behind a state handle in the shared store.

``uvicorn --factory handles_app:create_app`` with ``SKMCP_CONFIG`` naming the sessionkeeper
config (the shared store). The SDK authenticates bearer tokens ``token-<name>`` as client
``<name>`` (its own ``BearerAuthBackend`` and ``RequireAuthMiddleware``, from ``token_verifier``
and ``auth``). With ``SKMCP_FLAVOR=stock`` the same tools keep their counters in a dict of the
process instead (the stock SDK alone: what ``tests/benchmarks/bench_mcp_workers.py`` measures
the store against; a restart or another worker does not see them).
"""

import inspect
import os
import secrets
import time
from typing import Annotated, Any

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.resolve import Resolve

from sessionkeeper_mcp import Handle, Handles, McpStores

WORKER = os.environ.get("SKMCP_WORKER", "?")
#: Whether ``Handles.update`` takes the resolved ``Handle`` (its write then reuses the resolve's
#: read). ``tests/benchmarks/bench_mcp_workers.py`` also serves this app from an install of an
#: earlier sessionkeeper-mcp, whose ``update`` takes the id only.
_UPDATE_TAKES_HANDLE = "Handle" in str(inspect.signature(Handles.update).parameters["handle"])


class Tokens:
    """A token verifier: ``token-alice`` is client ``alice``."""

    async def verify_token(self, token: str) -> AccessToken | None:
        if not token.startswith("token-"):
            return None
        return AccessToken(
            token=token,
            client_id=token.removeprefix("token-"),
            scopes=[],
            expires_at=int(time.time()) + 3600,
        )


def _authenticated_server() -> MCPServer:
    """An ``MCPServer`` that authenticates ``token-<name>`` bearer tokens."""
    return MCPServer(
        "skmcp-handles",
        token_verifier=Tokens(),
        auth=AuthSettings(
            issuer_url="http://127.0.0.1:1/issuer",
            resource_server_url="http://127.0.0.1:1/mcp",
            validate_token_resource=False,  # the test verifier checks no audience
        ),
    )


def build_server(handles: Handles) -> MCPServer:
    """The counter server on ``handles``."""
    server = _authenticated_server()

    @server.tool()
    async def new_counter(start: int = 0) -> str:
        """Mint a counter handle owned by the caller."""
        return (await handles.mint({"n": start})).id

    @server.tool()
    async def add(
        handle: str, amount: int, counter: Annotated[Handle, Resolve(handles.resolve_arg)]
    ) -> int:
        """Add ``amount`` to the counter atomically; return the new value."""
        target = counter if _UPDATE_TAKES_HANDLE else counter.id
        stored = await handles.update(target, lambda s: {**s, "n": s["n"] + amount})
        return int(stored.state["n"])

    @server.tool()
    async def read(handle: str, counter: Annotated[Handle, Resolve(handles.resolve_arg)]) -> str:
        """The counter's value and the worker that answered."""
        return f"{counter.state['n']}|{WORKER}"

    @server.tool()
    async def revoke(handle: str) -> bool:
        """End the counter handle (only its owner can)."""
        return await handles.revoke(handle)

    @server.tool()
    async def mine() -> list[str]:
        """The caller's live counter handles."""
        return await handles.list()

    return server


def build_stock_server() -> MCPServer:
    """``new_counter``, ``add`` and ``read`` on a dict of this process (no store, no owner
    check): the stock SDK's version of the counter server."""
    server = _authenticated_server()
    counters: dict[str, dict[str, int]] = {}

    @server.tool()
    async def new_counter(start: int = 0) -> str:
        """A new counter of this process."""
        key = secrets.token_urlsafe(32)
        counters[key] = {"n": start}
        return key

    @server.tool()
    async def add(handle: str, amount: int) -> int:
        """Add ``amount`` to the counter (one of this process: a new one if another process
        minted it); return the new value."""
        counter = counters.setdefault(handle, {"n": 0})
        counter["n"] += amount
        return counter["n"]

    @server.tool()
    async def read(handle: str) -> str:
        """The counter's value and the worker that answered."""
        return f"{counters.get(handle, {'n': 0})['n']}|{WORKER}"

    return server


def create_app() -> Any:
    """The app one worker serves."""
    if os.environ.get("SKMCP_FLAVOR") == "stock":
        return build_stock_server().streamable_http_app()
    stores = McpStores.from_config(os.environ["SKMCP_CONFIG"])
    return build_server(Handles(stores)).streamable_http_app()
