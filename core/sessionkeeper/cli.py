"""The operators' command line: ``sessionkeeper`` (also ``python -m sessionkeeper``).

Commands: ``backends``, ``list``, ``show ID``, ``delete ID``, ``cleanup``, ``stats``,
``check [--repair]``, and the transfers of :mod:`sessionkeeper._cli_ops`: ``export FILE``,
``import FILE``, ``migrate --to OTHER.toml`` and ``backup DIR``.

Every command that opens a store takes ``--config PATH`` (else ``$SESSIONKEEPER_CONFIG``, else
``./sessionkeeper.toml``, else the in-memory backend) and ``--json`` (machine-readable output on
stdout, nothing else on stdout), after its name or before it (``sessionkeeper --config X list``:
the group hands them down; the command's own wins). ``list``, ``show``, ``stats``, ``export``,
``backup`` and ``migrate`` (without ``--delete-source``) open the store read-only, so they can run
beside the process that owns it; ``delete``, ``cleanup`` and ``import`` open it for writing;
``check`` reads the store without opening a manager, and ``check --repair`` needs the owner
stopped. Errors
are one clear message on stderr, never a traceback (set ``SESSIONKEEPER_DEBUG=1`` to get one).

Exit codes:

===  ===================================================================================
 0   success
 1   session not found (``show`` or ``delete`` of an unknown or expired id)
 2   usage error: a bad option or argument, including an invalid session id (click's)
 3   configuration error: bad config file, unknown backend, invalid plugin
     (:class:`~sessionkeeper.ConfigError`, :class:`~sessionkeeper.BackendNotFound`,
     :class:`~sessionkeeper.PluginValidationError`)
 4   storage error (:class:`~sessionkeeper.StorageError`) or any other sessionkeeper error,
     and ``check`` finding problems it did not repair
 5   bad input data: a file ``import`` cannot use, or lines of it that were rejected
     (:class:`~sessionkeeper.ExportFormatError`)
 6   ``migrate``'s verification found the target different from the source
     (:class:`~sessionkeeper.VerificationFailed`)
 7   a conditional write found another version than it named; nothing was written
     (:class:`~sessionkeeper.VersionConflict`)
===  ===================================================================================
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final

import click
from rich.console import Console
from rich.json import JSON
from rich.text import Text

from ._cli_common import (
    DEBUG_ENV,
    ExitCode,
    exit_code_for,
)
from ._cli_common import common_options as _common_options
from ._cli_common import emit_json as _emit_json
from ._cli_common import fail as _fail
from ._cli_common import group_options as _group_options
from ._cli_common import is_per_process as _is_per_process
from ._cli_common import pass_down as _pass_down
from ._cli_new_backend import new_backend
from ._cli_ops import backup, export_command, import_command, migrate
from ._cli_plugins import BACKEND_GROUP, PLUGIN_GROUP, EntryPointInfo, describe_group
from ._cli_render import (
    error_console,
    flatten,
    format_duration,
    format_time,
    format_value,
    output_console,
    plain,
)
from ._cli_render import table as make_table
from ._config import load_config
from ._errors import (
    ConfigError,
    InvalidSession,
    SessionKeeperError,
    SessionNotFound,
)
from ._install import install_advice
from ._manager import SessionManager, check_store
from ._metrics import metrics_text
from ._model import Session, check_owner, validate_id

__all__ = ["DEBUG_ENV", "ExitCode", "cli", "exit_code_for", "main"]


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

    #: Read by :func:`sessionkeeper._cli_common.pass_down`: options passed down do not apply.
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


def _session_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Reject an invalid id as a usage error that names the problem."""
    try:
        return validate_id(value)
    except InvalidSession as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


_ID_ARGUMENT: Final = click.argument("session_id", metavar="ID", callback=_session_id)


