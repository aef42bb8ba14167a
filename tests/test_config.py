"""Configuration: lookup order, validation, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionkeeper import (
    CONFIG_ENV,
    AsyncSessionManager,
    BackendNotFound,
    Config,
    ConfigError,
    SessionManager,
    load_config,
)
from sessionkeeper._config import MAX_CONFIG_DEPTH, MAX_DURATION_MS
from sessionkeeper.backend import FieldError


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
            (
                "[sessionkeeper]\ncleanup_interval = -1\n",
                "sessionkeeper.cleanup_interval",
                "between 0 and",
            ),
            ("[sessionkeeper]\nstats = 1\n", "sessionkeeper.stats", "expected true or false"),
            (
                "[sessionkeeper]\ndefault_timeout = 0\n",
                "sessionkeeper.default_timeout",
                "between 1 and",
            ),
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


class TestBounds:
    """Every number of the core table is bounded at load time (issue 12 item 13)."""

    @pytest.mark.parametrize(
        ("line", "key"),
        [
            ("cleanup_interval = 99999999999999", "sessionkeeper.cleanup_interval"),
            ("default_timeout = 99999999999999999999", "sessionkeeper.default_timeout"),
            ("default_timeout = 9223372036854775807", "sessionkeeper.default_timeout"),
            ("touch_resolution = 99999999999999", "sessionkeeper.touch_resolution"),
            ("max_metadata_bytes = 99999999999999", "sessionkeeper.max_metadata_bytes"),
        ],
    )
    def test_numbers_past_the_maximum_name_the_key_and_file(
        self, tmp_path: Path, line: str, key: str
    ) -> None:
        """A value that validates by type but would break later (the scheduler's timer, every
        create) is refused when the file is loaded, naming the key, the file and the bound."""
        path = write(tmp_path / "big.toml", f"[sessionkeeper]\n{line}\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.key == key
        assert info.value.path == path.resolve()
        assert key in str(info.value)
        assert "between" in str(info.value)

    def test_the_maximum_itself_is_accepted(self, tmp_path: Path) -> None:
        """Ten years of ms is accepted for every duration; one more ms is not."""
        lines = "".join(
            f"{key} = {MAX_DURATION_MS}\n"
            for key in ("cleanup_interval", "touch_resolution", "default_timeout")
        )
        config = load_config(write(tmp_path / "max.toml", f"[sessionkeeper]\n{lines}"))
        assert config.cleanup_interval == config.default_timeout == MAX_DURATION_MS
        with pytest.raises(ConfigError, match="cleanup_interval"):
            Config.from_mapping({"cleanup_interval": MAX_DURATION_MS + 1})

    def test_keyword_arguments_are_bounded_too(self) -> None:
        """SessionManager(...) keywords are bounded like the file: a huge interval or default
        timeout is a ConfigError before anything opens, not a dead scheduler or failing creates."""
        with pytest.raises(ConfigError, match=r"sessionkeeper\.cleanup_interval"):
            SessionManager(cleanup_interval=99_999_999_999_999)
        with pytest.raises(ConfigError, match=r"sessionkeeper\.default_timeout"):
            SessionManager(default_timeout=99_999_999_999_999_999_999)

    def test_a_config_built_in_code_is_bounded(self) -> None:
        """Config(...) built directly applies the same bounds through its validators."""
        with pytest.raises(FieldError, match="between 0 and"):
            Config(cleanup_interval=MAX_DURATION_MS + 1)
        with pytest.raises(FieldError, match="infinity"):
            Config(default_timeout=MAX_DURATION_MS + 1)


class TestNesting:
    """Deeply nested TOML is bad input, not a crash (issue 12 item 9)."""

    def test_deeply_nested_file_is_a_config_error(self, tmp_path: Path) -> None:
        """An array nested 100,000 deep makes the TOML parser recurse too deep: a ConfigError
        naming the file (CLI exit 3), never a RecursionError (exit 4)."""
        path = write(
            tmp_path / "deep.toml", "[sessionkeeper]\nx = " + "[" * 100_000 + "]" * 100_000 + "\n"
        )
        with pytest.raises(ConfigError, match="nested too deeply") as info:
            load_config(path)
        assert info.value.path == path.resolve()

    def test_deeply_nested_inline_tables_are_a_config_error(self, tmp_path: Path) -> None:
        """The same for inline tables nested 100,000 deep."""
        path = write(tmp_path / "deep.toml", "a = " + "{b=" * 100_000 + "1" + "}" * 100_000)
        with pytest.raises(ConfigError, match="nested too deeply"):
            load_config(path)

    def test_backend_options_nested_past_the_limit_name_the_key(self, tmp_path: Path) -> None:
        """backend_opts that parse but nest deeper than MAX_CONFIG_DEPTH are refused naming
        sessionkeeper.backend_opts and where the nesting went too deep."""
        depth = MAX_CONFIG_DEPTH + 1
        path = write(
            tmp_path / "deep.toml",
            "[sessionkeeper.backend_opts]\nx = " + "[" * depth + "]" * depth + "\n",
        )
        with pytest.raises(ConfigError, match="nested deeper than") as info:
            load_config(path)
        assert info.value.key == "sessionkeeper.backend_opts"


class TestEveryKeyAtFault:
    """load_config returns a config that is valid through and through, and names every key at
    fault (issue 19; what configuration.md says)."""

    def test_unknown_backend_option_fails_at_load_time(self, tmp_path: Path) -> None:
        """An option the installed backend does not know is refused by load_config, not only
        when the store opens."""
        path = write(
            tmp_path / "t.toml",
            "[sessionkeeper]\nbackend = 'memory'\n[sessionkeeper.backend_opts]\ntable = 'x'\n",
        )
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.key == "sessionkeeper.backend_opts.table"
        assert "unknown key (allowed: table_name)" in str(info.value)

    def test_every_mistake_is_reported_at_once(self, tmp_path: Path) -> None:
        """Two type errors, two values out of bounds, an unknown key and two bad backend
        options: one error names all seven keys."""
        path = write(
            tmp_path / "t.toml",
            """
            [sessionkeeper]
            backend = "memory"
            cleanup_interval = -1
            default_timeout = 0
            touch_resolution = "1s"
            stats = "yes"
            colour = "blue"
            [sessionkeeper.backend_opts]
            table_name = 5
            tabel_name = "t"
            """.replace("            ", ""),
        )
        with pytest.raises(ConfigError) as info:
            load_config(path)
        message = str(info.value)
        for key in (
            "cleanup_interval",
            "default_timeout",
            "touch_resolution",
            "stats",
            "colour",
            "backend_opts.table_name",
            "backend_opts.tabel_name",
        ):
            assert f"sessionkeeper.{key}: " in message, key

    def test_options_of_a_backend_not_installed_wait_for_the_open(self, tmp_path: Path) -> None:
        """A backend that is not installed cannot check its options: load_config returns the
        config, and opening it raises BackendNotFound."""
        path = write(
            tmp_path / "t.toml",
            "[sessionkeeper]\nbackend = 'nosuch'\n[sessionkeeper.backend_opts]\nanything = 1\n",
        )
        config = load_config(path)
        assert config.backend_opts == {"anything": 1}
        with pytest.raises(BackendNotFound):
            SessionManager.from_settings(config)


class TestMissingFileMessages:
    """A missing file is reported naming what named it (issue 19)."""

    def test_from_config_names_itself(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """SessionManager.from_config("sessionkeeper.toml") with no such file says that
        from_config named it, with the absolute path; not "--config"."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv(CONFIG_ENV, raising=False)
        with pytest.raises(ConfigError) as info:
            SessionManager.from_config("sessionkeeper.toml")
        message = str(info.value)
        assert "--config" not in message
        assert "named by SessionManager.from_config()" in message
        assert str(tmp_path / "sessionkeeper.toml") in message

    def test_async_from_config_names_itself(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The async manager's from_config names itself likewise."""
        with pytest.raises(ConfigError, match=r"named by AsyncSessionManager\.from_config\(\)"):
            AsyncSessionManager.from_config(tmp_path / "nope.toml")

    def test_named_by_is_the_callers_word(self, tmp_path: Path) -> None:
        """load_config(path, named_by=...) puts the caller's word in the message (the CLI says
        --config); a directory is called a directory."""
        with pytest.raises(ConfigError, match=r"named by --config"):
            load_config(tmp_path / "nope.toml", named_by="--config")
        with pytest.raises(ConfigError, match="is a directory"):
            load_config(tmp_path)
