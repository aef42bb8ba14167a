"""What every ``sessionkeeper`` command shares: exit codes, error reporting, common options, and
opening the configured manager.

:mod:`sessionkeeper.cli` assembles the group; the command modules (``_sessions``, ``_ops`` …)
import from here, never from :mod:`sessionkeeper.cli`, so there is no import cycle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from rich.text import Text

from .._config import load_config
from .._errors import (
    ConfigError,
    ExportFormatError,
    ExportTargetError,
    InvalidSession,
    PluginValidationError,
    SameStoreError,
    SessionNotFound,
    Unsupported,
    VerificationFailed,
    VersionConflict,
)
from .._manager import SessionManager
from ._render import error_console

__all__ = [
    "DEBUG_ENV",
    "ExitCode",
    "common_options",
    "emit_json",
    "exit_code_for",
    "fail",
    "group_options",
    "is_per_process",
    "open_manager",
    "pass_down",
]

#: Set to a non-empty value to print the traceback of an unexpected error.
DEBUG_ENV: Final = "SESSIONKEEPER_DEBUG"

F = TypeVar("F", bound=Callable[..., Any])


class ExitCode(IntEnum):
    """The exit status of every ``sessionkeeper`` command."""

    OK = 0
    NOT_FOUND = 1
    USAGE = 2
    CONFIG = 3
    STORAGE = 4
    DATA = 5
    VERIFY = 6
    #: a conditional write found another version than the one it named (nothing was written):
    #: read again and retry; not a storage failure.
    CONFLICT = 7


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code that reports ``exc`` (see the module docstring)."""
    if isinstance(exc, SessionNotFound):
        return ExitCode.NOT_FOUND
    if isinstance(exc, InvalidSession | SameStoreError | ExportTargetError | Unsupported):
        # Unsupported: the operation asked of this backend is one it cannot do correctly; the
        # caller chose the wrong backend or operation, the store did not fail.
        return ExitCode.USAGE
    if isinstance(exc, VersionConflict):
        return ExitCode.CONFLICT
    if isinstance(exc, ConfigError | PluginValidationError):
        return ExitCode.CONFIG
    if isinstance(exc, ExportFormatError):
        return ExitCode.DATA
    if isinstance(exc, VerificationFailed):
        return ExitCode.VERIFY
    return ExitCode.STORAGE


_CONFIG_HELP: Final = (
    "Config file (TOML). Default: $SESSIONKEEPER_CONFIG, else ./sessionkeeper.toml, "
    "else the in-memory backend with default settings."
)
_JSON_HELP: Final = "Print machine-readable JSON on stdout (and nothing else on stdout)."


def fail(exc: BaseException, code: ExitCode) -> click.exceptions.Exit:
    err = error_console()
    err.print(Text.assemble(("error: ", "bold red"), str(exc)))
    return click.exceptions.Exit(int(code))


def common_options(func: F) -> F:
    """Add ``--config`` and ``--json`` to a command."""
    return _config_and_json(func, config_help=_CONFIG_HELP, json_help=_JSON_HELP)


def _config_and_json(func: F, *, config_help: str, json_help: str) -> F:
    """``func`` with the options ``--config PATH`` and ``--json``, helped as given."""
    func = click.option("--json", "as_json", is_flag=True, help=json_help)(func)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="PATH",
        help=config_help,
    )(func)


_GROUP_CONFIG_HELP: Final = (
    "Config file (TOML) for the command that follows, as if given after it; the command's own "
    "--config wins. Default: $SESSIONKEEPER_CONFIG, else ./sessionkeeper.toml, else the "
    "in-memory backend with default settings."
)
_GROUP_JSON_HELP: Final = (
    "Machine-readable JSON from the command that follows, as if given after it."
)

#: The parameter names of the options a group accepts for its command (see :func:`group_options`).
_PASSED_DOWN: Final = {"config_path": "--config", "as_json": "--json"}


def group_options(func: F) -> F:
    """Add ``--config`` and ``--json`` to a group, for the command that follows.

    ``sessionkeeper --config X list`` then means ``sessionkeeper list --config X``: the group's
    callback must call :func:`pass_down` with the values, which hands them to the command as
    defaults through click's ``default_map``, so an option given after the command name wins.
    """
    return _config_and_json(func, config_help=_GROUP_CONFIG_HELP, json_help=_GROUP_JSON_HELP)


def pass_down(ctx: click.Context, *, config_path: Path | None, as_json: bool) -> None:
    """Make the group's ``--config``/``--json`` the defaults of the command being invoked.

    A command that has no such option (``new-backend`` opens no store) is a usage error that
    says so, rather than an option silently ignored.
    """
    given = {
        name: value
        for name, value in (("config_path", config_path), ("as_json", as_json))
        if value not in (None, False)
    }
    name = ctx.invoked_subcommand
    if not given or name is None or ctx.resilient_parsing:
        return
    group = ctx.command
    command = group.get_command(ctx, name) if isinstance(group, click.Group) else None
    if command is None or getattr(command, "unavailable", False):
        return  # click reports an unknown command; a stand-in explains itself
    accepted = {param.name for param in command.params}
    refused = [_PASSED_DOWN[key] for key in given if key not in accepted]
    if refused:
        raise click.UsageError(
            f"the {name!r} command does not take {' or '.join(refused)}", ctx=ctx
        )
    defaults = dict(ctx.default_map or {})
    defaults[name] = {**defaults.get(name, {}), **given}
    ctx.default_map = defaults


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2))


def is_per_process(manager: SessionManager) -> bool:
    caps = manager.capabilities
    return manager.backend_name == "memory" or not (caps.persistent or caps.shared)


@contextmanager
def open_manager(config_path: Path | None, *, read_only: bool) -> Iterator[SessionManager]:
    """Open the configured manager; note on stderr when its backend lives in one process.

    The cleanup scheduler stays off: a command is short, and ``cleanup`` sweeps explicitly.
    """
    config = load_config(config_path)
    with SessionManager.from_settings(config, read_only=read_only, schedule=False) as manager:
        if is_per_process(manager):
            error_console().print(
                Text(
                    f"note: the {manager.backend_name} backend is per process: this command "
                    "sees its own store, not the sessions of a running server."
                ),
                style="yellow",
            )
        yield manager