def _owner(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Reject an invalid owner as a usage error that names the problem."""
    if value is None:
        return None
    try:
        return check_owner(value)
    except InvalidSession as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@contextmanager
def _open(config_path: Path | None, *, read_only: bool) -> Iterator[SessionManager]:
    """Open the configured manager; note on stderr when its backend lives in one process.

    The cleanup scheduler stays off: a command is short, and ``cleanup`` sweeps explicitly.
    """
    config = load_config(config_path)
    with SessionManager.from_settings(config, read_only=read_only, schedule=False) as manager:
        if _is_per_process(manager):
            error_console().print(
                Text(
                    f"note: the {manager.backend_name} backend is per process: this command "
                    "sees its own store, not the sessions of a running server."
                ),
                style="yellow",
            )
        yield manager


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


# --- backends ----------------------------------------------------------------------------------


def _configured_backend(config_path: Path | None) -> tuple[str | None, str | None]:
    """The configured backend name, or the config error as text (the listing still runs)."""
    try:
        return load_config(config_path).backend, None
    except ConfigError as exc:
        return None, str(exc)


def _capability_text(info: EntryPointInfo) -> Text:
    if info.capabilities is None:
        return Text("-")
    names = [name.replace("_", "-") for name, on in info.capabilities.items() if on]
    return Text(", ".join(names) or "none")


def _status_text(info: EntryPointInfo) -> Text:
    if info.error is None:
        return Text("ok", style="green")
    return Text(info.error, style="red")


def _render_backends(
    console: Console, backends: Sequence[EntryPointInfo], configured: str | None
) -> None:
    table = make_table(title="Backends (sessionkeeper.backends)")
    table.add_column("name", no_wrap=True)
    table.add_column("distribution", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("capabilities")
    table.add_column("status")
    for info in backends:
        name = Text(info.name)
        if info.name == configured:
            name.append(" (configured)", style="bold")
        table.add_row(
            name,
            plain(info.distribution or "?"),
            plain(info.version or "?"),
            _capability_text(info),
            _status_text(info),
        )
    if backends:
        console.print(table)
    else:
        console.print(
            Text(f"No backends installed; {install_advice('memory')}, or another backend.")
        )


def _render_plugins(console: Console, plugins: Sequence[EntryPointInfo]) -> None:
    if not plugins:
        console.print(Text("No wrapper plugins installed (sessionkeeper.plugins)."))
        return
    table = make_table(title="Wrapper plugins (sessionkeeper.plugins)")
    table.add_column("name", no_wrap=True)
    table.add_column("distribution", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("hooks")
    table.add_column("status")
    for info in plugins:
        table.add_row(
            plain(info.name),
            plain(info.distribution or "?"),
            plain(info.version or "?"),
            plain(", ".join(info.hooks) or "-"),
            _status_text(info),
        )
    console.print(table)


@cli.command(
    epilog="""\b
Examples:
  sessionkeeper backends
  sessionkeeper backends --json | jq '.backends[].name'
"""
)
@_common_options
def backends(config_path: Path | None, as_json: bool) -> None:
    """List installed backends and wrapper plugins.

    Shows every entry point in the groups sessionkeeper.backends and sessionkeeper.plugins:
    its name, the distribution and version that provide it, a backend's capabilities and
    the hooks a plugin implements. Each one is imported for this listing only; one that
    fails to import is listed with its error. The backend named by the configuration is
    marked; a configuration that cannot be read is reported on stderr but does not stop
    the listing. No store is opened.
    """
    configured, config_problem = _configured_backend(config_path)
    backend_infos = describe_group(BACKEND_GROUP)
    plugin_infos = describe_group(PLUGIN_GROUP)
    if config_problem is not None:
        error_console().print(Text.assemble(("warning: ", "bold yellow"), config_problem))
    elif configured is not None and configured not in {info.name for info in backend_infos}:
        error_console().print(
            Text.assemble(
                ("warning: ", "bold yellow"),
                f"the configured backend {configured!r} is not installed; "
                f"{install_advice(configured)}",
            )
        )
    if as_json:
        _emit_json(
            {
                "configured": configured,
                "backends": [
                    {**info.to_dict(), "configured": info.name == configured}
                    for info in backend_infos
                ],
                "plugins": [info.to_dict() for info in plugin_infos],
            }
        )
        return
    console = output_console()
    _render_backends(console, backend_infos, configured)
    _render_plugins(console, plugin_infos)


# --- list --------------------------------------------------------------------------------------


@cli.command(
    "list",
    epilog="""\b
Examples:
  sessionkeeper list
  sessionkeeper list --limit 20 --config /etc/myapp/sessionkeeper.toml
  sessionkeeper list --json | jq -r '.ids[]'
  sessionkeeper list --owner user_456
""",
)
@click.option(
    "--owner",
    callback=_owner,
    default=None,
    metavar="P",
    help="Only the sessions of principal P (the owner they were created with).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Show at most N sessions (the first N ids in sorted order).",
)
@_common_options
def list_command(
    config_path: Path | None, as_json: bool, limit: int | None, owner: str | None
) -> None:
    """List the ids of live sessions, sorted; with --owner, one principal's.

    Opens the store read-only and never touches a session. Expired sessions are left out
    whether or not cleanup has removed them yet. The table also shows when each session
    was last accessed and when it expires (one peek per row: use --limit on a large
    store); --json prints only the ids and the total count (and the owner asked for).
    """
    with _open(config_path, read_only=True) as manager:
        ids = sorted(manager.list(owner=owner))
        shown = ids if limit is None else ids[:limit]
        if as_json:
            listing: dict[str, Any] = {"backend": manager.backend_name}
            if owner is not None:
                listing["owner"] = owner
            _emit_json({**listing, "count": len(ids), "ids": shown})
            return
        now = manager.clock()
        sessions: list[Session] = []
        for session_id in shown:
            try:
                sessions.append(manager.peek(session_id))
            except SessionNotFound:  # expired or deleted since list(): not live any more
                continue
        console = output_console()
        if not ids:
            console.print(
                Text("No live sessions." if owner is None else f"No live sessions of {owner}.")
            )
            return
        table = make_table()
        table.add_column("id", no_wrap=True)
        table.add_column("last accessed (UTC)", no_wrap=True)
        table.add_column("expires", no_wrap=True)
        for session in sessions:
            table.add_row(
                plain(session.id),
                plain(format_time(session.last_accessed)),
                plain(_expiry(session, now)),
            )
        console.print(table)
        console.print(Text(f"{len(sessions)} of {len(ids)} live sessions shown."))


def _expiry(session: Session, now: int) -> str:
    return _deadline(session.expires_at, now)


def _deadline(expires_at: int | None, now: int) -> str:
    if expires_at is None:
        return "never"
    remaining = expires_at - now
    when = format_time(expires_at)
    return f"{when} (in {format_duration(remaining)})" if remaining > 0 else f"{when} (now)"


# --- show --------------------------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  sessionkeeper show 4Zq0r9xwT...
  sessionkeeper show 4Zq0r9xwT... --json | jq .metadata
  sessionkeeper show -- -starts-with-a-dash
"""
)
@_ID_ARGUMENT
@_common_options
def show(session_id: str, config_path: Path | None, as_json: bool) -> None:
    """Show one live session: its times, timeouts, deadlines, version, owner and metadata.

    Opens the store read-only and only peeks: showing a session never touches it, so it
    does not keep the session alive. Exits with 1 when no live session has this id, and
    with 2 when ID is not a valid session id. Put -- before an id that starts with '-'.
    """
    with _open(config_path, read_only=True) as manager:
        session = manager.peek(session_id)
        if as_json:
            _emit_json(
                {
                    **session.to_dict(),
                    "expires_at": session.expires_at,
                    "idle_expires_at": session.idle_expires_at,
                    "absolute_expires_at": session.absolute_expires_at,
                }
            )
            return
        now = manager.clock()
        table = make_table(show_header=False)
        table.add_column("field", style="bold", no_wrap=True)
        table.add_column("value")
        table.add_row("id", plain(session.id))
        table.add_row("created", plain(f"{format_time(session.created_at)} ({session.created_at})"))
        table.add_row(
            "last accessed",
            plain(f"{format_time(session.last_accessed)} ({session.last_accessed})"),
        )
        timeout = session.timeout_ms
        table.add_row(
            "timeout",
            plain(
                "never expires" if timeout is None else f"{format_duration(timeout)} ({timeout} ms)"
            ),
        )
        absolute = session.absolute_timeout_ms
        table.add_row(
            "absolute timeout",
            plain("none" if absolute is None else f"{format_duration(absolute)} ({absolute} ms)"),
        )
        table.add_row("idle deadline", plain(_deadline(session.idle_expires_at, now)))
        table.add_row("absolute deadline", plain(_deadline(session.absolute_expires_at, now)))
        table.add_row("expires", plain(_expiry(session, now)))
        table.add_row("version", plain(str(session.version)))
        table.add_row("owner", plain("none" if session.owner is None else session.owner))
        table.add_row("metadata", JSON(json.dumps(session.metadata), highlight=False))
        output_console().print(table)


