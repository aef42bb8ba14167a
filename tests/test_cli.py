"""Tests of the operators' CLI (``sessionkeeper``, ``python -m sessionkeeper``).

The memory backend is per process, so data-bearing commands are exercised in-process: the test
keeps a :class:`SessionManager` open on a memory table and points the CLI (through click's
``CliRunner``) at a config file naming the same ``table_name``; memory tables with the same name
are shared within a process while a manager holds them open.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sessionkeeper import (
    BackendNotFound,
    ConfigError,
    InvalidSession,
    Session,
    SessionKeeperError,
    SessionManager,
    SessionNotFound,
    StorageError,
)
from sessionkeeper.backend import CodecError, PluginValidationError
from sessionkeeper.cli import ExitCode, cli, exit_code_for
from sessionkeeper.cli._render import format_time

HOUR = 3_600_000
COMMANDS = ("backends", "list", "show", "delete", "cleanup", "stats", "check")
#: The ``make_dist`` fixture of conftest.py.
MakeDist = Callable[..., Path]
#: The ``outside`` fixture of conftest.py (commands in child processes).
Outside = Any


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def write_config(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


class Store:
    """A memory table held open by the test, and a config file that names the same table."""

    def __init__(self, manager: SessionManager, config: Path) -> None:
        self.manager = manager
        self.config = config

    def seed(
        self,
        session_id: str,
        *,
        idle_ms: int = 0,
        timeout_ms: int | None = HOUR,
        metadata: Mapping[str, Any] | None = None,
        owner: str | None = None,
        absolute_timeout_ms: int | None = None,
    ) -> Session:
        """Store a session last accessed ``idle_ms`` ago (expired when idle_ms > timeout_ms);
        return it as stored (with the version the store counted)."""
        at = now_ms() - idle_ms
        session = Session(
            session_id,
            at,
            at,
            timeout_ms,
            dict(metadata or {}),
            owner=owner,
            absolute_timeout_ms=absolute_timeout_ms,
        )
        return self.manager.store(session)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A shared memory table, open in the test for as long as the test runs."""
    table = f"cli-{uuid.uuid4().hex}"
    config = write_config(
        tmp_path / "memory.toml",
        f"""\
        [sessionkeeper]
        backend = "memory"
        cleanup_interval = 0

        [sessionkeeper.backend_opts]
        table_name = "{table}"
        """,
    )
    with SessionManager(
        backend="memory", backend_opts={"table_name": table}, cleanup_interval=0
    ) as manager:
        yield Store(manager, config)


