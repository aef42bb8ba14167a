"""The commands on sessions: ``list``, ``show ID``, ``delete ID`` (or ``--owner``), ``cleanup``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import click
from rich.json import JSON
from rich.text import Text

from .._errors import (
    InvalidSession,
    SessionNotFound,
)
from .._model import Session, check_owner, validate_id
from ._common import common_options as _common_options
from ._common import emit_json as _emit_json
from ._common import (
    open_manager,
)
from ._render import (
    format_duration,
    format_time,
    output_console,
    plain,
)
from ._render import table as make_table


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


@click.command(
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
    with open_manager(config_path, read_only=True) as manager:
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


@click.command(
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
    with open_manager(config_path, read_only=True) as manager:
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


@click.command(
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
        with open_manager(config_path, read_only=False) as manager:
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
    with open_manager(config_path, read_only=False) as manager:
        if not manager.delete(session_id):
            raise SessionNotFound(session_id)
        if as_json:
            _emit_json({"id": session_id, "deleted": True})
            return
        output_console().print(Text(f"Deleted session {session_id}."))


# --- cleanup -----------------------------------------------------------------------------------


@click.command(
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
    with open_manager(config_path, read_only=False) as manager:
        removed = manager.cleanup_expired()
        if as_json:
            _emit_json({"removed": removed})
            return
        noun = "session" if removed == 1 else "sessions"
        output_console().print(Text(f"Removed {removed} expired {noun}."))


# --- stats -------------------------------------------------------------------------------------
