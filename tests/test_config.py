"""Configuration: lookup order, validation, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionkeeper import CONFIG_ENV, Config, ConfigError, SessionManager, load_config


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class TestLookup:
    def test_explicit_path_wins(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """An explicit path is used even when the env var and ./sessionkeeper.toml exist."""
        explicit = write(tmp_path / "a.toml", "[sessionkeeper]\ncleanup_interval = 1\n")
        env = write(tmp_path / "b.toml", "[sessionkeeper]\ncleanup_interval = 2\n")
        write(tmp_path / "sessionkeeper.toml", "[sessionkeeper]\ncleanup_interval = 3\n")
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv(CONFIG_ENV, str(env))
        assert load_config(explicit).cleanup_interval == 1
        assert load_config().cleanup_interval == 2
        monkeypatch.delenv(CONFIG_ENV)
        assert load_config().cleanup_interval == 3

    def test_no_file_means_memory_defaults(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a path, env var or ./sessionkeeper.toml, the defaults (memory) apply."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv(CONFIG_ENV, raising=False)
        config = load_config()
        assert config == Config()
        assert config.backend == "memory"
        assert config.source is None

    def test_missing_named_file_is_an_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file named by --config or the env var that does not exist is an error, not defaults."""
        with pytest.raises(ConfigError, match="config file not found") as info:
            load_config(tmp_path / "nope.toml")
        assert "nope.toml" in str(info.value)
        monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "gone.toml"))
        with pytest.raises(ConfigError, match=r"gone\.toml.*SESSIONKEEPER_CONFIG"):
            load_config()

    def test_relative_paths_resolve_against_the_file(self, tmp_path: Path) -> None:
        """base_dir is the config file's directory, so relative backend paths follow the file."""
        sub = tmp_path / "etc"
        sub.mkdir()
        config = load_config(write(sub / "sk.toml", "[sessionkeeper]\n"))
        assert config.base_dir == sub.resolve()


class TestValidation:
    def test_full_file_is_read(self, tmp_path: Path) -> None:
        """Every documented key is read with its type; "infinity" means no default timeout."""
        config = load_config(
            write(
                tmp_path / "sk.toml",
                """
                [sessionkeeper]
                backend = "memory"
                cleanup_interval = 0
                touch_resolution = 250
                default_timeout = "infinity"
                max_metadata_bytes = 1024
                stats = true

                [sessionkeeper.backend_opts]
                table_name = "t"

                [other_tool]
                ignored = true
                """.replace("                ", ""),
            )
        )
        assert config.cleanup_interval == 0
        assert config.touch_resolution == 250
        assert config.default_timeout is None
        assert config.max_metadata_bytes == 1024
        assert config.stats is True
        assert config.backend_opts == {"table_name": "t"}

    @pytest.mark.parametrize(
        ("text", "key", "wording"),
        [
            ("[sessionkeeper]\nbackend = 3\n", "sessionkeeper.backend", "expected a string"),
            (
                '[sessionkeeper]\ncleanup_interval = "60s"\n',
                "sessionkeeper.cleanup_interval",
                "expected an integer, got str '60s'",
            ),
            ("[sessionkeeper]\ncleanup_interval = -1\n", "sessionkeeper.cleanup_interval", ">= 0"),
            ("[sessionkeeper]\nstats = 1\n", "sessionkeeper.stats", "expected true or false"),
            ("[sessionkeeper]\ndefault_timeout = 0\n", "sessionkeeper.default_timeout", "> 0"),
            (
                '[sessionkeeper]\ndefault_timeout = "never"\n',
                "sessionkeeper.default_timeout",
                "infinity",
            ),
            (
                "[sessionkeeper]\nbackend_opts = 5\n",
                "sessionkeeper.backend_opts",
                "expected a table",
            ),
            ('[sessionkeeper]\nbakend = "memory"\n', "sessionkeeper.bakend", "unknown key"),
            (
                "[sessionkeeper]\nmax_metadata_bytes = 0\n",
                "sessionkeeper.max_metadata_bytes",
                "between 1 and",
            ),
        ],
    )
    def test_bad_values_name_file_key_and_expectation(
        self, tmp_path: Path, text: str, key: str, wording: str
    ) -> None:
        """A wrong type, bad value or unknown key names the file, the key and what was expected."""
        path = write(tmp_path / "bad.toml", text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        message = str(info.value)
        assert str(path.resolve()) in message
        assert key in message
        assert wording in message
        assert info.value.key == key

    def test_unknown_key_lists_the_allowed_ones(self, tmp_path: Path) -> None:
        """The unknown-key error lists the keys that are allowed, to catch typos."""
        with pytest.raises(ConfigError, match="allowed: backend, cleanup_interval"):
            load_config(write(tmp_path / "t.toml", "[sessionkeeper]\ncleanup_intervall = 1\n"))

    def test_malformed_toml_names_the_file_and_line(self, tmp_path: Path) -> None:
        """TOML that does not parse is a ConfigError with the file and the parser's position."""
        path = write(tmp_path / "broken.toml", "[sessionkeeper\nbackend = 'memory'\n")
        with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML.*line 1"):
            load_config(path)

    def test_missing_table_is_explained(self, tmp_path: Path) -> None:
        """A file without a [sessionkeeper] table says so (a typo in the table name is common)."""
        with pytest.raises(ConfigError, match=r"no \[sessionkeeper\] table"):
            load_config(write(tmp_path / "t.toml", "[sesionkeeper]\nbackend = 'memory'\n"))

    def test_table_must_be_a_table(self, tmp_path: Path) -> None:
        """sessionkeeper = 1 at top level is rejected naming the key."""
        with pytest.raises(ConfigError, match="must be a table"):
            load_config(write(tmp_path / "t.toml", "sessionkeeper = 1\n"))

    def test_undecodable_file_is_a_config_error(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 give a ConfigError, not a UnicodeDecodeError."""
        path = tmp_path / "t.toml"
        path.write_bytes(b'[sessionkeeper]\nbackend = "\xff"\n')
        with pytest.raises(ConfigError, match=r"t\.toml"):
            load_config(path)

    def test_keyword_arguments_are_validated_like_the_file(self) -> None:
        """SessionManager(...) keywords go through the same validation (no file in the message)."""
        with pytest.raises(
            ConfigError, match=r"sessionkeeper\.touch_resolution: expected an integer"
        ):
            SessionManager(touch_resolution="1s")  # type: ignore[arg-type]

    def test_backend_options_are_validated_by_the_backend(self, tmp_path: Path) -> None:
        """backend_opts go through the backend's own options class: unknown keys are named."""
        path = write(
            tmp_path / "t.toml",
            "[sessionkeeper]\nbackend = 'memory'\n[sessionkeeper.backend_opts]\nfile_path = 'x'\n",
        )
        with pytest.raises(
            ConfigError, match=r"sessionkeeper\.backend_opts\.file_path: unknown key"
        ):
            SessionManager.from_config(path)