# --- delete ------------------------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  sessionkeeper delete 4Zq0r9xwT... --config /etc/myapp/sessionkeeper.toml
  sessionkeeper list --json | jq -r '.ids[]' | xargs -n1 sessionkeeper delete --
  sessionkeeper delete --owner user_456
"""
)
@click.argument("session_id", metavar="[ID]", required=False, default=None)
@click.option(
    "--owner",
    callback=_owner,
    default=None,
    metavar="P",
    help="Delete every session of principal P instead (log out everywhere).",
)
@_common_options
def delete(
    session_id: str | None, config_path: Path | None, as_json: bool, owner: str | None
) -> None:
    """Delete one session, or with --owner every session of one principal.

    Opens the store for writing (a backend that allows one writer needs its server
    stopped first). Exits with 1 when no session has this id, and with 2 when ID is not a
    valid session id or when both ID and --owner (or neither) are given. --owner needs a
    backend with the atomic capability (see `sessionkeeper backends`). Put -- before an id
    that starts with '-'.
    """
    if (session_id is None) == (owner is None):
        raise click.UsageError("give either ID or --owner P (exactly one)")
    if owner is not None:
        with _open(config_path, read_only=False) as manager:
            removed = manager.delete_owner(owner)
            if as_json:
                _emit_json({"owner": owner, "deleted": removed})
                return
            output_console().print(Text(f"Deleted {removed} session(s) of {owner}."))
        return
    assert session_id is not None
    try:
        validate_id(session_id)
    except InvalidSession as exc:
        raise click.BadParameter(str(exc), param_hint="'ID'") from None
    with _open(config_path, read_only=False) as manager:
        if not manager.delete(session_id):
            raise SessionNotFound(session_id)
        if as_json:
            _emit_json({"id": session_id, "deleted": True})
            return
        output_console().print(Text(f"Deleted session {session_id}."))


# --- cleanup -----------------------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  sessionkeeper cleanup --config /etc/myapp/sessionkeeper.toml
  sessionkeeper cleanup --json
"""
)
@_common_options
def cleanup(config_path: Path | None, as_json: bool) -> None:
    """Remove every expired session now and print how many were removed.

    Opens the store for writing. A running manager does the same every cleanup_interval
    ms; this command is for stores whose owner is stopped or has the scheduler off
    (cleanup_interval = 0).
    """
    with _open(config_path, read_only=False) as manager:
        removed = manager.cleanup_expired()
        if as_json:
            _emit_json({"removed": removed})
            return
        noun = "session" if removed == 1 else "sessions"
        output_console().print(Text(f"Removed {removed} expired {noun}."))


