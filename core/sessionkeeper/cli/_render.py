"""Formatting helpers of the CLI: consoles, times, durations, flattened stats.

Every value that came from a store or a user (ids, metadata, paths, error messages) is rendered
as a rich :class:`~rich.text.Text`, never as markup, so an id such as ``[bold]`` or ``:smile:``
prints as typed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = [
    "error_console",
    "flatten",
    "format_duration",
    "format_time",
    "format_value",
    "output_console",
    "plain",
    "table",
]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Width used for tables when stdout is not a terminal (a pipe, a file): wide enough that a
#: 256-character id is never folded, so the output stays greppable.
_PIPE_WIDTH: Final = 400
_UNITS: Final = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def output_console() -> Console:
    """A console on the current stdout, wide when stdout is not a terminal."""
    console = Console(highlight=False, emoji=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = _PIPE_WIDTH
    return console


def error_console() -> Console:
    """A console on the current stderr, for errors and notes (never hard-wrapped: greppable)."""
    return Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)


def table(*, title: str | None = None, show_header: bool = True) -> Table:
    """A borderless table: a rule under the header, no edge padding, so lines grep well."""
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD if show_header else None,
        show_header=show_header,
        show_edge=False,
        pad_edge=False,
    )


def plain(value: object) -> Text:
    """``value`` as text that is never parsed as markup."""
    return Text(str(value))


def format_time(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC, e.g. ``2025-01-31T12:00:00.250Z``."""
    try:
        when = _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        return f"{ms} ms"
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def format_duration(ms: int) -> str:
    """A duration in ms as its two largest units: ``30m``, ``1h 30m``, ``1s 500ms``."""
    if ms <= 0:
        return "0s"
    parts = []
    rest = ms
    for unit, size in _UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
        if len(parts) == 2:
            break
    return " ".join(parts)


def format_value(value: object) -> str:
    """A stats value as text: strings as they are, ``None`` as ``-``, the rest as JSON."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested dicts as ``(dotted.key, leaf)`` pairs, in insertion order."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{name}.")
        else:
            yield name, value
