"""How both managers call their plugins: hook tables, binding, and the calls of every plugin.

Every call the manager makes to its plugins is a pluggy hook call, seen by every wrapper plugin
and every monitor (:meth:`pluggy.PluginManager.add_hookcall_monitoring`, tracing):

- An operation hook (store, fetch, touch, ...; the table :data:`_OPERATIONS`, derived from the
  hookspecs) whose only implementation is the backend's, while nothing monitors the calls, is
  called directly — the same function pluggy would call, with the same arguments. The moment a
  wrapper is registered or a monitor added, the manager rebinds that operation to pluggy's
  dispatch (and back when they go). That keeps a memory ``fetch`` under a microsecond.
- ``sessionkeeper_open``, ``_identity`` and ``_check`` are plain pluggy calls.
- ``sessionkeeper_close`` and ``sessionkeeper_stats`` are one pluggy call each (wrappers and
  monitors see one call) in which the manager runs every plain implementation itself: so that
  every plugin closes even when one raises (each failure logged, naming the plugin), and so that
  each plugin's figures are shown under its name.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from . import hookspecs
from ._errors import ManagerClosed, PluginValidationError
from ._plugins import PluginManager

if TYPE_CHECKING:
    from ._manager import SessionManager

__all__ = [
    "ALL_HOOKS",
    "HookTable",
    "backend_hooks",
    "bind_hooks",
    "call_each",
    "check_async_twins",
    "close_plugins",
    "hook_table",
    "plain_impls",
]

log = logging.getLogger("sessionkeeper")

_PREFIX: Final = "sessionkeeper_"


#: A table of hooks a manager binds (see :func:`bind_hooks`): hook name -> the attribute it is
#: bound to and the argument names it passes, in order, read from the hookspec itself.
HookTable = dict[str, tuple[str, tuple[str, ...]]]


def hook_table(hooks: Iterable[str], attribute: Callable[[str], str]) -> HookTable:
    """The :data:`HookTable` of ``hooks``, each bound to the attribute ``attribute(hook)``."""
    return {
        hook: (attribute(hook), tuple(inspect.signature(getattr(hookspecs, hook)).parameters))
        for hook in hooks
    }


#: Every hook of the specification, by name.
ALL_HOOKS: Final = frozenset(name for name in vars(hookspecs) if name.startswith(_PREFIX))


def _closed(*args: object) -> Any:
    raise ManagerClosed("this SessionManager is closed")


def bind_hooks(target: object, pm: PluginManager, hooks: HookTable, *, closed: bool) -> None:
    """Set each attribute of ``hooks`` on ``target`` to what a call of its hook should call:
    the lone implementation directly, when pluggy would call exactly that function with those
    arguments and nothing else (one plain implementation, no wrapper, no monitor); else
    pluggy's dispatch, which wrappers and monitors see. ``None`` marks an optional hook the
    manager skips: an answering (``firstresult``) hook nothing answers (only wrapped: the
    manager does the work another way, e.g. ``store_many`` stores one by one, so there is no
    call to see), or a notification nothing implements. Once ``closed``, each raises
    :class:`~sessionkeeper.ManagerClosed`.

    What both managers call after every register and unregister and whenever a monitor is
    added or removed (the plugin manager tells its listeners).
    """
    monitored = pm.monitored
    for hook, (attribute, argnames) in hooks.items():
        function: Callable[..., Any] | None = _closed
        if not closed:
            caller = getattr(pm.hook, hook)
            impls = caller.get_hookimpls()
            plain = plain_impls(caller)
            if not impls or (not plain and caller.spec.opts["firstresult"]):
                function = None
            elif (
                len(impls) == 1 and plain and not monitored and tuple(impls[0].argnames) == argnames
            ):
                function = impls[0].function
            else:
                function = _via_pluggy(caller, argnames)
        setattr(target, attribute, function)


def backend_hooks(manager: SessionManager) -> frozenset[str]:
    """The hooks the manager's backend implements itself (not a wrapper's, not another plugin's)."""
    hook = manager.plugin_manager.hook
    return frozenset(
        name
        for name in ALL_HOOKS
        if any(
            impl.plugin is manager.backend and not (impl.wrapper or impl.hookwrapper)
            for impl in getattr(hook, name).get_hookimpls()
        )
    )


