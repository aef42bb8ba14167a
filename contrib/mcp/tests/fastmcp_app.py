"""The ``fastmcp`` 4 example server (``contrib/mcp/examples/fastmcp_sessions.py``) as the
end-to-end tests serve it: FastMCP's own ``StaticTokenVerifier`` authenticates ``token-alice``
and ``token-bob``, and a ``worker`` tool names the worker that answered.

``uvicorn --factory fastmcp_app:create_app`` with ``SKMCP_CONFIG`` naming the sessionkeeper
config (the shared store).
"""

import os
import sys
from pathlib import Path
from typing import Any

from fastmcp.server.auth.providers.jwt import StaticTokenVerifier

from sessionkeeper_mcp import McpStores

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from fastmcp_sessions import build_server

WORKER = os.environ.get("SKMCP_WORKER", "?")
TOKENS = {f"token-{name}": {"client_id": name, "scopes": []} for name in ("alice", "bob")}


def create_app() -> Any:
    """The app one worker serves."""
    stores = McpStores.from_config(os.environ["SKMCP_CONFIG"])
    server = build_server(stores, auth=StaticTokenVerifier(tokens=TOKENS))

    @server.tool
    async def worker() -> str:
        """The name of the worker that answered."""
        return WORKER

    return server.http_app(path="/mcp")
