"""Entry-point discovery: only the configured backend is imported, and every failure is explained.

The distributions here are real: a ``.dist-info`` folder with ``entry_points.txt`` on ``sys.path``,
found by ``importlib.metadata`` exactly as pip-installed ones are.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from sessionkeeper import (
    BackendNotFound,
    Config,
    ConfigError,
    InvalidSession,
    SessionManager,
    StorageError,
    installed_backends,
)
from sessionkeeper.backend import PluginValidationError, check_store

MakeDist = Callable[..., Path]

# A complete backend written only against the public API; {extra} lets a test break it.
BACKEND_SOURCE = """
import attrs
from sessionkeeper.backend import Capabilities, hookimpl

@attrs.frozen
class Options:
    label: str = "x"

class {name}:
    options_class = Options
    capabilities = Capabilities(blocking=False)

    def __init__(self, options, context):
        self.data = {{}}
        {extra}

    @hookimpl
    def sessionkeeper_store(self, session):
        self.data[session.id] = session

    @hookimpl
    def sessionkeeper_fetch(self, session_id):
        return self.data.get(session_id)

    @hookimpl
    def sessionkeeper_touch(self, session_id, last_accessed):
        s = self.data.get(session_id)
        if s is None:
            return None
        s = self.data[session_id] = s.touched(last_accessed)
        return s

    @hookimpl
    def sessionkeeper_delete(self, session_id):
        return self.data.pop(session_id, None) is not None

    @hookimpl
    def sessionkeeper_list(self, now):
        return [k for k, s in self.data.items() if not s.is_expired(now)]

    @hookimpl
    def sessionkeeper_count(self, now):
        return len(self.sessionkeeper_list(now))

    @hookimpl
    def sessionkeeper_iter_sessions(self):
        return list(self.data.values())

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now):
        dead = [k for k, s in self.data.items() if s.is_expired(now)]
        for k in dead:
            del self.data[k]
        return len(dead)
