"""The ``backend_opts`` of the sqlitedict backend: validated at load, errors naming the key."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper import ConfigError, Session, SessionManager, load_config
from sessionkeeper_sqlitedict import SqliteDictOptions

KEY = "sessionkeeper.backend_opts"


def open_with(tmp_path: Path, **opts: Any) -> SessionManager:
    return SessionManager(
        backend="sqlitedict", backend_opts=opts, cleanup_interval=0, base_dir=tmp_path
    )


class TestOptions:
    def test_defaults(self) -> None:
        """Only file_path is required; the rest default to the documented values."""
        options = SqliteDictOptions(file_path="s.sqlite")
        assert (options.table_name, options.auto_save) == ("sessions", 60_000)
        assert (options.journal_mode, options.synchronous) == ("WAL", "FULL")
        assert options.busy_timeout == 5_000
        assert options.durable is False
        assert SqliteDictOptions(file_path="s", auto_save=0).durable is True

    def test_file_path_is_required(self, tmp_path: Path) -> None:
        """Without file_path the error names that key."""
        with pytest.raises(ConfigError) as info:
            open_with(tmp_path)
        assert info.value.key == f"{KEY}.file_path"

    @pytest.mark.parametrize(
        ("opts", "field", "words"),
        [
            ({"file_path": ""}, "file_path", "empty"),
            ({"file_path": 42}, "file_path", "string"),
            ({"table_name": ""}, "table_name", "plain SQL name"),
            ({"table_name": "1st"}, "table_name", "plain SQL name"),
            ({"table_name": "has space"}, "table_name", "plain SQL name"),
            ({"table_name": 'quo"te'}, "table_name", "plain SQL name"),
            ({"table_name": "x; DROP TABLE y"}, "table_name", "plain SQL name"),
            ({"table_name": "t" * 65}, "table_name", "plain SQL name"),
            ({"table_name": "sqlite_master"}, "table_name", "SQLite's own"),
            ({"auto_save": -1}, "auto_save", "between 0 and"),
            ({"auto_save": 86_400_001}, "auto_save", "between 0 and"),
            ({"auto_save": 1.5}, "auto_save", "integer"),
            ({"auto_save": True}, "auto_save", "integer"),
            ({"journal_mode": "OFF"}, "journal_mode", "one of WAL"),
            ({"journal_mode": "MEMORY"}, "journal_mode", "one of WAL"),
            ({"synchronous": "OFF"}, "synchronous", "one of FULL"),
            ({"busy_timeout": -5}, "busy_timeout", "between 0 and"),
            ({"auto_save": 99_999_999_999_999_999_999}, "auto_save", "between 0 and"),
            ({"busy_timeout": 99_999_999_999_999}, "busy_timeout", "between 0 and"),
            ({"busy_timeout": float("inf")}, "busy_timeout", "integer"),
            ({"auto_save": float("nan")}, "auto_save", "integer"),
            ({"file_path": "data/"}, "file_path", "names a directory"),
            ({"file_path": "data/."}, "file_path", "names a directory"),
            ({"file_path": ".."}, "file_path", "names a directory"),
            ({"autocommit": True}, "autocommit", "unknown key"),
            ({"shared": "yes"}, "shared", "true or false"),
            ({"shared": 1}, "shared", "true or false"),
            ({"shared": True, "journal_mode": "DELETE"}, "journal_mode", "WAL with shared"),
            ({"sweep_lease": 0}, "sweep_lease", "between 10 and"),
            ({"sweep_lease": 3_600_001}, "sweep_lease", "between 10 and"),
            ({"mmap_size": -1}, "mmap_size", "between 0 and"),
            ({"mmap_size": 2**31}, "mmap_size", "between 0 and"),
            ({"mmap_size": "256MiB"}, "mmap_size", "integer"),
        ],
        ids=lambda value: str(value)[:40],
    )
    def test_invalid_values_name_the_key(
        self, tmp_path: Path, opts: dict[str, Any], field: str, words: str
    ) -> None:
        """A wrong value or an unknown key is a ConfigError naming the key and the problem."""
        with pytest.raises(ConfigError, match=words) as info:
            open_with(tmp_path, **{"file_path": "s.sqlite", **opts})
        assert info.value.key == f"{KEY}.{field}"
        assert not (tmp_path / "s.sqlite").exists()

    def test_shared_mode_defaults(self) -> None:
        """``shared`` is off by default; with it, ``synchronous`` defaults to NORMAL (the single
        owner's stays FULL), an explicit level is kept, the sweep lease lasts 30 s and reads go
        through a 256 MiB memory map."""
        assert SqliteDictOptions(file_path="s").shared is False
        options = SqliteDictOptions(file_path="s", shared=True)
        assert (
            options.journal_mode,
            options.synchronous,
            options.sweep_lease,
            options.mmap_size,
        ) == ("WAL", "NORMAL", 30_000, 256 * 1024 * 1024)
        assert SqliteDictOptions(file_path="s", shared=True, synchronous="full").synchronous == (
            "full"
        )

    def test_case_of_pragma_values_does_not_matter(self, tmp_path: Path) -> None:
        """journal_mode and synchronous are accepted in any case and applied."""
        with open_with(
            tmp_path, file_path="s.sqlite", journal_mode="delete", synchronous="normal"
        ) as manager:
            stats = manager.stats()["backend_stats"]
        assert (stats["journal_mode"], stats["synchronous"]) == ("DELETE", "NORMAL")

    def test_relative_file_path_is_resolved_against_the_config_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A relative file_path in a config file names a file beside that config file, not in
        the working directory; missing parent directories are created."""
        config_dir = tmp_path / "etc"
        config_dir.mkdir()
        config = config_dir / "sessionkeeper.toml"
        config.write_text(
            textwrap.dedent(
                """\
                [sessionkeeper]
                backend = "sqlitedict"
                cleanup_interval = 0

                [sessionkeeper.backend_opts]
                file_path = "data/nested/sessions.sqlite"
                auto_save = 0
                """
            ),
            encoding="utf-8",
        )
        elsewhere = tmp_path / "cwd"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        with SessionManager.from_settings(load_config(config)) as manager:
            manager.store(Session("s", 1, 1))
        assert (config_dir / "data" / "nested" / "sessions.sqlite").is_file()
        assert list(elsewhere.iterdir()) == []

    def test_the_constructor_does_no_io(self, tmp_path: Path) -> None:
        """Building the backend (as check_store and the manager do) touches no file: the file
        and its directories appear only when the store is opened."""
        from sessionkeeper.backend import BackendContext
        from sessionkeeper_sqlitedict import SqliteDictBackend

        options = SqliteDictOptions(file_path="deep/dir/s.sqlite")
        SqliteDictBackend(options, BackendContext(name="sqlitedict", base_dir=tmp_path))
        assert list(tmp_path.iterdir()) == []
