"""What a manager is built from: the validated :class:`~sessionkeeper.Config` plus
:class:`ManagerOptions`, the settings that cannot come from a file (a clock, plugin objects).

Both managers' keyword constructors (``SessionManager(backend, backend_opts, cleanup_interval=...,
clock=...)`` and the same on :class:`~sessionkeeper.AsyncSessionManager`) are declared here,
once: the keywords are :class:`ManagerKeywords`, and :func:`settings_from_keywords` splits them
into the two objects by the fields of :class:`~sessionkeeper.Config` and
:class:`ManagerOptions`, so a key added to either class is a keyword of both constructors. A test
keeps :class:`ManagerKeywords` (which only the type checker reads) equal to those fields.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, TypedDict

import attrs

from ._config import Config

__all__ = [
    "CONFIG_KEYWORDS",
    "OPTION_KEYWORDS",
    "Clock",
    "ManagerKeywords",
    "ManagerOptions",
    "OptionKeywords",
    "settings_from_keywords",
]

#: A clock returns the current time as integer milliseconds since the Unix epoch.
Clock = Callable[[], int]


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


@attrs.frozen(kw_only=True)
class ManagerOptions:
    """How one manager runs, beyond its :class:`~sessionkeeper.Config`.

    :param clock: returns integer ms and replaces the system clock (tests inject one so they
        never sleep); ``None`` is the system clock.
    :param plugins: wrapper plugin objects to register, in order, after the backend.
    :param read_only: open the store for inspection (for backends that support it).
    :param base_dir: where relative ``backend_opts`` paths are resolved; ``None`` is the config
        file's directory (or the working directory).
    :param schedule: run the cleanup scheduler every ``cleanup_interval`` ms (a thread for
        :class:`~sessionkeeper.SessionManager`, an asyncio task for
        :class:`~sessionkeeper.AsyncSessionManager`); ``False`` leaves cleanup to the caller.
    """

    clock: Clock | None = None
    plugins: tuple[object, ...] = attrs.field(default=(), converter=tuple)
    read_only: bool = False
    base_dir: Path | None = attrs.field(default=None, converter=_optional_path)
    schedule: bool = True


class OptionKeywords(TypedDict, total=False):
    """The fields of :class:`ManagerOptions`, as keyword arguments."""

    clock: Clock | None
    plugins: Iterable[object]
    read_only: bool
    base_dir: str | os.PathLike[str] | None
    schedule: bool


class ManagerKeywords(OptionKeywords, total=False):
    """The keyword arguments of both managers' constructors: the keys of the
    ``[sessionkeeper]`` table (the fields of :class:`~sessionkeeper.Config`, ``backend`` and
    ``backend_opts`` being the two positional ones) and the fields of :class:`ManagerOptions`.
    A key left out takes the default those classes give it."""

    cleanup_interval: int
    touch_resolution: int
    default_timeout: int | None
    max_metadata_bytes: int
    stats: bool


#: Config fields that are keywords (``backend`` and ``backend_opts`` are positional; ``source``
#: is where a file was read from, never a keyword).
CONFIG_KEYWORDS: Final = frozenset(
    field.name
    for field in attrs.fields(Config)
    if field.name not in ("backend", "backend_opts", "source")
)
OPTION_KEYWORDS: Final = frozenset(field.name for field in attrs.fields(ManagerOptions))


def options_from_keywords(keywords: Mapping[str, Any], *, named_by: str) -> ManagerOptions:
    """:class:`ManagerOptions` from keyword arguments; ``TypeError`` names an unknown one."""
    _refuse_unknown(keywords, OPTION_KEYWORDS, named_by)
    return ManagerOptions(**keywords)


def settings_from_keywords(
    backend: str,
    backend_opts: Mapping[str, Any] | None,
    keywords: Mapping[str, Any],
    *,
    named_by: str,
) -> tuple[Config, ManagerOptions]:
    """Split a manager constructor's arguments into the validated
    :class:`~sessionkeeper.Config` and the :class:`ManagerOptions`.

    An unknown keyword is a ``TypeError`` naming it and ``named_by`` (as Python's own would be);
    a bad value is the :class:`~sessionkeeper.ConfigError` of
    :meth:`~sessionkeeper.Config.from_mapping`, naming the key.
    """
    _refuse_unknown(keywords, CONFIG_KEYWORDS | OPTION_KEYWORDS, named_by)
    table = {key: value for key, value in keywords.items() if key in CONFIG_KEYWORDS}
    config = Config.from_mapping(
        {"backend": backend, "backend_opts": dict(backend_opts or {}), **table}
    )
    options = ManagerOptions(
        **{key: value for key, value in keywords.items() if key in OPTION_KEYWORDS}
    )
    return config, options


def _refuse_unknown(keywords: Mapping[str, Any], known: frozenset[str], named_by: str) -> None:
    unknown = sorted(set(keywords) - known)
    if unknown:
        raise TypeError(
            f"{named_by} got an unexpected keyword argument {unknown[0]!r} "
            f"(it takes {', '.join(sorted(known))})"
        )
