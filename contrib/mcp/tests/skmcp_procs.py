"""Real processes for the end-to-end tests: uvicorn MCP workers and the proxy.

Workers of one test share a store. Across processes that store must be shared: the ``redis``
backend (``sessionkeeper-redis`` and a ``redis-server`` binary); a single worker restarted in
place can use ``sqlitedict``. Every wait below is a deadline on a condition, never a timing
assertion. The benchmark ``tests/benchmarks/bench_mcp_workers.py`` runs its workers with these
classes too (without pytest: a process that does not start is then a ``RuntimeError``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TESTS = Path(__file__).resolve().parent
START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _fail(message: str) -> None:
    """Fail the running test (``pytest.fail``), or raise ``RuntimeError`` outside pytest."""
    if "pytest" in sys.modules:
        import pytest

        pytest.fail(message)
    raise RuntimeError(message)


def _wait_listening(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _fail(f"{what} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    _fail(f"{what} did not listen on port {port} within {START_DEADLINE_S} s")


@dataclass
class Uvicorn:
    """One uvicorn process serving ``factory`` (a ``module:function`` in this folder), run by
    ``python`` (default: this interpreter; another venv's runs another install of the code)."""

    name: str
    factory: str
    env: dict[str, str]
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    app_dir: Path = TESTS
    python: str = sys.executable

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> Uvicorn:
        command = [
            self.python, "-m", "uvicorn", "--factory", self.factory,
            "--app-dir", str(self.app_dir), "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "warning", "--timeout-graceful-shutdown", "2",
        ]  # fmt: skip
        env = {
            **os.environ,
            **self.env,
            "SKMCP_WORKER": self.name,
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200",
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.app_dir
            )
        _wait_listening(self.port, self.process, self.name, self.log)
        return self

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: the app's lifespan ends), SIGKILL past the deadline."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> Uvicorn:
        self.stop()
        return self.start()


@dataclass
class Cluster:
    """The processes of one test: workers on one shared store, and the proxy in front."""

    config: Path
    log_dir: Path
    processes: list[Uvicorn] = field(default_factory=list)
    proxy: Uvicorn | None = None

    def worker(
        self,
        name: str,
        factory: str = "worker_app:create_app",
        *,
        python: str = sys.executable,
        config: Path | None = None,
        **env: str,
    ) -> Uvicorn:
        """Start a worker serving ``factory`` (default ``worker_app``) on the shared store (or
        on ``config``), run by ``python``."""
        store = self.config if config is None else config
        worker = Uvicorn(
            name, factory, {"SKMCP_CONFIG": str(store), **env}, self.log_dir, python=python
        )
        self.processes.append(worker)
        return worker.start()

    def route(self, *workers: Uvicorn, mode: str = "pin", index: int = 0) -> str:
        """Send the proxy's traffic to ``workers``; return the proxy's MCP URL."""
        if self.proxy is None:
            self.proxy = Uvicorn("proxy", "proxy_app:create_app", {}, self.log_dir)
            self.processes.append(self.proxy)
            self.proxy.start()
        response = httpx.post(
            f"{self.proxy.url}/__proxy__",
            json={"targets": [w.url for w in workers], "mode": mode, "index": index},
        )
        response.raise_for_status()
        return f"{self.proxy.url}/mcp"

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.log.read_text()[-3000:]}" for p in self.processes if p.log.exists()
        )


def _toml(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int) else f'"{value}"'


def write_config(
    path: Path,
    backend: str,
    backend_opts: Mapping[str, str | int | bool],
    cleanup: int = 1000,
) -> Path:
    """A sessionkeeper config file."""
    lines = ["[sessionkeeper]", f'backend = "{backend}"', f"cleanup_interval = {cleanup}", "",
             "[sessionkeeper.backend_opts]"]  # fmt: skip
    lines += [f"{key} = {_toml(value)}" for key, value in backend_opts.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