# --- stats -------------------------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  sessionkeeper stats
  sessionkeeper stats --json | jq .live_sessions
  sessionkeeper stats --format prometheus > /var/lib/node_exporter/sessionkeeper.prom
"""
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "prometheus"]),
    default=None,
    help="table (the default), json (as --json) or prometheus (the text exposition format "
    "of the metrics an application serves with sessionkeeper.start_metrics_server).",
)
@_common_options
def stats(config_path: Path | None, as_json: bool, output_format: str | None) -> None:
    """Show the store's statistics: backend, capabilities, live count, plugin figures.

    Opens the store read-only. Operation counters appear only when the configuration
    turns them on (stats = true); they count this command's own manager, not the server's
    (an application exports its own with sessionkeeper.start_metrics_server).
    """
    if as_json and output_format not in (None, "json"):
        raise click.UsageError(f"--json and --format {output_format} contradict each other")
    chosen = "json" if as_json else (output_format or "table")
    with _open(config_path, read_only=True) as manager:
        if chosen == "prometheus":
            click.echo(metrics_text(manager), nl=False)
            return
        figures = manager.stats()
        if chosen == "json":
            _emit_json(figures)
            return
        table = make_table()
        table.add_column("statistic", no_wrap=True)
        table.add_column("value")
        for key, value in flatten(figures):
            table.add_row(plain(key), plain(format_value(value)))
        output_console().print(table)


# --- check -------------------------------------------------------------------------------------

#: Problems printed by the human output of ``check`` (``--json`` has every one the report has).
_CHECK_SHOWN: Final = 20


def _check_failed(report: dict[str, Any], repair: bool) -> bool:
    """Whether ``check`` found problems that are still there (a repair that ran fixed them)."""
    return not report.get("ok", False) and not (repair and report.get("repaired", False))


def _render_check(console: Console, backend: str, report: dict[str, Any], repair: bool) -> None:
    problems = [str(p) for p in report.get("problems", [])]
    if report.get("ok", False):
        console.print(Text(f"ok: the {backend} store passed every check.", style="green"))
    elif repair and report.get("repaired", False):
        console.print(Text(f"repaired: the {backend} store was rewritten.", style="yellow"))
    else:
        noun = "problem" if len(problems) == 1 else "problems"
        console.print(Text(f"{len(problems)} {noun} found in the {backend} store.", style="red"))
    table = make_table(show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    shown = ("problems", "ok")
    for key, value in report.items():
        if key in shown or value in (None, [], {}):
            continue
        if key == "notes":
            value = "; ".join(str(v) for v in value)
        table.add_row(plain(key.replace("_", " ")), plain(format_value(value)))
    console.print(table)
    if problems:
        console.print(Text("problems:", style="bold"))
        for problem in problems[:_CHECK_SHOWN]:
            console.print(Text.assemble("  - ", (problem, "")))
        if len(problems) > _CHECK_SHOWN:
            console.print(Text(f"  ... {len(problems) - _CHECK_SHOWN} more (see --json)"))
    if _check_failed(report, repair):
        console.print(Text("Run `sessionkeeper check --repair` with the store's owner stopped."))


@cli.command(
    epilog="""\b
