"""``sessionkeeper check [--repair]``: the backend's integrity check, from the command line.

Most tests install a small backend (``checking``) whose check hook answers what the test asks
through its options, so the command's output and exit codes are tested without any real store.
The last class runs the command end to end on the sqlitedict backend when it is installed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sessionkeeper import Session, SessionManager
from sessionkeeper.cli import ExitCode, cli

#: The ``make_dist`` fixture of conftest.py.
MakeDist = Callable[..., Path]

CHECKING_BACKEND = """\
import json

import attrs

from sessionkeeper import StorageError
from sessionkeeper.backend import hookimpl
from sk_stub_backend import StubBackend


@attrs.frozen(kw_only=True)
class Options:
    report: str = "{}"          # the JSON report the check returns
    repaired_report: str = ""   # the report returned with repair (default: report)
    fail: str = ""              # raise StorageError with this message instead


class CheckingBackend(StubBackend):
    options_class = Options

    @hookimpl
    def sessionkeeper_check(self, repair):
        if self.options.fail:
            raise StorageError(self.context.name, self.options.fail)
        text = self.options.report
        if repair and self.options.repaired_report:
            text = self.options.repaired_report
        report = json.loads(text)
        report["seen_repair"] = repair
        report["seen_read_only"] = self.context.read_only
        return report
