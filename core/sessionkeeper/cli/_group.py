"""The ``sessionkeeper`` click group: its help, the commands plugins add, and error handling.

Every sessionkeeper error a command raises becomes one line on stderr and an exit code of
:class:`~sessionkeeper.cli.ExitCode` here; :mod:`sessionkeeper.cli` adds the core's commands.
"""

from __future__ import annotations

import os
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final

import click
from rich.text import Text

from .._errors import (
    SessionKeeperError,
)
from .._install import install_advice
from ._common import (
    DEBUG_ENV,
    ExitCode,
    exit_code_for,
)
from ._common import fail as _fail
from ._common import group_options as _group_options
from ._common import pass_down as _pass_down
from ._render import (
    error_console,
)

_EXIT_CODES_HELP: Final = """\b
Exit codes:
  0  success
  1  session not found (show/delete of an unknown or expired id)
  2  usage error (bad option or argument, invalid session id)
  3  configuration error (bad config file, unknown backend, invalid plugin)
  4  storage error, or any other sessionkeeper error; check found problems
  5  bad input data: an import file that cannot be used, or rejected lines
  6  migrate: the verification found the target different from the source
  7  conflict: a conditional write found another version (nothing written)
"""

#: Entry-point group of commands that plugins add to ``sessionkeeper`` (name -> click command).
COMMAND_GROUP: Final = "sessionkeeper.commands"
#: Commands of the design that a plugin provides, and the backend whose distribution provides each.
_PLUGIN_COMMANDS: Final = {"node": "zmq"}


class _Unavailable(click.Command):
    """A stand-in for a plugin command that cannot be loaded (see :func:`_unavailable`)."""

    #: Read by :func:`sessionkeeper.cli._common.pass_down`: options passed down do not apply.
    unavailable = True


def _unavailable(name: str, why: str) -> click.Command:
    """A stand-in for a plugin command that cannot be loaded: it explains, and exits with 3."""

    def run() -> None:
        raise _fail(Exception(why), ExitCode.CONFIG)

    return _Unavailable(
        name,
        callback=run,
        help=f"(unavailable) {why}",
        short_help="(unavailable: see --help)",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class _Group(click.Group):
    """A group that turns sessionkeeper errors into one line on stderr and an exit code.

    Besides its own commands it offers those of entry points in ``sessionkeeper.commands``
    (``node`` comes from ``sessionkeeper-zmq``), imported only when one is run or listed.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names.update(_PLUGIN_COMMANDS)
        names.update(ep.name for ep in entry_points(group=COMMAND_GROUP))
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        found = entry_points(group=COMMAND_GROUP, name=cmd_name)
        if not found:
            backend = _PLUGIN_COMMANDS.get(cmd_name)
            if backend is None:
                return None
            return _unavailable(
                cmd_name,
                f"the {cmd_name!r} command comes with sessionkeeper-{backend}: "
                f"{install_advice(backend)}",
            )
        ep = next(iter(found))
        try:
            loaded = ep.load()
        except Exception as exc:
            return _unavailable(
                cmd_name,
                f"the {cmd_name!r} command ({ep.value}) failed to import: "
                f"{type(exc).__name__}: {exc}",
            )
        if not isinstance(loaded, click.Command):
            return _unavailable(
                cmd_name, f"{ep.value} is not a click command (got {type(loaded).__name__})"
            )
        return loaded

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            raise  # the reader went away (``list | head``); click exits quietly
        except SessionKeeperError as exc:
            if os.environ.get(DEBUG_ENV):
                traceback.print_exception(exc)
            raise _fail(exc, exit_code_for(exc)) from None
        except KeyboardInterrupt:
            error_console().print(Text("interrupted", style="bold red"))
            raise click.exceptions.Exit(130) from None
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                traceback.print_exc()
            message = (
                f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 to see the traceback)"
            )
            raise _fail(Exception(message), ExitCode.STORAGE) from None


@click.group(
    cls=_Group,
    epilog=_EXIT_CODES_HELP
    + """
\b
Examples:
  sessionkeeper backends
  sessionkeeper list --config /etc/myapp/sessionkeeper.toml --limit 20
  sessionkeeper --config /etc/myapp/sessionkeeper.toml --json stats
  sessionkeeper show 4Zq0r9xw... --json
  SESSIONKEEPER_CONFIG=prod.toml sessionkeeper stats
""",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@_group_options
@click.version_option(package_name="sessionkeeper", prog_name="sessionkeeper")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, as_json: bool) -> None:
    """Inspect and maintain sessionkeeper session stores.

    Every command that opens a store reads the configuration from --config PATH, else
    $SESSIONKEEPER_CONFIG, else ./sessionkeeper.toml, else uses the in-memory backend.
    Add --json for machine-readable output. --config and --json go after the command's
    name or before it (sessionkeeper --config X list); given in both places, the one after
    the name wins. list, show, stats, export, backup and migrate (without
    --delete-source) open the store read-only, so they can run beside the server that
    owns it; delete, cleanup and import open it for writing.
    """
    _pass_down(ctx, config_path=config_path, as_json=as_json)