Examples:
  sessionkeeper check --config /etc/myapp/sessionkeeper.toml
  sessionkeeper check --repair --config /etc/myapp/sessionkeeper.toml
  sessionkeeper check --json | jq .problems
"""
)
@click.option(
    "--repair",
    is_flag=True,
    help="Write a repaired store holding every intact session, keeping the original as a "
    "backup. Opens the store for writing: stop its owner first.",
)
@_common_options
def check(config_path: Path | None, as_json: bool, repair: bool) -> None:
    """Verify the store's integrity; with --repair, salvage every intact session.

    Without --repair the store is read only, so the check can run beside the server
    that owns it: every record must decode and validate and the storage itself (for
    sqlitedict, SQLite's integrity check) must pass. With --repair the store is opened
    for writing: the backend writes a new store holding every intact session, keeps the
    original as a timestamped backup and sets aside what it could not use; the report
    says what was salvaged and quarantined. The store is never opened as a manager, so
    a store too damaged to open can still be checked. Exits with 0 when nothing is
    wrong (or the repair succeeded), with 4 when problems were found and not repaired.
    A backend with nothing to check (memory) says so and exits with 0.
    """
    config = load_config(config_path)
    report = check_store(config, repair=repair)
    if report is None:
        if as_json:
            _emit_json({"backend": config.backend, "supported": False})
        else:
            output_console().print(
                Text(f"The {config.backend} backend has nothing to check (no check hook).")
            )
        return
    if as_json:
        _emit_json({"backend": config.backend, "supported": True, **report})
    else:
        _render_check(output_console(), config.backend, report, repair)
    if _check_failed(report, repair):
        raise click.exceptions.Exit(int(ExitCode.STORAGE))


cli.add_command(new_backend)


for _command in (export_command, import_command, migrate, backup):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI (the ``sessionkeeper`` console script) and exit with its status."""
    cli.main(args=list(argv) if argv is not None else None)
