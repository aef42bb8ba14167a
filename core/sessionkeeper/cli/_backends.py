"""``sessionkeeper backends``: the installed backends and wrapper plugins; the configured one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from .._config import load_config
from .._errors import (
    ConfigError,
)
from .._install import install_advice
from ._common import common_options as _common_options
from ._common import emit_json as _emit_json
from ._plugins import BACKEND_GROUP, PLUGIN_GROUP, EntryPointInfo, describe_group
from ._render import (
    error_console,
    output_console,
    plain,
)
from ._render import table as make_table

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


@click.command(
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
