"""The example server runs with its README command and keeps sessions over a restart."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from skmcp_client import SDK1
from skmcp_procs import Uvicorn

from sessionkeeper_mcp import McpStores

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class TestExample:
    """contrib/mcp/examples: server.py + sessionkeeper.toml (sqlitedict) + client.py."""

    def test_readme_walkthrough(self, tmp_path: Path) -> None:
        """open, call, restart, call, delete, call: the README's steps give its outputs."""
        pytest.importorskip("sessionkeeper_sqlitedict")
        for name in ("server.py", "sessionkeeper.toml", "client.py"):
            shutil.copy(EXAMPLES / name, tmp_path / name)
        readme = (EXAMPLES / "README.md").read_text()
        assert (
            "SESSIONKEEPER_CONFIG=sessionkeeper.toml uvicorn --factory server:create_app" in readme
        )
        server = Uvicorn(
            "example", "server:create_app", {"SESSIONKEEPER_CONFIG": "sessionkeeper.toml"},
            tmp_path, app_dir=tmp_path,
        )  # fmt: skip
        client = tmp_path / "client.py"
        client.write_text(client.read_text().replace(":8000/", f":{server.port}/"))

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, str(client), *args], capture_output=True, text=True, timeout=60
            )

        try:
            server.start()
            session_id = run("open").stdout.strip()
            assert len(session_id) == 32
            assert run("call", session_id).stdout.strip() == "you are example-client 1.0"
            server.restart()
            assert run("call", session_id).stdout.strip() == "you are example-client 1.0"
            assert run("delete", session_id).stdout.strip() == "200"
            gone = run("call", session_id)
            assert gone.returncode == 1
            assert gone.stdout.startswith("404")
        finally:
            server.stop()
        assert (tmp_path / "data" / "mcp-sessions.sqlite").exists()


@pytest.mark.skipif(SDK1, reason="the stateless example is for mcp 2.x (protocol 2026-07-28)")
class TestStatelessExample:
    """contrib/mcp/examples/stateless_server.py, the example docs/mcp.md includes, driven by
    the SDK's own client in its default mode."""

    def test_cart_and_single_use_checkout(self) -> None:
        """A cart handle collects items, checkout asks for confirmation (the client's driver
        answers it) and ends the cart; replaying the checkout's requestState is refused with
        the SDK's invalid-state error."""
        sys.path.insert(0, str(EXAMPLES))
        try:
            example = importlib.import_module("stateless_server")
        finally:
            sys.path.remove(str(EXAMPLES))
        import mcp_types
        from mcp import Client
        from mcp.shared.exceptions import MCPError

        async def confirm(_ctx: Any, _params: Any) -> Any:
            return mcp_types.ElicitResult(action="accept", content={"ok": True})

        async def body() -> None:
            async with McpStores.memory("ex" + uuid.uuid4().hex[:10]) as stores:
                server = example.build_server(stores, "s" * 64)
                async with Client(server, elicitation_callback=confirm) as client:
                    assert client.protocol_version == "2026-07-28"
                    handle = (await client.call_tool("new_cart", {})).structured_content["result"]
                    for item in ("tea", "milk"):
                        await client.call_tool("add_item", {"handle": handle, "item": item})
                    args = {"handle": handle}
                    first = await client.session.call_tool(
                        "checkout", args, allow_input_required=True
                    )
                    assert isinstance(first, mcp_types.InputRequiredResult)
                    answers = {
                        key: mcp_types.ElicitResult(action="accept", content={"ok": True})
                        for key in first.input_requests or {}
                    }
                    done = await client.session.call_tool(
                        "checkout", args, input_responses=answers,
                        request_state=first.request_state, allow_input_required=True,
                    )  # fmt: skip
                    assert done.content[0].text == "ordered 2 items"
                    with pytest.raises(MCPError, match="Invalid or expired requestState"):
                        await client.session.call_tool(
                            "checkout", args, input_responses=answers,
                            request_state=first.request_state, allow_input_required=True,
                        )  # fmt: skip
                    gone = await client.call_tool("add_item", {"handle": handle, "item": "x"})
                    assert gone.is_error

        anyio.run(body)
