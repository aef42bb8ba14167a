"""Messages of the kernel that tell a user what to do: install hints for a backend that is not
installed, and the defaults used when no config file was found (issues 12 item 15 and 19)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sessionkeeper import CONFIG_ENV, BackendNotFound, SessionManager, load_config
from sessionkeeper._errors import KNOWN_BACKENDS, did_you_mean, install_hint
from sessionkeeper._plugins import installed_backends
from sessionkeeper.cli import cli


def not_installed(name: str) -> None:
    if name in installed_backends():
        pytest.skip(f"the {name} backend is installed here")


class TestInstallHints:
    """Only the project's own distributions are ever suggested for ``pip install``."""

    @pytest.mark.parametrize("name", sorted(KNOWN_BACKENDS))
    def test_known_backends_get_the_index_and_the_checkout_forms(self, name: str) -> None:
        """Each of the project's backends is added by its distribution, or from a source
        checkout by its folder (the form that works before anything is on the index)."""
        distribution, folder = KNOWN_BACKENDS[name]
        assert distribution == f"sessionkeeper-{name}"
        assert install_hint(name) == (
            f"pip install ./{folder} from the root of a sessionkeeper checkout "
            f"(once published: pip install {distribution})"
        )
        root = Path(__file__).resolve().parents[1]
        if (root / folder).is_dir():
            assert (root / folder / "pyproject.toml").is_file()

    @pytest.mark.parametrize("name", ["reddis", "nosuchstore", "../../evil", "memory2"])
    def test_other_names_get_no_install_command(self, name: str) -> None:
        """A name that is not the project's own gets no ``pip install``: a package named after
        the input could be anyone's."""
        assert install_hint(name) is None
        message = str(BackendNotFound(name, ["memory"]))
        assert f"sessionkeeper-{name}" not in message

    def test_a_typo_gets_did_you_mean_and_the_right_package(self) -> None:
        """``backend = "reddis"`` suggests 'redis' and, when redis is not installed, the
        redis distribution; never ``sessionkeeper-reddis``."""
        error = BackendNotFound("reddis", ["memory", "sqlitedict"])
        message = str(error)
        assert error.suggestion == "redis"
        assert "backend 'reddis' is not installed (did you mean 'redis'?)" in message
        assert (
            "to add 'redis': pip install ./contrib/redis from the root of a sessionkeeper "
            "checkout (once published: pip install sessionkeeper-redis)"
        ) in message
        assert "./contrib/redis" in message
        assert "sessionkeeper-reddis" not in message

    def test_a_near_installed_backend_is_suggested_without_install(self) -> None:
        """A near name that is installed is suggested as is, with nothing to install."""
        message = str(BackendNotFound("sqlite", ["memory", "sqlitedict"]))
        assert "(did you mean 'sqlitedict'?)" in message
        assert "pip install" not in message

    @pytest.mark.parametrize(
        ("typed", "meant"),
        [("Redis", "redis"), ("memroy", "memory"), ("postgresql", "postgres"), ("zmq", None)],
    )
    def test_did_you_mean(self, typed: str, meant: str | None) -> None:
        """Near names (case and small typos) are matched over installed and known backends;
        an exact name gets no suggestion."""
        assert did_you_mean(typed, ["memory"]) == meant

    def test_from_a_config_file(self, tmp_path: Path) -> None:
        """Through a config file, the error names the file, the key and the suggestion."""
        not_installed("reddis")
        config = tmp_path / "sk.toml"
        config.write_text('[sessionkeeper]\nbackend = "reddis"\n')
        with pytest.raises(BackendNotFound) as info:
            SessionManager.from_config(config)
        assert info.value.suggestion == "redis"
        assert info.value.key == "sessionkeeper.backend"
        assert str(config.resolve()) in str(info.value)
        assert "sessionkeeper-reddis" not in str(info.value)


@pytest.fixture
def without_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed distributions as importlib.metadata lists them, minus sessionkeeper-memory:
    what a machine with only the core installed shows."""
    everything = importlib.metadata.distributions

    def distributions(**kwargs: object) -> Iterator[importlib.metadata.Distribution]:
        for dist in everything(**kwargs):  # type: ignore[arg-type]
            if dist.metadata["Name"] != "sessionkeeper-memory":
                yield dist

    monkeypatch.setattr(importlib.metadata, "distributions", distributions)
    assert "memory" not in installed_backends()


class TestDefaultsWithoutAFile:
    """With no config file the defaults apply, and an error about them says so."""

    def test_load_config_says_no_file_was_found(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, without_memory: None
    ) -> None:
        """No file and no memory backend: BackendNotFound says that no config file was found
        and the default settings apply, where it looked, and how to add memory."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv(CONFIG_ENV, raising=False)
        with pytest.raises(BackendNotFound) as info:
            load_config()
        message = str(info.value)
        assert "backend 'memory' is not installed" in message
        assert "no config file was found" in message
        assert "default settings apply" in message
        assert str(tmp_path) in message
        assert "pip install sessionkeeper-memory" in message
        assert "./plugins/memory" in message

    def test_cli_list_says_no_file_was_found(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, without_memory: None
    ) -> None:
        """``sessionkeeper list`` in a folder without a config exits 3 saying that no config
        file was found and the defaults were used, not only that memory is not installed."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv(CONFIG_ENV, raising=False)
        result = CliRunner().invoke(cli, ["list"], catch_exceptions=False)
        assert result.exit_code == 3
        assert "no config file was found" in result.stderr
        assert "backend 'memory' is not installed" in result.stderr

    def test_with_memory_installed_the_defaults_load(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Where memory is installed, no file means the defaults, without error."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv(CONFIG_ENV, raising=False)
        config = load_config()
        assert config.backend == "memory"
        assert config.source is None