def _rows(table: str) -> dict[str, str]:
    """The rows of a two-column table printed by ``show``: label -> value."""
    rows = {}
    for line in table.splitlines():
        match = re.match(r"^(\S+(?: \S+)*)\s{2,}(.*?)\s*$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def invoke(runner: CliRunner, *args: str | os.PathLike[str]) -> Result:
    return runner.invoke(cli, [os.fspath(arg) for arg in args], catch_exceptions=False)


class TestHelp:
    def test_group_help_lists_commands_and_exit_codes(self, runner: CliRunner) -> None:
        """``--help`` names every command and documents the exit codes 0-4."""
        result = invoke(runner, "--help")
        assert result.exit_code == 0
        for command in COMMANDS:
            assert command in result.stdout
        assert "Exit codes" in result.stdout
        for line in ("0  success", "1  session not found", "2  usage error", "3  configuration"):
            assert line in result.stdout
        assert "4  storage error" in result.stdout

    @pytest.mark.parametrize("command", COMMANDS)
    def test_every_command_help_documents_options_and_examples(
        self, runner: CliRunner, command: str
    ) -> None:
        """Each command's help describes --config (with its lookup order), --json and examples."""
        result = invoke(runner, command, "--help")
        assert result.exit_code == 0
        assert "--config PATH" in result.stdout
        assert "SESSIONKEEPER_CONFIG" in result.stdout
        assert "--json" in result.stdout
        assert "Examples:" in result.stdout
        assert f"sessionkeeper {command}" in result.stdout

    @pytest.mark.parametrize("command", ["list", "show", "stats"])
    def test_inspection_help_says_read_only(self, runner: CliRunner, command: str) -> None:
        """The inspection commands say that they open the store read-only."""
        result = invoke(runner, command, "--help")
        assert "read-only" in result.stdout

    @pytest.mark.parametrize("command", ["delete", "cleanup"])
    def test_writing_help_says_for_writing(self, runner: CliRunner, command: str) -> None:
        """delete and cleanup say that they open the store for writing."""
        result = invoke(runner, command, "--help")
        assert "for writing" in result.stdout

    def test_version(self, runner: CliRunner) -> None:
        """``--version`` prints the installed distribution's version."""
        result = invoke(runner, "--version")
        assert result.exit_code == 0
        assert importlib.metadata.version("sessionkeeper") in result.stdout

    def test_unknown_command_is_usage_error(self, runner: CliRunner) -> None:
        """An unknown command exits with 2 (click's usage error)."""
        result = invoke(runner, "frobnicate")
        assert result.exit_code == ExitCode.USAGE
        assert "frobnicate" in result.stderr


class TestGroupOptions:
    """``--config`` and ``--json`` before the command's name (issue 19)."""

    def test_config_before_the_command_opens_that_store(
        self, runner: CliRunner, store: Store
    ) -> None:
        """``sessionkeeper --config X list`` lists the store X names, as ``list --config X``."""
        store.seed("s1")
        result = invoke(runner, "--config", store.config, "list", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["ids"] == ["s1"]

    def test_json_before_the_command(self, runner: CliRunner, store: Store) -> None:
        """``sessionkeeper --json --config X stats`` prints the command's JSON."""
        store.seed("s1")
        result = invoke(runner, "--json", "--config", store.config, "stats")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["live_sessions"] == 1

    def test_the_commands_own_config_wins(
        self, runner: CliRunner, store: Store, tmp_path: Path
    ) -> None:
        """Given before and after the command's name, the --config after it is the one used."""
        store.seed("s1")
        other = write_config(tmp_path / "missing-backend.toml", '[sessionkeeper]\nbackend = "x"\n')
        result = invoke(runner, "--config", other, "show", "s1", "--config", store.config)
        assert result.exit_code == 0, result.output
        assert "s1" in result.stdout
        refused = invoke(runner, "--config", store.config, "show", "s1", "--config", other)
        assert refused.exit_code == ExitCode.CONFIG, refused.output

    def test_group_config_reaches_the_command_without_env_or_cwd(
        self, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The group's --config is preferred to $SESSIONKEEPER_CONFIG, as a command's is."""
        bad = write_config(tmp_path / "bad.toml", "[sessionkeeper\n")
        monkeypatch.setenv("SESSIONKEEPER_CONFIG", os.fspath(bad))
        good = write_config(tmp_path / "good.toml", '[sessionkeeper]\nbackend = "memory"\n')
        assert invoke(runner, "cleanup", "--json").exit_code == ExitCode.CONFIG
        result = invoke(runner, "--config", good, "cleanup", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"removed": 0}

    def test_a_command_without_the_option_refuses_it(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """``new-backend`` opens no store: --config before it is a usage error naming it."""
        config = write_config(tmp_path / "c.toml", "[sessionkeeper]\n")
        result = invoke(runner, "--config", config, "new-backend", "x", os.fspath(tmp_path / "x"))
        assert result.exit_code == ExitCode.USAGE
        assert "'new-backend' command does not take --config" in result.stderr
        assert not (tmp_path / "x").exists()

    def test_plugin_commands_get_the_group_config(self, runner: CliRunner, tmp_path: Path) -> None:
        """A plugin's command (``node``, from sessionkeeper-zmq) reads the group's --config."""
        pytest.importorskip("sessionkeeper_zmq", reason="node comes with sessionkeeper-zmq")
        config = write_config(tmp_path / "memory.toml", '[sessionkeeper]\nbackend = "memory"\n')
        result = invoke(runner, "--config", config, "node")
        assert result.exit_code == ExitCode.USAGE
        assert f"{config} uses backend 'memory'" in result.stderr

    def test_group_help_documents_both_options(self, runner: CliRunner) -> None:
        """``sessionkeeper --help`` lists --config and --json for the command that follows."""
        result = invoke(runner, "--help")
        assert result.exit_code == 0
        options = result.stdout.split("Options:", 1)[1]
        assert "--config PATH" in options
        assert "--json" in options
        assert "command that follows" in options
        assert "sessionkeeper --config X list" in result.stdout


class TestExitCodes:
    @pytest.mark.parametrize(
        ("exc", "code"),
        [
            (SessionNotFound("abc"), ExitCode.NOT_FOUND),
            (InvalidSession("id", "bad"), ExitCode.USAGE),
            (ConfigError("bad key", key="x"), ExitCode.CONFIG),
            (BackendNotFound("nosuch", ["memory"]), ExitCode.CONFIG),
            (PluginValidationError("p", "broken"), ExitCode.CONFIG),
            (StorageError("sqlitedict", "disk full"), ExitCode.STORAGE),
            (CodecError("truncated record"), ExitCode.STORAGE),
            (SessionKeeperError("other"), ExitCode.STORAGE),
        ],
    )
    def test_exception_maps_to_documented_code(self, exc: BaseException, code: ExitCode) -> None:
        """Every sessionkeeper exception maps to the exit code the help documents."""
        assert exit_code_for(exc) == code


class TestBackends:
    def test_lists_memory_backend(self, runner: CliRunner) -> None:
        """The table names the memory backend, its distribution, version and capabilities."""
        result = invoke(runner, "backends")
        assert result.exit_code == 0
        assert "memory" in result.stdout
        assert "sessionkeeper-memory" in result.stdout
        assert importlib.metadata.version("sessionkeeper-memory") in result.stdout
        assert "(configured)" in result.stdout  # memory is the default

    def test_json_describes_each_backend(self, runner: CliRunner) -> None:
        """``--json`` gives distribution, version, capabilities and hooks, and only JSON."""
        result = invoke(runner, "backends", "--json")
        assert result.exit_code == 0
        data = json.loads(result.stdout)
        assert data["configured"] == "memory"
        memory = next(b for b in data["backends"] if b["name"] == "memory")
        assert memory["distribution"] == "sessionkeeper-memory"
        assert memory["version"] == importlib.metadata.version("sessionkeeper-memory")
        assert memory["error"] is None
        assert memory["configured"] is True
        assert memory["capabilities"]["persistent"] is False
        assert "sessionkeeper_fetch" in memory["hooks"]
        assert isinstance(data["plugins"], list)

    def test_broken_backend_is_listed_with_its_error(
        self, runner: CliRunner, make_dist: MakeDist
    ) -> None:
        """A backend whose module fails to import is listed with the error; the command succeeds."""
        make_dist(
            "sessionkeeper-broken",
            {},
            {"sessionkeeper.backends": {"broken": "sessionkeeper_broken_missing:Backend"}},
            version="1.2.3",
        )
        result = invoke(runner, "backends", "--json")
        assert result.exit_code == 0
        data = json.loads(result.stdout)
        broken = next(b for b in data["backends"] if b["name"] == "broken")
        assert broken["distribution"] == "sessionkeeper-broken"
        assert broken["version"] == "1.2.3"
        assert "ModuleNotFoundError" in broken["error"]
        assert "sessionkeeper_broken_missing" in broken["error"]
        memory = next(b for b in data["backends"] if b["name"] == "memory")
        assert memory["error"] is None
        human = invoke(runner, "backends")
        assert human.exit_code == 0
        assert "failed to import" in human.stdout

    def test_not_a_backend_class_is_listed_with_the_contract_problem(
        self, runner: CliRunner, make_dist: MakeDist
    ) -> None:
        """An entry point naming something that is not a backend class is listed as broken."""
        make_dist(
            "sessionkeeper-notaclass",
            {"sk_cli_notaclass": "VALUE = 42\n"},
            {"sessionkeeper.backends": {"notaclass": "sk_cli_notaclass:VALUE"}},
        )
        data = json.loads(invoke(runner, "backends", "--json").stdout)
        entry = next(b for b in data["backends"] if b["name"] == "notaclass")
        assert "must name a backend class" in entry["error"]
        assert entry["capabilities"] is None

    def test_wrapper_plugins_are_listed_with_their_hooks(
        self, runner: CliRunner, make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``sessionkeeper.plugins`` entry points are listed with the hooks they implement."""
        make_dist(
            "sessionkeeper-audit",
            {
                "sk_cli_audit": """\
                from sessionkeeper.backend import hookimpl

                @hookimpl(wrapper=True)
                def sessionkeeper_delete(session_id):
                    return (yield)

                def sessionkeeper_not_marked():
                    pass
                """
            },
            {"sessionkeeper.plugins": {"audit": "sk_cli_audit"}},
        )
        result = invoke(runner, "backends", "--json")
        assert result.exit_code == 0
        plugins = json.loads(result.stdout)["plugins"]
        audit = next(p for p in plugins if p["name"] == "audit")
        assert audit["distribution"] == "sessionkeeper-audit"
        assert audit["hooks"] == ["sessionkeeper_delete"]
        assert audit["error"] is None
        human = invoke(runner, "backends")
        assert "sessionkeeper_delete" in human.stdout

    def test_import_side_effects_do_not_corrupt_json(
        self, runner: CliRunner, make_dist: MakeDist
    ) -> None:
        """A plugin that prints while being imported does not break ``backends --json``."""
        make_dist(
            "sessionkeeper-noisy",
            {"sk_cli_noisy": "print('hello from an import side effect')\n"},
            {"sessionkeeper.plugins": {"noisy": "sk_cli_noisy"}},
        )
        result = invoke(runner, "backends", "--json")
        assert result.exit_code == 0
        names = [p["name"] for p in json.loads(result.stdout)["plugins"]]
        assert names == ["noisy"]
        assert "hello from an import side effect" in result.stderr

    def test_configured_unknown_backend_is_a_warning(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """backends still lists when the config names a missing backend, and says how to add it
        without making up a distribution name from the input."""
        config = write_config(tmp_path / "c.toml", '[sessionkeeper]\nbackend = "nosuch"\n')
        result = invoke(runner, "backends", "--config", config, "--json")
        assert result.exit_code == 0
        assert json.loads(result.stdout)["configured"] == "nosuch"
        assert "install the distribution that provides it" in result.stderr
        assert "sessionkeeper-nosuch" not in result.stderr

    def test_unreadable_config_is_a_warning(self, runner: CliRunner, tmp_path: Path) -> None:
        """A config that cannot be read is reported on stderr; the listing still succeeds."""
        config = write_config(tmp_path / "bad.toml", "[sessionkeeper\n")
        result = invoke(runner, "backends", "--config", config)
        assert result.exit_code == 0
        assert "memory" in result.stdout
        assert "bad.toml" in result.stderr


class TestList:
    def test_lists_live_ids_sorted(self, runner: CliRunner, store: Store) -> None:
        """The table shows every live id, in sorted order, and how many there are."""
        for sid in ("b-session", "a-session", "c-session"):
            store.seed(sid)
        result = invoke(runner, "list", "--config", store.config)
        assert result.exit_code == 0
        out = result.stdout
        assert out.index("a-session") < out.index("b-session") < out.index("c-session")
        assert "3 of 3 live sessions shown" in out

    def test_expired_sessions_are_left_out(self, runner: CliRunner, store: Store) -> None:
        """A session past its timeout is not listed even though cleanup has not run."""
        store.seed("live-one")
        store.seed("expired-one", idle_ms=2 * HOUR, timeout_ms=HOUR)
        data = json.loads(invoke(runner, "list", "--config", store.config, "--json").stdout)
        assert data["ids"] == ["live-one"]
        assert data["count"] == 1

    def test_limit(self, runner: CliRunner, store: Store) -> None:
        """``--limit N`` keeps the first N sorted ids; the JSON count is still the total."""
        for sid in ("s3", "s1", "s4", "s2"):
            store.seed(sid)
        result = invoke(runner, "list", "--config", store.config, "--limit", "2", "--json")
        assert result.exit_code == 0
        data = json.loads(result.stdout)
        assert data == {"backend": "memory", "count": 4, "ids": ["s1", "s2"]}
        human = invoke(runner, "list", "--config", store.config, "--limit", "2")
        assert "s2" in human.stdout
        assert "s3" not in human.stdout
        assert "2 of 4 live sessions shown" in human.stdout

    def test_limit_must_be_positive(self, runner: CliRunner, store: Store) -> None:
        """``--limit 0`` is a usage error (exit 2)."""
        result = invoke(runner, "list", "--config", store.config, "--limit", "0")
        assert result.exit_code == ExitCode.USAGE

    def test_empty_store(self, runner: CliRunner) -> None:
        """Without any config the CLI uses the memory defaults and reports no sessions."""
        result = invoke(runner, "list")
        assert result.exit_code == 0
        assert "No live sessions." in result.stdout

    def test_memory_note_goes_to_stderr_only(self, runner: CliRunner, store: Store) -> None:
        """On the memory backend a one-line note on stderr says the store is per process;
        stdout holds only the JSON."""
        store.seed("x1")
        result = invoke(runner, "list", "--config", store.config, "--json")
        assert result.exit_code == 0
        assert "memory backend is per process" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert json.loads(result.stdout)["ids"] == ["x1"]

    def test_list_does_not_touch(self, runner: CliRunner, store: Store) -> None:
        """Listing leaves last_accessed alone."""
        before = store.seed("idle", idle_ms=60_000)
        invoke(runner, "list", "--config", store.config)
        assert store.manager.peek("idle").last_accessed == before.last_accessed


class TestShow:
    def test_human_output(self, runner: CliRunner, store: Store) -> None:
        """show prints the id, the timeout and the metadata of a live session."""
        store.seed("sess-1", metadata={"user_id": "user_456", "roles": ["admin"]})
        result = invoke(runner, "show", "sess-1", "--config", store.config)
        assert result.exit_code == 0
        assert "sess-1" in result.stdout
        assert "user_456" in result.stdout
        assert "admin" in result.stdout
        assert "1h" in result.stdout

    def test_json_is_the_session(self, runner: CliRunner, store: Store) -> None:
        """``--json`` prints the session's fields (the export shape: version, owner and
        absolute timeout included) plus the three deadlines."""
        seeded = store.seed(
            "sess-2",
            metadata={"n": 1, "nested": {"ok": True}},
            owner="user_456",
            absolute_timeout_ms=8 * HOUR,
        )
        result = invoke(runner, "show", "sess-2", "--config", store.config, "--json")
        assert result.exit_code == 0
        data = json.loads(result.stdout)
        assert data == {
            **seeded.to_dict(),
            "expires_at": seeded.expires_at,
            "idle_expires_at": seeded.last_accessed + HOUR,
            "absolute_expires_at": seeded.created_at + 8 * HOUR,
        }
        assert (data["version"], data["owner"]) == (1, "user_456")

    def test_shows_version_owner_and_both_deadlines(self, runner: CliRunner, store: Store) -> None:
        """The table shows the version, the owner, the absolute timeout and both deadlines
        (the absolute one the earlier here, so it is also when the session expires)."""
        store.seed("v", owner="user_456", absolute_timeout_ms=HOUR // 2)
        stored = store.seed("v", owner="user_456", absolute_timeout_ms=HOUR // 2)
        assert stored.version == 2
        result = invoke(runner, "show", "v", "--config", store.config)
        assert result.exit_code == 0
        rows = _rows(result.stdout)
        assert rows["version"] == "2"
        assert rows["owner"] == "user_456"
        assert rows["absolute timeout"] == "30m (1800000 ms)"
        assert rows["idle deadline"].startswith(format_time(stored.last_accessed + HOUR))
        absolute = format_time(stored.created_at + HOUR // 2)
        assert rows["absolute deadline"].startswith(absolute)
        assert rows["expires"].startswith(absolute)

    def test_a_session_without_owner_or_absolute_timeout_says_so(
        self, runner: CliRunner, store: Store
    ) -> None:
        """No owner and no absolute timeout show as "none", the absolute deadline as never."""
        store.seed("plain")
        result = invoke(runner, "show", "plain", "--config", store.config)
        assert result.exit_code == 0
        rows = _rows(result.stdout)
        assert rows["owner"] == "none"
        assert rows["absolute timeout"] == "none"
        assert rows["absolute deadline"] == "never"
        assert rows["version"] == "1"

    def test_session_without_timeout(self, runner: CliRunner, store: Store) -> None:
        """A session that never expires shows as such."""
        store.seed("forever", timeout_ms=None)
        result = invoke(runner, "show", "forever", "--config", store.config)
        assert "never expires" in result.stdout
        data = json.loads(
            invoke(runner, "show", "forever", "--config", store.config, "--json").stdout
        )
        assert data["timeout_ms"] is None
        assert data["expires_at"] is None

    def test_show_never_touches(self, runner: CliRunner, store: Store) -> None:
        """show peeks: last_accessed is unchanged afterwards."""
        before = store.seed("idle", idle_ms=120_000)
        assert invoke(runner, "show", "idle", "--config", store.config).exit_code == 0
        assert store.manager.peek("idle").last_accessed == before.last_accessed

    def test_unknown_id_exits_1(self, runner: CliRunner, store: Store) -> None:
        """An unknown id exits with 1, names the id on stderr and prints nothing on stdout."""
        result = invoke(runner, "show", "no-such-id", "--config", store.config, "--json")
        assert result.exit_code == ExitCode.NOT_FOUND
        assert "no-such-id" in result.stderr
        assert result.stdout == ""
        assert "Traceback" not in result.output

    def test_expired_id_exits_1(self, runner: CliRunner, store: Store) -> None:
        """An expired session is not found, even before cleanup."""
        store.seed("old", idle_ms=2 * HOUR, timeout_ms=HOUR)
        result = invoke(runner, "show", "old", "--config", store.config)
        assert result.exit_code == ExitCode.NOT_FOUND

    def test_invalid_id_is_usage_error(self, runner: CliRunner, store: Store) -> None:
        """An id with a space is a usage error (exit 2) that names the problem."""
        result = invoke(runner, "show", "has space", "--config", store.config)
        assert result.exit_code == ExitCode.USAGE
        assert "' '" in result.stderr
        assert "visible ASCII" in result.stderr

    def test_overlong_id_is_usage_error(self, runner: CliRunner) -> None:
        """An id over 256 characters is a usage error naming the limit."""
        result = invoke(runner, "show", "x" * 257)
        assert result.exit_code == ExitCode.USAGE
        assert "256" in result.stderr

    def test_id_starting_with_dash_after_double_dash(self, runner: CliRunner, store: Store) -> None:
        """An id that starts with '-' (generated ids can) is reachable after ``--``."""
        store.seed("-dash-id")
        result = invoke(runner, "show", "--config", store.config, "--json", "--", "-dash-id")
        assert result.exit_code == 0
        assert json.loads(result.stdout)["id"] == "-dash-id"

    def test_markup_in_ids_and_metadata_is_printed_verbatim(
        self, runner: CliRunner, store: Store
    ) -> None:
        """Ids and metadata that look like rich markup or emoji codes print exactly as stored."""
        store.seed("[bold]x[/bold]:smile:", metadata={"note": "[red]hi[/red]"})
        result = invoke(runner, "show", "[bold]x[/bold]:smile:", "--config", store.config)
        assert result.exit_code == 0
        assert "[bold]x[/bold]:smile:" in result.stdout
        assert "[red]hi[/red]" in result.stdout
        listing = invoke(runner, "list", "--config", store.config)
        assert "[bold]x[/bold]:smile:" in listing.stdout


class TestDelete:
    def test_deletes(self, runner: CliRunner, store: Store) -> None:
        """delete removes the session from the shared store and says so."""
        store.seed("doomed")
        store.seed("kept")
        result = invoke(runner, "delete", "doomed", "--config", store.config)
        assert result.exit_code == 0
        assert "doomed" in result.stdout
        with pytest.raises(SessionNotFound):
            store.manager.peek("doomed")
        assert store.manager.peek("kept").id == "kept"

    def test_json(self, runner: CliRunner, store: Store) -> None:
        """``--json`` reports the deleted id."""
        store.seed("doomed")
        result = invoke(runner, "delete", "doomed", "--config", store.config, "--json")
        assert json.loads(result.stdout) == {"id": "doomed", "deleted": True}

    def test_unknown_id_exits_1(self, runner: CliRunner, store: Store) -> None:
        """Deleting an id that is not stored exits with 1 and names the id."""
        result = invoke(runner, "delete", "ghost", "--config", store.config)
        assert result.exit_code == ExitCode.NOT_FOUND
        assert "ghost" in result.stderr
        assert result.stdout == ""

    def test_invalid_id_is_usage_error(self, runner: CliRunner, store: Store) -> None:
        """An id with a non-ASCII character is a usage error (exit 2), nothing is deleted."""
        store.seed("kept")
        result = invoke(runner, "delete", "caf\u00e9", "--config", store.config)
        assert result.exit_code == ExitCode.USAGE
        assert "visible ASCII" in result.stderr
        assert store.manager.list() == ["kept"]


class TestCleanup:
    def test_removes_expired_and_reports_count(self, runner: CliRunner, store: Store) -> None:
        """cleanup removes exactly the expired sessions and prints how many."""
        store.seed("live")
        store.seed("old-1", idle_ms=2 * HOUR, timeout_ms=HOUR)
        store.seed("old-2", idle_ms=3 * HOUR, timeout_ms=HOUR)
        result = invoke(runner, "cleanup", "--config", store.config)
        assert result.exit_code == 0
        assert "Removed 2 expired sessions." in result.stdout
        remaining = [s.id for s in store.manager.iter_sessions(include_expired=True)]
        assert remaining == ["live"]

    def test_json_and_nothing_to_remove(self, runner: CliRunner, store: Store) -> None:
        """``--json`` prints the count; a second run removes nothing."""
        store.seed("old", idle_ms=2 * HOUR, timeout_ms=HOUR)
        first = invoke(runner, "cleanup", "--config", store.config, "--json")
        assert json.loads(first.stdout) == {"removed": 1}
        second = invoke(runner, "cleanup", "--config", store.config, "--json")
        assert json.loads(second.stdout) == {"removed": 0}


class TestStats:
    def test_json(self, runner: CliRunner, store: Store) -> None:
        """``--json`` prints the manager's stats: backend, capabilities, live count."""
        store.seed("a")
        store.seed("b")
        store.seed("gone", idle_ms=2 * HOUR, timeout_ms=HOUR)
        result = invoke(runner, "stats", "--config", store.config, "--json")
        assert result.exit_code == 0
        data = json.loads(result.stdout)
        assert data["backend"] == "memory"
        assert data["live_sessions"] == 2
        assert data["capabilities"]["replicated"] is False

    def test_human_table(self, runner: CliRunner, store: Store) -> None:
        """The table flattens nested figures into dotted keys."""
        store.seed("a")
        result = invoke(runner, "stats", "--config", store.config)
        assert result.exit_code == 0
        assert "live_sessions" in result.stdout
        assert "capabilities.persistent" in result.stdout

    def test_counters_when_stats_are_on(self, runner: CliRunner, tmp_path: Path) -> None:
        """With ``stats = true`` the output includes the stats plugin's counters."""
        config = write_config(tmp_path / "s.toml", "[sessionkeeper]\nstats = true\n")
        data = json.loads(invoke(runner, "stats", "--config", config, "--json").stdout)
        assert "counters" in data


class TestConfigErrors:
    def test_malformed_toml_names_the_file(self, runner: CliRunner, tmp_path: Path) -> None:
        """A file that is not TOML exits with 3 and names the file, without a traceback."""
        config = write_config(tmp_path / "broken.toml", "[sessionkeeper\nbackend = \n")
        result = invoke(runner, "list", "--config", config)
        assert result.exit_code == ExitCode.CONFIG
        assert "broken.toml" in result.stderr
        assert "TOML" in result.stderr
        assert "Traceback" not in result.output
        assert result.stdout == ""

    def test_unknown_key_is_named(self, runner: CliRunner, tmp_path: Path) -> None:
        """An unknown key exits with 3 and names the key and the file."""
        config = write_config(
            tmp_path / "typo.toml", '[sessionkeeper]\nbackend = "memory"\ncleanup_intervall = 5\n'
        )
        result = invoke(runner, "stats", "--config", config, "--json")
        assert result.exit_code == ExitCode.CONFIG
        assert "cleanup_intervall" in result.stderr
        assert "typo.toml" in result.stderr
        assert result.stdout == ""

    def test_unknown_backend_option_is_named(self, runner: CliRunner, tmp_path: Path) -> None:
        """An unknown key in backend_opts exits with 3 and names it."""
        config = write_config(
            tmp_path / "opts.toml",
            '[sessionkeeper]\nbackend = "memory"\n[sessionkeeper.backend_opts]\nno_such_opt = 1\n',
        )
        result = invoke(runner, "list", "--config", config)
        assert result.exit_code == ExitCode.CONFIG
        assert "no_such_opt" in result.stderr

    def test_unknown_backend_lists_installed_and_pip_install(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """An unknown backend exits with 3 and lists the installed backends; it says to install
        the distribution that provides it, without making up its name from the input."""
        config = write_config(tmp_path / "nb.toml", '[sessionkeeper]\nbackend = "nosuch"\n')
        result = invoke(runner, "show", "abc", "--config", config)
        assert result.exit_code == ExitCode.CONFIG
        assert "nosuch" in result.stderr
        assert "memory" in result.stderr
        assert "install the distribution that provides it" in result.stderr
        assert "sessionkeeper-nosuch" not in result.stderr

    def test_missing_config_file(self, runner: CliRunner, tmp_path: Path) -> None:
        """A --config file that does not exist exits with 3 and names it."""
        result = invoke(runner, "cleanup", "--config", tmp_path / "absent.toml")
        assert result.exit_code == ExitCode.CONFIG
        assert "absent.toml" in result.stderr

    def test_config_from_environment(
        self, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without --config the file named by $SESSIONKEEPER_CONFIG is used."""
        config = write_config(tmp_path / "env.toml", '[sessionkeeper]\nbackend = "fromenv"\n')
        monkeypatch.setenv("SESSIONKEEPER_CONFIG", os.fspath(config))
        result = invoke(runner, "stats")
        assert result.exit_code == ExitCode.CONFIG
        assert "fromenv" in result.stderr
        assert "env.toml" in result.stderr

    def test_config_from_working_directory(self, runner: CliRunner) -> None:
        """Without --config or the env var, ./sessionkeeper.toml is used."""
        write_config(Path("sessionkeeper.toml"), '[sessionkeeper]\nbackend = "fromcwd"\n')
        result = invoke(runner, "list")
        assert result.exit_code == ExitCode.CONFIG
        assert "fromcwd" in result.stderr

    def test_config_is_a_directory_is_usage_error(self, runner: CliRunner, tmp_path: Path) -> None:
        """--config naming a directory is rejected by click as a usage error."""
        result = invoke(runner, "list", "--config", tmp_path)
        assert result.exit_code == ExitCode.USAGE


FAULTY_BACKENDS = """\
from sessionkeeper import StorageError
from sessionkeeper.backend import hookimpl
from sk_stub_backend import StubBackend


class FailingBackend(StubBackend):
    @hookimpl
    def sessionkeeper_open(self):
        raise StorageError("failing", "the disk is on fire")


class CrashingBackend(StubBackend):
    @hookimpl
    def sessionkeeper_list(self, now):
        raise RuntimeError("bug in the backend")
"""


@pytest.fixture
def faulty(make_dist: MakeDist, stub_backend: str) -> None:
    """Install backends ``failing`` (open raises StorageError) and ``crashing`` (list raises),
    each a stub backend broken in that one hook."""
    make_dist(
        "sessionkeeper-faulty",
        {"sk_cli_faulty": FAULTY_BACKENDS},
        {
            "sessionkeeper.backends": {
                "failing": "sk_cli_faulty:FailingBackend",
                "crashing": "sk_cli_faulty:CrashingBackend",
            }
        },
    )


@pytest.mark.usefixtures("faulty")
class TestStorageErrors:
    def test_backend_failing_to_open_exits_4(self, runner: CliRunner, tmp_path: Path) -> None:
        """A backend that cannot open its store exits with 4, names the backend, no traceback."""
        config = write_config(tmp_path / "f.toml", '[sessionkeeper]\nbackend = "failing"\n')
        result = invoke(runner, "list", "--config", config, "--json")
        assert result.exit_code == ExitCode.STORAGE
        assert "failing backend" in result.stderr
        assert "the disk is on fire" in result.stderr
        assert "Traceback" not in result.output
        assert result.stdout == ""

    def test_faulty_backends_still_list_as_valid(self, runner: CliRunner) -> None:
        """Backends that fail only at run time satisfy the contract, so backends shows them ok."""
        listing = json.loads(invoke(runner, "backends", "--json").stdout)
        failing = next(b for b in listing["backends"] if b["name"] == "failing")
        assert failing["error"] is None
        assert failing["distribution"] == "sessionkeeper-faulty"
        assert failing["capabilities"]["persistent"] is True

    def test_unexpected_exception_exits_4_without_traceback(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """An exception escaping a backend is one StorageError line (backend, type), exit 4."""
        config = write_config(tmp_path / "c.toml", '[sessionkeeper]\nbackend = "crashing"\n')
        result = invoke(runner, "list", "--config", config)
        assert result.exit_code == ExitCode.STORAGE
        assert "crashing backend: list failed: RuntimeError: bug in the backend" in result.stderr
        assert "Traceback" not in result.output
        assert result.stdout == ""

    def test_debug_env_prints_the_traceback(
        self, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With SESSIONKEEPER_DEBUG set, an unexpected error also prints its traceback."""
        monkeypatch.setenv("SESSIONKEEPER_DEBUG", "1")
        config = write_config(tmp_path / "c.toml", '[sessionkeeper]\nbackend = "crashing"\n')
        result = invoke(runner, "list", "--config", config)
        assert result.exit_code == ExitCode.STORAGE
        assert "Traceback" in result.stderr
        assert "sessionkeeper_list" in result.stderr


class TestConsoleScript:
    def test_python_m_help(self, tmp_path: Path, outside: Outside) -> None:
        """``python -m sessionkeeper --help`` runs the CLI in a fresh interpreter."""
        proc = outside.run(sys.executable, "-m", "sessionkeeper", "--help", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "Exit codes" in proc.stdout
        assert "backends" in proc.stdout

    def test_console_script_backends_json(self, tmp_path: Path, outside: Outside) -> None:
        """The installed ``sessionkeeper`` script prints the backends as JSON."""
        script = Path(sys.executable).with_name("sessionkeeper")
        assert script.exists(), f"console script missing next to {sys.executable}"
        proc = outside.run(os.fspath(script), "backends", "--json", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        names = [b["name"] for b in json.loads(proc.stdout)["backends"]]
        assert "memory" in names

    def test_memory_store_is_empty_in_a_new_process(self, tmp_path: Path, outside: Outside) -> None:
        """In its own process the memory backend shows an empty store and notes why on stderr."""
        proc = outside.run(sys.executable, "-m", "sessionkeeper", "list", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "No live sessions." in proc.stdout
        assert "memory" in proc.stderr
        assert "Traceback" not in proc.stderr


class TestOwners:
    def test_list_owner_lists_one_principals_live_sessions(
        self, runner: CliRunner, store: Store
    ) -> None:
        """``list --owner P`` shows only P's live sessions (table and JSON, which names P)."""
        store.seed("a-1", owner="alice")
        store.seed("a-2", owner="alice")
        store.seed("a-old", owner="alice", idle_ms=2 * HOUR)
        store.seed("b-1", owner="bob")
        store.seed("nobody")
        result = invoke(runner, "list", "--owner", "alice", "--config", store.config, "--json")
        assert result.exit_code == 0
        assert json.loads(result.stdout) == {
            "backend": "memory",
            "owner": "alice",
            "count": 2,
            "ids": ["a-1", "a-2"],
        }
        table = invoke(runner, "list", "--owner", "bob", "--config", store.config)
        assert "b-1" in table.stdout
        assert "a-1" not in table.stdout
        empty = invoke(runner, "list", "--owner", "carol", "--config", store.config)
        assert "No live sessions of carol." in empty.stdout

    def test_delete_owner_deletes_every_session_of_the_principal(
        self, runner: CliRunner, store: Store
    ) -> None:
        """``delete --owner P`` logs P out everywhere (expired sessions included) and reports
        how many; other owners' sessions stay."""
        for sid in ("a-1", "a-2"):
            store.seed(sid, owner="alice")
        store.seed("a-old", owner="alice", idle_ms=2 * HOUR)
        store.seed("b-1", owner="bob")
        result = invoke(runner, "delete", "--owner", "alice", "--config", store.config, "--json")
        assert result.exit_code == 0
        assert json.loads(result.stdout) == {"owner": "alice", "deleted": 3}
        assert store.manager.list(owner="alice") == []
        assert store.manager.list() == ["b-1"]
        again = invoke(runner, "delete", "--owner", "alice", "--config", store.config)
        assert again.exit_code == 0
        assert "Deleted 0 session(s) of alice." in again.stdout

    @pytest.mark.parametrize(
        "args",
        [("a-1", "--owner", "alice"), ()],
        ids=["both", "neither"],
    )
    def test_delete_needs_exactly_one_of_id_and_owner(
        self, runner: CliRunner, store: Store, args: tuple[str, ...]
    ) -> None:
        """``delete`` with both an ID and --owner, or with neither, is a usage error (exit 2)
        and deletes nothing."""
        store.seed("a-1", owner="alice")
        result = invoke(runner, "delete", *args, "--config", store.config)
        assert result.exit_code == ExitCode.USAGE
        assert "give either ID or --owner P" in result.stderr
        assert store.manager.list() == ["a-1"]

    @pytest.mark.parametrize("command", ["list", "delete"])
    @pytest.mark.parametrize(
        ("owner", "wording"),
        [("", "must not be empty"), ("a\tb", "control character"), ("x" * 257, "257 bytes")],
        ids=["empty", "tab", "too-long"],
    )
    def test_invalid_owner_is_a_usage_error(
        self, runner: CliRunner, store: Store, command: str, owner: str, wording: str
    ) -> None:
        """An invalid --owner is a usage error (exit 2) naming the problem; nothing is
        deleted."""
        store.seed("a-1", owner="alice")
        result = invoke(runner, command, "--owner", owner, "--config", store.config)
        assert result.exit_code == ExitCode.USAGE
        assert wording in result.stderr
        assert store.manager.list() == ["a-1"]

    def test_delete_owner_on_a_backend_without_atomic_is_refused(
        self, runner: CliRunner, make_dist: MakeDist, stub_backend: str, tmp_path: Path
    ) -> None:
        """On a backend without the atomic capability ``delete --owner`` fails with the
        Unsupported message (which names the backends that can) and no traceback."""
        from sk_dict_backend import ENTRY_POINTS

        make_dist("sk-dict-backends", {}, {"sessionkeeper.backends": dict(ENTRY_POINTS)})
        config = write_config(
            tmp_path / "dict.toml",
            '[sessionkeeper]\nbackend = "test-dict"\ncleanup_interval = 0\n',
        )
        result = invoke(runner, "delete", "--owner", "alice", "--config", config)
        assert result.exit_code != 0
        assert "the test-dict backend does not support atomic operations" in result.stderr
        assert "backends that do: memory" in result.stderr
        assert "Traceback" not in result.output
