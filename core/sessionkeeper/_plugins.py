"""Plugin discovery and the per-manager plugin manager.

Nothing is loaded at import time. Each :class:`~sessionkeeper.SessionManager` builds its own
:class:`PluginManager`, imports only the configured backend's entry point, and loads the wrapper
plugins of group ``sessionkeeper.plugins`` (unless ``SESSIONKEEPER_DISABLE_PLUGIN_AUTOLOAD``
is set).
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Final

import attrs
import pluggy

from . import hookspecs
from ._backend import Capabilities
from ._errors import BackendNotFound, PluginValidationError

__all__ = [
    "BACKEND_GROUP",
    "DISABLE_AUTOLOAD_ENV",
    "PLUGIN_GROUP",
    "TRACE_ENV",
    "PluginManager",
    "installed_backends",
    "installed_plugins",
    "load_backend_class",
]

BACKEND_GROUP: Final = "sessionkeeper.backends"
PLUGIN_GROUP: Final = "sessionkeeper.plugins"
#: Set to any non-empty value to skip loading ``sessionkeeper.plugins`` entry points.
DISABLE_AUTOLOAD_ENV: Final = "SESSIONKEEPER_DISABLE_PLUGIN_AUTOLOAD"
#: Set to any non-empty value to trace every hook call to stderr (slow; for debugging).
TRACE_ENV: Final = "SESSIONKEEPER_TRACE"

log = logging.getLogger("sessionkeeper")

# pluggy's monitor signatures (its own aliases are private).
_BeforeTrace = Callable[[str, Sequence[pluggy.HookImpl], Mapping[str, Any]], None]
_AfterTrace = Callable[
    [pluggy.Result[Any], str, Sequence[pluggy.HookImpl], Mapping[str, Any]], None
]


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that tells its listeners when plugins come and go, and when hook calls
    start or stop being monitored.

    The :class:`~sessionkeeper.SessionManager` listens so it can call a lone backend
    implementation directly, and go back through pluggy as soon as a wrapper is registered or a
    monitor is added (:meth:`add_hookcall_monitoring`, which :meth:`enable_tracing` uses too);
    when the last monitor's undo function is called, the direct calls come back.
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self._listeners: list[weakref.WeakMethod[Callable[[], None]]] = []
        self._monitors = 0

    @property
    def monitored(self) -> bool:
        """True while a monitor added by :meth:`add_hookcall_monitoring` (or tracing) is on:
        every hook call must then go through pluggy, where the monitor sees it."""
        return self._monitors > 0

    @property
    def tracing(self) -> bool:
        """The former name of :attr:`monitored` (tracing is one kind of monitor)."""
        return self.monitored

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call the bound method ``listener()`` after every register and unregister.

        Held weakly, so the plugin manager never keeps its owner alive.
        """
        self._listeners.append(weakref.WeakMethod(listener))

    def _changed(self) -> None:
        for ref in self._listeners:
            listener = ref()
            if listener is not None:
                listener()

    def register(self, plugin: object, name: str | None = None) -> str | None:
        try:
            result = super().register(plugin, name)
        except pluggy.PluginValidationError as exc:
            raise PluginValidationError(name or _plugin_label(plugin), str(exc)) from exc
        self._changed()
        return result

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        result = super().unregister(plugin, name)
        self._changed()
        return result

    def add_hookcall_monitoring(
        self, before: _BeforeTrace, after: _AfterTrace
    ) -> Callable[[], None]:
        """pluggy's :meth:`~pluggy.PluginManager.add_hookcall_monitoring`, and the listeners are
        told: from now on every hook call goes through pluggy, so ``before`` and ``after`` see
        it. The undo function removes the monitor and tells them again (calling it twice is
        harmless)."""
        undo_monitor = super().add_hookcall_monitoring(before, after)
        self._monitors += 1
        self._changed()
        undone = False

        def undo() -> None:
            nonlocal undone
            if undone:
                return
            undone = True
            undo_monitor()
            self._monitors -= 1
            self._changed()

        return undo

    def enable_tracing(self) -> Callable[[], None]:
        """Trace every hook call to stderr (pluggy's tracing, through
        :meth:`add_hookcall_monitoring`); returns the undo function."""
        self.trace.root.setwriter(sys.stderr.write)
        return super().enable_tracing()

    def load_wrapper_plugins(self) -> None:
        """Register every ``sessionkeeper.plugins`` entry point (unless autoload is disabled)."""
        if os.environ.get(DISABLE_AUTOLOAD_ENV):
            return
        for ep in installed_plugins().values():
            if self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginValidationError(
                    ep.name, f"error importing plugin {ep.value!r}: {type(exc).__name__}: {exc}"
                ) from exc
            self.register(plugin, name=ep.name)


def _plugin_label(plugin: object) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _group(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        previous = found.get(ep.name)
        if previous is not None and previous.value != ep.value:
            dists = ", ".join(sorted({_dist_name(previous), _dist_name(ep)}))
            raise PluginValidationError(
                ep.name, f"entry point {ep.name!r} in {group} is provided twice ({dists})"
            )
        found[ep.name] = ep
    return found


def _dist_name(ep: EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else ep.value


def installed_backends() -> dict[str, EntryPoint]:
    """Every backend entry point (group ``sessionkeeper.backends``), by name; nothing imported."""
    return _group(BACKEND_GROUP)


def installed_plugins() -> dict[str, EntryPoint]:
    """Every wrapper plugin entry point (group ``sessionkeeper.plugins``), by name."""
    return _group(PLUGIN_GROUP)


def load_backend_class(
    name: str, *, source: os.PathLike[str] | None = None, note: str | None = None
) -> type[Any]:
    """Import the backend entry point ``name`` (and only it) and check its contract.

    Raises :class:`~sessionkeeper.BackendNotFound` naming the backend, a near name, the installed
    ones and, for the project's own backends, the ``pip install`` that would add it, when it is
    missing or fails to import (``note`` says why it was asked for); and
    :class:`~sessionkeeper.backend.PluginValidationError` when what it names is not a backend class.
    """
    from pathlib import Path

    path = Path(source) if source is not None else None
    available = installed_backends()
    ep = available.get(name)
    if ep is None:
        raise BackendNotFound(name, list(available), path=path, note=note)
    try:
        cls = ep.load()
    except Exception as exc:
        reason = f"backend {name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
        log.debug("importing backend %s failed", name, exc_info=True)
        raise BackendNotFound(
            name, list(available), reason=reason, path=path, distribution=_dist_name(ep)
        ) from exc
    check_backend_class(name, cls)
    return cls  # type: ignore[no-any-return]


def check_backend_class(name: str, cls: object) -> None:
    """Raise :class:`~sessionkeeper.backend.PluginValidationError` unless ``cls`` is a backend
    class."""
    if not inspect.isclass(cls):
        raise PluginValidationError(
            name, f"the entry point must name a backend class, got {type(cls).__name__}"
        )
    options_class = getattr(cls, "options_class", None)
    if not (inspect.isclass(options_class) and attrs.has(options_class)):
        raise PluginValidationError(
            name, f"{cls.__qualname__}.options_class must be an attrs class (use NoOptions)"
        )
    if not isinstance(getattr(cls, "capabilities", None), Capabilities):
        raise PluginValidationError(
            name, f"{cls.__qualname__}.capabilities must be a sessionkeeper.backend.Capabilities"
        )
    missing = [hook for hook in hookspecs.REQUIRED_HOOKS if not callable(getattr(cls, hook, None))]
    if missing:
        raise PluginValidationError(
            name, f"{cls.__qualname__} does not implement {', '.join(missing)}"
        )