"""


def backend_module(name: str = "Backend", extra: str = "pass") -> str:
    return BACKEND_SOURCE.format(name=name, extra=extra)


class TestBackendDiscovery:
    def test_only_the_configured_backend_is_imported(self, make_dist: MakeDist) -> None:
        """With two backends installed, configuring one never imports the other."""
        make_dist(
            "sessionkeeper-pair",
            {
                "sk_good": backend_module(),
                "sk_bomb": "raise RuntimeError('imported although not configured')\n",
            },
            {"sessionkeeper.backends": {"good": "sk_good:Backend", "bomb": "sk_bomb:Backend"}},
        )
        with SessionManager(backend="good", cleanup_interval=0) as sessions:
            session = sessions.create()
            assert sessions.fetch(session.id) == session
        assert "sk_bomb" not in sys.modules
        assert {"good", "bomb", "memory"} <= set(installed_backends())

    def test_missing_backend_lists_installed_and_no_made_up_package(self, tmp_path: Path) -> None:
        """A backend that is not one of the project's names itself and the installed backends,
        and suggests no ``pip install`` of a name built from the input (issue 12 item 15)."""
        config = tmp_path / "sk.toml"
        config.write_text('[sessionkeeper]\nbackend = "nosuchstore"\n')
        with pytest.raises(BackendNotFound) as info:
            SessionManager.from_config(config)
        message = str(info.value)
        assert "backend 'nosuchstore' is not installed" in message
        assert "installed backends:" in message
        assert "memory" in message
        assert "pip install" not in message
        assert "sessionkeeper-nosuchstore" not in message
        assert "not one of sessionkeeper's own backends" in message
        assert info.value.suggestion is None
        assert str(config.resolve()) in message
        assert info.value.key == "sessionkeeper.backend"
        assert isinstance(info.value, ConfigError)

    def test_backend_that_raises_on_import(self, make_dist: MakeDist) -> None:
        """A backend whose module raises on import gives BackendNotFound with the cause."""
        make_dist(
            "sessionkeeper-broken",
            {"sk_broken": "import no_such_dependency_xyz\n"},
            {"sessionkeeper.backends": {"broken": "sk_broken:Backend"}},
        )
        with pytest.raises(BackendNotFound) as info:
            SessionManager(backend="broken")
        message = str(info.value)
        assert "backend 'broken' (sk_broken:Backend) failed to import" in message
        assert "ModuleNotFoundError" in message
        assert "no_such_dependency_xyz" in message
        assert "it comes from the installed distribution sessionkeeper-broken 0.1.0" in message
        assert "pip install" not in message
        assert isinstance(info.value.__cause__, ModuleNotFoundError)

    def test_entry_point_that_is_not_a_class(self, make_dist: MakeDist) -> None:
        """An entry point naming a function is rejected with PluginValidationError."""
        make_dist(
            "sessionkeeper-func",
            {"sk_func": "def Backend():\n    pass\n"},
            {"sessionkeeper.backends": {"func": "sk_func:Backend"}},
        )
        with pytest.raises(PluginValidationError, match="must name a backend class, got function"):
            SessionManager(backend="func")

    def test_class_without_required_hooks(self, make_dist: MakeDist) -> None:
        """A backend class lacking required hooks is rejected, naming the missing hooks."""
        source = backend_module().replace("def sessionkeeper_count", "def count")
        make_dist(
            "sessionkeeper-partial",
            {"sk_partial": source},
            {"sessionkeeper.backends": {"partial": "sk_partial:Backend"}},
        )
        with pytest.raises(PluginValidationError, match="does not implement sessionkeeper_count"):
            SessionManager(backend="partial")

    def test_methods_not_marked_as_hookimpl(self, make_dist: MakeDist) -> None:
        """A hook method without @hookimpl is named in the error (pluggy would ignore it)."""
        source = backend_module().replace(
            "    @hookimpl\n    def sessionkeeper_delete", "    def sessionkeeper_delete"
        )
        make_dist(
            "sessionkeeper-unmarked",
            {"sk_unmarked": source},
            {"sessionkeeper.backends": {"unmarked": "sk_unmarked:Backend"}},
        )
        with pytest.raises(PluginValidationError, match="does not mark sessionkeeper_delete"):
            SessionManager(backend="unmarked")

    def test_hook_with_a_wrong_argument(self, make_dist: MakeDist) -> None:
        """A hookimpl whose arguments are not in the spec is rejected naming the plugin."""
        source = backend_module().replace(
            "def sessionkeeper_fetch(self, session_id)", "def sessionkeeper_fetch(self, key)"
        )
        make_dist(
            "sessionkeeper-badsig",
            {"sk_badsig": source},
            {"sessionkeeper.backends": {"badsig": "sk_badsig:Backend"}},
        )
        with pytest.raises(PluginValidationError, match="key"):
            SessionManager(backend="badsig")

    def test_constructor_failure_is_a_storage_error(self, make_dist: MakeDist) -> None:
        """A backend whose constructor raises gives a StorageError naming the backend."""
        make_dist(
            "sessionkeeper-ctor",
            {"sk_ctor": backend_module(extra="raise OSError('disk on fire')")},
            {"sessionkeeper.backends": {"ctor": "sk_ctor:Backend"}},
        )
        with pytest.raises(StorageError, match="ctor backend: cannot start: OSError: disk on fire"):
            SessionManager(backend="ctor")

    def test_open_failure_is_a_storage_error(self, make_dist: MakeDist) -> None:
        """A backend whose open hook raises gives a StorageError naming the backend and cause."""
        source = backend_module() + (
            "\n    @hookimpl\n    def sessionkeeper_open(self):\n"
            "        raise ConnectionRefusedError('server down')\n"
        )
        make_dist(
            "sessionkeeper-noopen",
            {"sk_noopen": source},
            {"sessionkeeper.backends": {"noopen": "sk_noopen:Backend"}},
        )
        with pytest.raises(StorageError, match="noopen backend: cannot open: Connection"):
            SessionManager(backend="noopen")

    def test_backend_options_come_from_its_options_class(self, make_dist: MakeDist) -> None:
        """backend_opts are checked by the backend's class: a wrong type names the key."""
        make_dist(
            "sessionkeeper-opts",
            {"sk_opts": backend_module()},
            {"sessionkeeper.backends": {"opts": "sk_opts:Backend"}},
        )
        with pytest.raises(
            ConfigError, match=r"sessionkeeper\.backend_opts\.label: expected a string"
        ):
            SessionManager(backend="opts", backend_opts={"label": 5})

    def test_same_name_from_two_distributions(self, make_dist: MakeDist) -> None:
        """Two distributions claiming one backend name is an error naming both."""
        make_dist(
            "sessionkeeper-one",
            {"sk_one": backend_module()},
            {"sessionkeeper.backends": {"twin": "sk_one:Backend"}},
        )
        make_dist(
            "sessionkeeper-two",
            {"sk_two": backend_module()},
            {"sessionkeeper.backends": {"twin": "sk_two:Backend"}},
        )
        with pytest.raises(PluginValidationError, match="provided twice") as info:
            SessionManager(backend="twin")
        assert "sessionkeeper-one" in str(info.value)
        assert "sessionkeeper-two" in str(info.value)


