"""Fixtures of the end-to-end tests: a shared store and the processes of one test.

Workers in several processes need a store shared between processes: the ``redis`` backend
(``sessionkeeper-redis`` and a ``redis-server`` binary), or, on one host, the ``sqlitedict``
backend with ``shared = true``; without them those tests are skipped. ``cluster`` runs on Redis;
``store_cluster`` runs its test once on each of the two.
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


#: The stores several worker processes can share, as ``store_cluster`` names them.
SHARED_STORES = ("sqlite-shared", "redis")


@pytest.fixture(params=SHARED_STORES)
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A config on one store several processes share: a sqlitedict file in shared mode, or
    Redis; tables of this test's own."""
    if request.param == "redis":
        config: Path = request.getfixturevalue("shared_config")
        return config
    if find_spec("sessionkeeper_sqlitedict") is None:
        pytest.skip("the shared sqlite store needs sessionkeeper-sqlitedict (plugins/sqlitedict)")
    opts: dict[str, str | int | bool] = {
        "file_path": str(tmp_path / "shared.sqlite"),
        "shared": True,
    }
    return write_config(tmp_path / "sqlite-shared.toml", "sqlitedict", opts)


@pytest.fixture
def store_cluster(
    store_config: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """Processes on ``store_config`` (each store in turn), stopped after the test."""
    yield from _processes(store_config, tmp_path, request)


@pytest.fixture
def cluster(
    shared_config: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """Processes on the shared store, stopped after the test (their logs shown on failure)."""
    yield from _processes(shared_config, tmp_path, request)


def _processes(config: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A :class:`Cluster` on ``config``, stopped afterwards (its logs shown on failure)."""
    found = Cluster(config, tmp_path)
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
