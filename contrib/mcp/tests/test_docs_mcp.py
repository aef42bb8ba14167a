"""Every inline Python example of docs/mcp.md runs (issue 18), not just compiles.

Each block runs in a fresh namespace, in a folder holding the ``sessionkeeper.toml`` it opens
(the memory backend), on the SDK line it is written for (a block for the other line is skipped).
A block that uses ``mcp`` without defining it (the manual mount: "your server") gets a server
of the installed SDK. Then what it built is exercised: an ``app`` opens a handshake-era session
over HTTP (its lifespan running) and the session is in the store; a ``codec`` accepts a sealed
state once; a ``bus`` and a ``server`` are what they claim to be. The examples included from
``contrib/mcp/examples`` are driven by their own tests (test_example, the fastmcp e2e).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from skmcp_client import SDK1, headers, initialize_body

from sessionkeeper_mcp import McpStores, SingleUseRequestStateCodec

PAGE = Path(__file__).resolve().parents[3] / "docs" / "mcp.md"
FENCE = re.compile(r"^(?P<indent>[ ]*)```python\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
CONFIG = (
    '[sessionkeeper]\nbackend = "memory"\n\n[sessionkeeper.backend_opts]\ntable_name = "docs"\n'
)


def _blocks() -> list[tuple[str, str]]:
    text = PAGE.read_text(encoding="utf-8")
    found = []
    for number, match in enumerate(FENCE.finditer(text), start=1):
        lines = match["body"].splitlines()
        found.append(
            (f"mcp.md#py{number}", "\n".join(x.removeprefix(match["indent"]) for x in lines))
        )
    return found


BLOCKS = _blocks()


def _needs(body: str) -> str | None:
    """Why the block cannot run with the installed SDK, or ``None``."""
    if "from mcp.server.fastmcp import" in body and not SDK1:
        return "an mcp 1.x example"
    if ("mcp.server.mcpserver" in body or "RedisSubscriptionBus" in body) and SDK1:
        return "an mcp 2.x example"
    if "from fastmcp import" in body and SDK1:
        return "a fastmcp 4 example (mcp 2.x)"
    return None


def _uses_undefined_mcp(tree: ast.Module) -> bool:
    names = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "mcp"]
    return any(isinstance(n.ctx, ast.Load) for n in names) and not any(
        isinstance(n.ctx, ast.Store) for n in names
    )


def _installed_server() -> Any:
    if SDK1:
        from mcp.server.fastmcp import FastMCP

        return FastMCP("docs")
    from mcp.server.mcpserver import MCPServer

    return MCPServer("docs")


async def _open_session(app: Any, stores: McpStores) -> None:
    """Initialize a handshake-era session through ``app``; it is recorded in ``stores``."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            response = await http.post("/mcp", json=initialize_body("docs"), headers=headers())
        assert response.status_code == 200, response.text
        session_id = response.headers["mcp-session-id"]
        assert (await stores.sessions.peek(session_id)).metadata["mcp"] == 1


@pytest.mark.parametrize(("where", "body"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_example_runs(
    where: str, body: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block runs and what it builds works (see the module docstring)."""
    reason = _needs(body)
    if reason is not None:
        pytest.skip(reason)
    if "from fastmcp import" in body:
        pytest.importorskip("fastmcp")
    (tmp_path / "sessionkeeper.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MCP_STATE_KEY", "k" * 32)
    tree = ast.parse(body, filename=where)
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    if _uses_undefined_mcp(tree):
        namespace["mcp"] = _installed_server()
    exec(compile(tree, where, "exec"), namespace)
    stores = namespace.get("stores")

    async def check() -> None:
        if "app" in namespace:
            assert isinstance(stores, McpStores), where
            await _open_session(namespace["app"], stores)
        if "codec" in namespace:
            codec = namespace["codec"]
            assert isinstance(codec, SingleUseRequestStateCodec)
            token = codec.seal(b'{"v":1,"exp":9999999999}')
            assert codec.unseal(token) == b'{"v":1,"exp":9999999999}'
            with pytest.raises(Exception, match="replayed"):
                codec.unseal(token)
        if "bus" in namespace:
            bus = namespace["bus"]
            assert callable(bus.publish)
            assert callable(bus.subscribe)
            await bus.aclose()
        if isinstance(stores, McpStores):
            await stores.aclose()

    anyio.run(check)