def check_async_twins(backend: str, implemented: frozenset[str]) -> None:
    """Refuse a backend that implements an ``async_`` hook without its sync twin (the sync
    manager, and the async one where an operation is not native, call the sync hook)."""
    alone = sorted(
        twin
        for hook, twin in hookspecs.ASYNC_HOOKS.items()
        if twin in implemented and hook not in implemented
    )
    if alone:
        pairs = ", ".join(
            f"{twin} without {_PREFIX}{twin.removeprefix(_PREFIX + 'async_')}" for twin in alone
        )
        raise PluginValidationError(
            backend,
            f"implements {pairs}: an async hook is the twin of a sync hook, which the sync "
            "manager calls; implement both",
        )


def _via_pluggy(caller: Any, argnames: tuple[str, ...]) -> Callable[..., Any]:
    """A positional-call adapter over a pluggy hook caller (which takes keywords)."""
    if not argnames:
        return lambda: caller()
    if len(argnames) == 1:
        (name,) = argnames
        return lambda value: caller(**{name: value})
    return lambda *values: caller(**dict(zip(argnames, values, strict=True)))


def plain_impls(caller: Any) -> list[Any]:
    """The implementations of a hook that are not wrappers, in pluggy's order (called last to
    first)."""
    return [i for i in caller.get_hookimpls() if not (i.wrapper or i.hookwrapper)]


def call_each(pm: PluginManager, hook: str, adapt: Callable[[Any], Callable[[], Any]]) -> list[Any]:
    """Call ``hook`` (which takes no arguments) once through pluggy, with each plain
    implementation ``impl`` replaced by ``adapt(impl)``; return pluggy's result list.

    Wrappers and monitors see one ordinary call, and the adapters are called in the order pluggy
    would call the implementations (the last registered first). It is built from pluggy's
    public API: a caller without the plugins that implement the hook plainly
    (:meth:`~pluggy.PluginManager.subset_hook_caller`), called with the adapters as extra
    implementations (:meth:`~pluggy.HookCaller.call_extra`). That needs the plugins to be
    hashable; with one that is not, the adapters are called directly, unseen.
    """
    caller = getattr(pm.hook, hook)
    plain = plain_impls(caller)
    adapters = [adapt(impl) for impl in plain]
    try:
        wrappers_only = pm.subset_hook_caller(hook, [impl.plugin for impl in plain])
    except TypeError:  # an unhashable plugin (pluggy keeps the plugins to leave out in a set)
        log.debug("%s called without its wrappers: a plugin is not hashable", hook)
        return [result for call in reversed(adapters) if (result := call()) is not None]
    results: list[Any] = wrappers_only.call_extra(adapters, {})
    return results


def close_plugins(pm: PluginManager, backend: str) -> None:
    """Close every plugin, the last registered first (the backend, registered first, last), in
    one ``sessionkeeper_close`` call that wrappers and monitors see; a plugin whose close raises
    is logged, by name, and the others still close."""

    pending: dict[int, Any] = {}  # id(impl) -> impl, for the implementations not yet called

    def tolerant(impl: Any) -> Callable[[], None]:
        pending[id(impl)] = impl

        def close() -> None:
            pending.pop(id(impl), None)
            _close_one(impl, backend)

        return close

    try:
        call_each(pm, "sessionkeeper_close", tolerant)
    except Exception:
        log.exception("a wrapper of sessionkeeper_close of the %s backend failed", backend)
    finally:
        # A wrapper that raised before its yield kept pluggy from calling the implementations:
        # close them anyway, in the same order.
        for impl in reversed(list(pending.values())):
            _close_one(impl, backend)


def _close_one(impl: Any, backend: str) -> None:
    try:
        impl.function()
    except Exception:
        log.exception("closing plugin %r of the %s backend failed", impl.plugin_name, backend)
