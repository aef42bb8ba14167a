"""The conformance kit: what every sessionkeeper backend's test suite runs.

A backend author subclasses :class:`BackendConformance` in the backend's own tests::

    from sessionkeeper.testing import BackendConformance

    class TestMyBackendConformance(BackendConformance):
        backend = "mybackend"          # the entry-point name in group sessionkeeper.backends

and gets one test per shared semantic plus a Hypothesis comparison with a dict model
(:class:`BackendStateMachine`). :class:`AsyncConformance`, subclassed the same way, runs the
contract through :class:`~sessionkeeper.AsyncSessionManager` (whichever path each operation
takes there: the backend's async hooks, the event loop, a worker thread), with tasks of one
loop racing ``update``, ``take`` and inserts. :class:`ManualClock` is the clock those tests
move by hand; :class:`TickingClock` also moves on every read, to catch an operation that reads
the clock twice. :class:`HookThreads` (a wrapper plugin recording the thread of each hook call)
and :func:`exercise_operations` (each operation once through an async manager) check which hooks
the async manager runs on the event loop and which in a worker thread. :func:`wait_for` polls
a condition on the real clock until it holds (a server started, a replica caught up), failing
with what it waited for.

The kit is also a pytest plugin (entry point ``pytest11`` named ``sessionkeeper``, module
:mod:`sessionkeeper.testing.plugin`), loaded automatically wherever sessionkeeper is installed: it
registers the kit's markers, rewrites the kit's asserts, and provides the ``manual_clock`` and
``ticking_clock`` fixtures.

Names are imported on first use, so that the plugin can turn on assert rewriting before the kit's
modules are imported, and so that importing this package does not need Hypothesis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ._clock import ManualClock, TickingClock, wait_for
    from ._kit import BackendConformance, ManagerFactory
    from ._kit_async import AsyncConformance
    from ._rules import touch_window
    from ._stateful import BackendStateMachine
    from ._threads import HookThreads, exercise_operations

__all__ = [
    "AsyncConformance",
    "BackendConformance",
    "BackendStateMachine",
    "HookThreads",
    "ManagerFactory",
    "ManualClock",
    "TickingClock",
    "exercise_operations",
    "touch_window",
    "wait_for",
]

#: Public name -> the private module that defines it.
_WHERE: Final = {
    "AsyncConformance": "._kit_async",
    "BackendConformance": "._kit",
    "BackendStateMachine": "._stateful",
    "HookThreads": "._threads",
    "ManagerFactory": "._kit",
    "ManualClock": "._clock",
    "TickingClock": "._clock",
    "exercise_operations": "._threads",
    "touch_window": "._rules",
    "wait_for": "._clock",
}

#: The kit's modules, for :func:`pytest.register_assert_rewrite`.
KIT_MODULES: Final = tuple(
    f"{__name__}.{module}"
    for module in (
        "_clock",
        "_kit",
        "_kit_async",
        "_kit_atomic",
        "_races",
        "_rules",
        "_stateful",
        "_threads",
    )
)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