WRAPPER_SOURCE = """
from sessionkeeper.backend import hookimpl

seen = []

@hookimpl(wrapper=True)
def sessionkeeper_store(session):
    seen.append(session.id)
    return (yield)
"""


class TestWrapperPlugins:
    def test_entry_point_wrappers_load_into_every_manager(
        self, make_dist: MakeDist, table_name: str
    ) -> None:
        """A sessionkeeper.plugins entry point wraps the operations of every manager."""
        make_dist(
            "sessionkeeper-audit",
            {"sk_audit": WRAPPER_SOURCE},
            {"sessionkeeper.plugins": {"audit": "sk_audit"}},
        )
        import sk_audit  # type: ignore[import-not-found]

        with SessionManager(backend_opts={"table_name": table_name}, cleanup_interval=0) as s:
            session = s.create()
            assert s.plugin_manager.get_plugin("audit") is sk_audit
        assert sk_audit.seen == [session.id]

    def test_autoload_can_be_disabled(
        self, make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch, table_name: str
    ) -> None:
        """SESSIONKEEPER_DISABLE_PLUGIN_AUTOLOAD skips the sessionkeeper.plugins entry points."""
        make_dist(
            "sessionkeeper-audit2",
            {"sk_audit2": WRAPPER_SOURCE},
            {"sessionkeeper.plugins": {"audit2": "sk_audit2"}},
        )
        monkeypatch.setenv("SESSIONKEEPER_DISABLE_PLUGIN_AUTOLOAD", "1")
        with SessionManager(backend_opts={"table_name": table_name}, cleanup_interval=0) as s:
            s.create()
            assert s.plugin_manager.get_plugin("audit2") is None

    def test_broken_wrapper_plugin_is_named(self, make_dist: MakeDist, table_name: str) -> None:
        """A wrapper plugin that fails to import is a PluginValidationError naming it."""
        make_dist(
            "sessionkeeper-badwrap",
            {"sk_badwrap": "raise ImportError('missing thing')\n"},
            {"sessionkeeper.plugins": {"badwrap": "sk_badwrap"}},
        )
        with pytest.raises(PluginValidationError, match=r"'badwrap'.*error importing plugin"):
            SessionManager(backend_opts={"table_name": table_name})


