"""Fixtures of the end-to-end tests: a shared store (Redis) and the processes of one test.

Workers in several processes need a store shared between processes: the ``redis`` backend
(``sessionkeeper-redis`` and a ``redis-server`` binary); without them those tests are skipped.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

# The helper modules (skmcp_*) and the apps uvicorn imports live beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from skmcp_procs import STOP_DEADLINE_S, Cluster, _wait_listening, free_port, write_config

# --- the shared store --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``redis-server`` on a free loopback port (skips when Redis or the backend is missing)."""
    binary = shutil.which("redis-server")
    if binary is None or find_spec("sessionkeeper_redis") is None:
        pytest.skip(
            "workers in several processes need a shared store: install redis-server and "
            "sessionkeeper-redis (contrib/redis)"
        )
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_listening(port, process, "redis-server", folder / "none.log")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_DEADLINE_S)
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def shared_config(tmp_path: Path, redis_url: str) -> Path:
    """A config on the shared Redis store, with tables of this test's own."""
    table = "t" + uuid.uuid4().hex[:12]
    return write_config(tmp_path / "shared.toml", "redis", {"url": redis_url, "table_name": table})


@pytest.fixture
def cluster(
    shared_config: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """Processes on the shared store, stopped after the test (their logs shown on failure)."""
    found = Cluster(shared_config, tmp_path)
    try:
        yield found
    finally:
        found.close()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(found.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