"""

OK = {"ok": True, "checked": 3, "intact": 3, "problems": []}
BAD = {
    "ok": False,
    "checked": 3,
    "intact": 2,
    "problems": ["record 'x' does not decode", "[bold]markup[/bold] stays text"],
}
REPAIRED = {**BAD, "repaired": True, "backup": "/var/lib/store.bak", "quarantined": 1}


@pytest.fixture
def checking(make_dist: MakeDist, stub_backend: str) -> None:
    """Install the ``checking`` backend for this test: a stub backend with a check hook."""
    make_dist(
        "sessionkeeper-checking",
        {"sk_cli_checking": CHECKING_BACKEND},
        {"sessionkeeper.backends": {"checking": "sk_cli_checking:CheckingBackend"}},
    )


def config_for(tmp_path: Path, **opts: str) -> Path:
    """A config file naming the ``checking`` backend with these options."""
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in opts.items())
    path = tmp_path / "checking.toml"
    path.write_text(
        f'[sessionkeeper]\nbackend = "checking"\n\n[sessionkeeper.backend_opts]\n{lines}\n',
        encoding="utf-8",
    )
    return path


def invoke(runner: CliRunner, *args: str | os.PathLike[str]) -> Result:
    return runner.invoke(cli, [os.fspath(arg) for arg in args], catch_exceptions=False)


@pytest.mark.usefixtures("checking")
class TestCheckCommand:
    def test_a_sound_store_exits_0(self, runner: CliRunner, tmp_path: Path) -> None:
        """When the backend finds nothing wrong, check says so and exits with 0."""
        config = config_for(tmp_path, report=json.dumps(OK))
        result = invoke(runner, "check", "--config", config)
        assert result.exit_code == ExitCode.OK, result.output
        assert "ok: the checking store passed every check" in result.stdout
        assert "checked" in result.stdout

    def test_problems_exit_4_and_are_listed_verbatim(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """Problems found are listed one per line as the backend wrote them (markup is text),
        with the advice to repair, and the command exits with 4."""
        config = config_for(tmp_path, report=json.dumps(BAD))
        result = invoke(runner, "check", "--config", config)
        assert result.exit_code == ExitCode.STORAGE
        assert "2 problems found in the checking store" in result.stdout
        assert "- record 'x' does not decode" in result.stdout
        assert "[bold]markup[/bold] stays text" in result.stdout
        assert "sessionkeeper check --repair" in result.stdout

    def test_json_is_the_report(self, runner: CliRunner, tmp_path: Path) -> None:
        """--json prints the backend's report (plus the backend name) and nothing else on
        stdout; the exit code still says whether problems were found."""
        config = config_for(tmp_path, report=json.dumps(BAD))
        result = invoke(runner, "check", "--json", "--config", config)
        assert result.exit_code == ExitCode.STORAGE
        report = json.loads(result.stdout)
        assert report == {
            "backend": "checking",
            "supported": True,
            **BAD,
            "seen_repair": False,
            "seen_read_only": True,
        }

    def test_repair_asks_for_repair_and_a_repair_exits_0(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """--repair passes repair=True (the backend is built for writing); a report saying the
        store was repaired exits with 0 and shows the backup."""
        config = config_for(tmp_path, report=json.dumps(BAD), repaired_report=json.dumps(REPAIRED))
        result = invoke(runner, "check", "--repair", "--config", config)
        assert result.exit_code == ExitCode.OK, result.output
        assert "repaired: the checking store was rewritten" in result.stdout
        assert "/var/lib/store.bak" in result.stdout
        report = json.loads(
            invoke(runner, "check", "--repair", "--json", "--config", config).stdout
        )
        assert (report["seen_repair"], report["seen_read_only"]) == (True, False)

    def test_a_repair_that_could_not_fix_exits_4(self, runner: CliRunner, tmp_path: Path) -> None:
        """--repair on a report that was not repaired exits with 4."""
        config = config_for(tmp_path, report=json.dumps(BAD))
        result = invoke(runner, "check", "--repair", "--config", config)
        assert result.exit_code == ExitCode.STORAGE

    def test_a_storage_error_exits_4_on_one_line(self, runner: CliRunner, tmp_path: Path) -> None:
        """A check that raises StorageError (e.g. the owner holds the lock) is one line on
        stderr naming the backend, exit 4, nothing on stdout."""
        config = config_for(tmp_path, fail="locked by process 4242")
        result = invoke(runner, "check", "--repair", "--json", "--config", config)
        assert result.exit_code == ExitCode.STORAGE
        assert "checking backend: locked by process 4242" in result.stderr
        assert result.stdout == ""
        assert "Traceback" not in result.output

    def test_a_long_list_of_problems_is_shortened(self, runner: CliRunner, tmp_path: Path) -> None:
        """The human output shows the first problems and counts the rest; --json has all."""
        many = {**BAD, "problems": [f"problem {i}" for i in range(30)]}
        config = config_for(tmp_path, report=json.dumps(many))
        result = invoke(runner, "check", "--config", config)
        assert "- problem 19" in result.stdout
        assert "- problem 20" not in result.stdout
        assert "10 more (see --json)" in result.stdout
        report = json.loads(invoke(runner, "check", "--json", "--config", config).stdout)
        assert len(report["problems"]) == 30


class TestCheckWithoutHook:
    def test_memory_has_nothing_to_check(self, runner: CliRunner, tmp_path: Path) -> None:
        """A backend without a check hook (memory) says there is nothing to check, exit 0."""
        pytest.importorskip("sessionkeeper_memory")
        result = invoke(runner, "check")
        assert result.exit_code == ExitCode.OK
        assert "The memory backend has nothing to check" in result.stdout
        report = json.loads(invoke(runner, "check", "--json").stdout)
        assert report == {"backend": "memory", "supported": False}

    def test_a_config_error_exits_3(self, runner: CliRunner, tmp_path: Path) -> None:
        """An unknown backend in the config is a configuration error, exit 3."""
        config = tmp_path / "bad.toml"
        config.write_text('[sessionkeeper]\nbackend = "nonesuch"\n', encoding="utf-8")
        result = invoke(runner, "check", "--config", config)
        assert result.exit_code == ExitCode.CONFIG
        assert "nonesuch" in result.stderr

    def test_help_describes_repair_and_exit_codes(self, runner: CliRunner) -> None:
        """check --help explains --repair, the read-only check and the exit codes."""
        result = invoke(runner, "check", "--help")
        assert "--repair" in result.stdout
        assert "read only" in result.stdout
        assert "Examples:" in result.stdout
        assert "check" in invoke(runner, "--help").stdout


class TestCheckOnSqlitedict:
    @pytest.fixture
    def store(self, tmp_path: Path) -> tuple[Path, Path]:
        """A sqlitedict store with three sessions and one row that is not a session."""
        pytest.importorskip("sessionkeeper_sqlitedict")
        config = tmp_path / "sessionkeeper.toml"
        config.write_text(
            textwrap.dedent(
                """\
                [sessionkeeper]
                backend = "sqlitedict"

                [sessionkeeper.backend_opts]
                file_path = "data/sessions.sqlite"
                auto_save = 0
                """
            ),
            encoding="utf-8",
        )
        path = tmp_path / "data" / "sessions.sqlite"
        with SessionManager.from_config(config, plugins=()) as manager:
            for i in range(3):
                manager.store(Session(f"s{i}", 1, 1, None, {"i": i}))
        connection = sqlite3.connect(path)
        with connection:
            connection.execute("INSERT INTO sessions VALUES ('junk', x'c1c1')")
        connection.close()
        return config, path

    def test_check_then_repair_then_check(
        self, runner: CliRunner, store: tuple[Path, Path]
    ) -> None:
        """check finds the foreign row (exit 4), --repair quarantines it and keeps a backup
        (exit 0), and a second check finds the store sound (exit 0)."""
        config, path = store
        first = invoke(runner, "check", "--json", "--config", config)
        assert first.exit_code == ExitCode.STORAGE
        report: dict[str, Any] = json.loads(first.stdout)
        assert (report["checked"], report["intact"], report["undecodable"]) == (4, 3, 1)
        assert any("'junk'" in problem for problem in report["problems"])

        repaired = invoke(runner, "check", "--repair", "--json", "--config", config)
        assert repaired.exit_code == ExitCode.OK, repaired.output
        report = json.loads(repaired.stdout)
        assert (report["salvaged"], report["quarantined"]) == (3, 1)
        assert Path(report["backup"]).is_file()
        assert Path(report["quarantine"]).is_file()

        again = invoke(runner, "check", "--config", config)
        assert again.exit_code == ExitCode.OK, again.output
        assert path.is_file()
