"""The commands on the store as a whole: ``stats`` (text, JSON or Prometheus) and ``check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import click
from rich.console import Console
from rich.text import Text

from .._config import load_config
from .._manager import check_store
from .._metrics import metrics_text
from ._common import (
    ExitCode,
    open_manager,
)
from ._common import common_options as _common_options
from ._common import emit_json as _emit_json
from ._render import (
    flatten,
    format_value,
    output_console,
    plain,
)
from ._render import table as make_table


@click.command(
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
    "of the metrics an application serves with sessionkeeper.metrics.start_metrics_server).",
)
@_common_options
def stats(config_path: Path | None, as_json: bool, output_format: str | None) -> None:
    """Show the store's statistics: backend, capabilities, live count, plugin figures.

    Opens the store read-only. Operation counters appear only when the configuration
    turns them on (stats = true); they count this command's own manager, not the server's
    (an application exports its own with sessionkeeper.metrics.start_metrics_server).
    """
    if as_json and output_format not in (None, "json"):
        raise click.UsageError(f"--json and --format {output_format} contradict each other")
    chosen = "json" if as_json else (output_format or "table")
    with open_manager(config_path, read_only=True) as manager:
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


@click.command(
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
