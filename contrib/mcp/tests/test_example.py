"""The example server runs with its README command and keeps sessions over a restart."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from skmcp_procs import Uvicorn

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