class TestBackendFailures:
    def test_unexpected_backend_exceptions_become_storage_errors(self, make_dist: MakeDist) -> None:
        """An exception a backend lets escape surfaces as StorageError naming backend and cause,
        for every operation, and a later healthy call still works."""
        source = backend_module() + textwrap.dedent(
            """
            import functools

            def flaky(method):
                @functools.wraps(method)
                def wrapped(self, *args):
                    if Backend.fail:
                        raise OSError(method.__name__.removeprefix("sessionkeeper_") + " exploded")
                    return method(self, *args)
                return wrapped

            Backend.fail = False
            for _name in ("store", "fetch", "delete", "list", "count", "iter_sessions"):
                _hook = "sessionkeeper_" + _name
                setattr(Backend, _hook, hookimpl(flaky(getattr(Backend, _hook))))
            """
        )
        make_dist(
            "sessionkeeper-flaky",
            {"sk_flaky": source},
            {"sessionkeeper.backends": {"flaky": "sk_flaky:Backend"}},
        )
        import sk_flaky  # type: ignore[import-not-found]

        with SessionManager(backend="flaky", cleanup_interval=0) as sessions:
            session = sessions.create()
            sk_flaky.Backend.fail = True
            calls = {
                "store": lambda: sessions.store(session),
                "fetch": lambda: sessions.fetch(session.id),
                "peek": lambda: sessions.peek(session.id),
                "delete": lambda: sessions.delete(session.id),
                "list": sessions.list,
                "count": sessions.count,
                "iter_sessions": lambda: list(sessions.iter_sessions()),
            }
            for name, call in calls.items():
                with pytest.raises(StorageError, match=rf"^flaky backend: {name} failed: OSError"):
                    call()
            sk_flaky.Backend.fail = False
            assert sessions.fetch(session.id) == session


class TestCheckStore:
    def test_check_runs_on_an_unopened_backend(self, make_dist: MakeDist) -> None:
        """check_store() builds the backend without opening it and returns its check report;
        a backend without sessionkeeper_check gives None."""
        source = backend_module() + textwrap.dedent(
            """
            opened = []

            def _open(self):
                opened.append(self)

            def _check(self, repair):
                return {"ok": True, "checked": 0, "intact": 0, "problems": [], "repair": repair}

            Backend.sessionkeeper_open = hookimpl(_open)
            Backend.sessionkeeper_check = hookimpl(_check)
            """
        )
        make_dist(
            "sessionkeeper-checked",
            {"sk_checked": source},
            {"sessionkeeper.backends": {"checked": "sk_checked:Backend"}},
        )
        import sk_checked  # type: ignore[import-not-found]

        report = check_store(Config(backend="checked"), repair=True)
        assert report == {"ok": True, "checked": 0, "intact": 0, "problems": [], "repair": True}
        assert sk_checked.opened == []
        assert check_store(Config(backend="memory")) is None


def test_backend_exception_on_none_id_is_invalid_session(make_dist: MakeDist) -> None:
    """fetch(None) on a backend that raises for it is InvalidSession, not StorageError."""
    source = backend_module().replace(
        "        return self.data.get(session_id)",
        "        if not isinstance(session_id, str):\n"
        "            raise TypeError('ids are strings')\n"
        "        return self.data.get(session_id)",
    )
    make_dist(
        "sessionkeeper-strict",
        {"sk_strict": source},
        {"sessionkeeper.backends": {"strict": "sk_strict:Backend"}},
    )
    with (
        SessionManager(backend="strict", cleanup_interval=0) as sessions,
        pytest.raises(InvalidSession, match="must be a str, got NoneType"),
    ):
        sessions.fetch(None)  # type: ignore[arg-type]


class TestPluginCommands:
    def test_entry_point_commands_join_the_cli(self, make_dist: MakeDist) -> None:
        """A click command in sessionkeeper.commands is listed and runs as a subcommand;
        one that fails to import is listed and explains itself with exit 3."""
        from click.testing import CliRunner

        from sessionkeeper.cli import cli

        make_dist(
            "sessionkeeper-hello",
            {
                "sk_hello": (
                    "import click\n\n"
                    "@click.command()\n"
                    "@click.argument('name')\n"
                    "def hello(name):\n"
                    "    click.echo(f'hello {name}')\n"
                ),
                "sk_badcmd": "raise ImportError('no extension module')\n",
            },
            {"sessionkeeper.commands": {"hello": "sk_hello:hello", "broken": "sk_badcmd:cmd"}},
        )
        runner = CliRunner()
        listing = runner.invoke(cli, ["--help"])
        assert "hello" in listing.output
        assert "broken" in listing.output
        result = runner.invoke(cli, ["hello", "world"])
        assert result.exit_code == 0
        assert result.output == "hello world\n"
        broken = runner.invoke(cli, ["broken"])
        assert broken.exit_code == 3
        assert "'broken' command (sk_badcmd:cmd) failed to import: ImportError" in broken.output
