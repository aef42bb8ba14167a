"""What ``sessionkeeper backends`` lists: the installed backend and wrapper-plugin entry points.

Each entry point is loaded only here, for the listing; one that fails to import (a missing
dependency, a syntax error) is reported with its error instead of stopping the listing.
"""

from __future__ import annotations

import contextlib
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs
import pluggy

from .._backend import Capabilities
from .._errors import PluginValidationError
from .._plugins import BACKEND_GROUP, PLUGIN_GROUP, check_backend_class
from ..hookspecs import PROJECT_NAME

__all__ = ["BACKEND_GROUP", "PLUGIN_GROUP", "EntryPointInfo", "describe_group"]


@attrs.frozen(kw_only=True)
class EntryPointInfo:
    """One installed entry point, as the ``backends`` command shows it.

    :param group: the entry-point group.
    :param name: the entry-point name (for a backend, what the config's ``backend`` names).
    :param value: the ``module:attribute`` the entry point points at.
    :param distribution: the distribution that declares it, if known.
    :param version: that distribution's version, if known.
    :param capabilities: a backend's capability flags (``None`` for plugins, or when it failed).
    :param hooks: the ``sessionkeeper_*`` hooks it implements.
    :param error: why it cannot be used (failed import, broken contract), else ``None``.
    """

    group: str
    name: str
    value: str
    distribution: str | None
    version: str | None
    capabilities: dict[str, bool] | None = None
    hooks: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible data for ``--json``."""
        return {
            "name": self.name,
            "value": self.value,
            "distribution": self.distribution,
            "version": self.version,
            "capabilities": self.capabilities,
            "hooks": list(self.hooks),
            "error": self.error,
        }


def _hookimpl_opts(parser: pluggy.PluginManager, obj: object, attr: str) -> object:
    try:
        return parser.parse_hookimpl_opts(obj, attr)
    except Exception:  # an attribute that raises on access is simply not a hook
        return None


def _implemented_hooks(obj: object) -> tuple[str, ...]:
    # pluggy's public parser decides what counts as a hookimpl, as it does at registration.
    parser = pluggy.PluginManager(PROJECT_NAME)
    prefix = f"{PROJECT_NAME}_"
    return tuple(
        sorted(
            attr
            for attr in dir(obj)
            if attr.startswith(prefix) and _hookimpl_opts(parser, obj, attr) is not None
        )
    )


def _describe_error(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe(ep: EntryPoint, group: str) -> EntryPointInfo:
    dist = ep.dist
    base = EntryPointInfo(
        group=group,
        name=ep.name,
        value=ep.value,
        distribution=dist.name if dist is not None else None,
        version=dist.version if dist is not None else None,
    )
    try:
        # Third-party import side effects must not corrupt ``--json`` on stdout.
        with contextlib.redirect_stdout(sys.stderr):
            obj = ep.load()
    except Exception as exc:  # listed, never fatal: the listing is how one finds the culprit
        return attrs.evolve(base, error=f"failed to import {ep.value}: {_describe_error(exc)}")
    hooks = _implemented_hooks(obj)
    if group != BACKEND_GROUP:
        return attrs.evolve(base, hooks=hooks)
    error = None
    try:
        check_backend_class(ep.name, obj)  # the same check the manager applies
    except PluginValidationError as exc:
        error = str(exc)
    capabilities = getattr(obj, "capabilities", None)
    return attrs.evolve(
        base,
        hooks=hooks,
        capabilities=capabilities.as_dict() if isinstance(capabilities, Capabilities) else None,
        error=error,
    )


def _flag_duplicates(found: list[EntryPointInfo]) -> list[EntryPointInfo]:
    # The manager refuses a name that two distributions provide; say so next to both.
    by_name: dict[str, list[EntryPointInfo]] = {}
    for info in found:
        by_name.setdefault(info.name, []).append(info)
    result = []
    for info in found:
        others = [o for o in by_name[info.name] if o is not info and o.value != info.value]
        if others:
            where = ", ".join(o.distribution or o.value for o in others)
            note = f"name {info.name!r} is also provided by {where}"
            info = attrs.evolve(info, error=f"{info.error}; {note}" if info.error else note)
        result.append(info)
    return result


def describe_group(group: str) -> list[EntryPointInfo]:
    """Every entry point in ``group``, loaded and described, sorted by name then distribution."""
    found = [_describe(ep, group) for ep in entry_points(group=group)]
    found.sort(key=lambda info: (info.name, info.distribution or ""))
    return _flag_duplicates(found)
