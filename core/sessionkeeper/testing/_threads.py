"""Where an :class:`~sessionkeeper.AsyncSessionManager` runs each hook call, and one pass of its
operations to find out.

A backend declares the hooks it serves without blocking (``sessionkeeper_inline_hooks``); the
async manager then runs the operations made of those hooks on the event loop, and the others in
a worker thread. :class:`HookThreads`, a wrapper plugin, records the thread of every call of the
hooks it watches; :func:`exercise_operations` calls each operation once through the manager and
checks its result. Together they test a declaration where it matters: the thread each call ran
in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, Final

from .._dispatch import ALL_HOOKS
from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from .. import AsyncSessionManager
    from ._clock import ManualClock

__all__ = ["HookThreads", "exercise_operations"]

_PREFIX: Final = "sessionkeeper_"


class HookThreads:
    """A wrapper plugin (give it to a manager's ``plugins=``) recording, per hook, the threads
    its calls ran in.

    :param hooks: the hooks to watch, named without the ``sessionkeeper_`` prefix (``"fetch"``,
        ``"store_if"``, ``"async_fetch"``); a name that is not a hook of the specification is a
        :class:`ValueError`.

    :attr:`seen` maps each watched hook that was called to the idents of the threads its calls
    ran in; :meth:`where` says, per hook, whether that was the event loop's thread.
    """

    def __init__(self, hooks: Iterable[str]) -> None:
        self.seen: dict[str, set[int]] = {}
        names = list(hooks)
        unknown = sorted(name for name in names if _PREFIX + name not in ALL_HOOKS)
        if unknown:
            raise ValueError(
                f"HookThreads: not hooks of the specification: {', '.join(unknown)} (name them "
                "without the sessionkeeper_ prefix, e.g. 'fetch')"
            )
        for name in names:
            setattr(self, _PREFIX + name, self._wrapper(name))

    def __repr__(self) -> str:
        return f"<HookThreads {sorted(self.seen)}>"

    def _wrapper(self, hook: str) -> Callable[[], Generator[None, Any, Any]]:
        """The wrapper of ``hook``: it notes the calling thread, then lets the call through
        (it asks for no argument, so it fits every hook's signature)."""

        def wrapper() -> Generator[None, Any, Any]:
            self.seen.setdefault(hook, set()).add(threading.get_ident())
            return (yield)

        return hookimpl(wrapper=True)(wrapper)

    def where(self, loop_thread: int) -> dict[str, str]:
        """Each hook seen: ``"loop"`` when all its calls ran on ``loop_thread`` (the event
        loop's), ``"worker"`` when none did; a hook whose calls ran in both fails an
        assertion naming it."""
        result = {}
        for hook, ids in self.seen.items():
            assert ids == {loop_thread} or loop_thread not in ids, (
                f"{hook} ran both on the loop and in a worker"
            )
            result[hook] = "loop" if ids == {loop_thread} else "worker"
        return result


#: The operations :func:`exercise_operations` calls, in its order.
_OPERATIONS: Final = (
    "create",
    "fetch",
    "store",
    "update",
    "rotate",
    "list",
    "count",
    "list_owner",
    "count_owner",
    "take",
    "delete",
)
#: Those of them that need the ``atomic`` capability.
_ATOMIC: Final = frozenset({"update", "rotate", "take"})


async def exercise_operations(
    sessions: AsyncSessionManager, clock: ManualClock, operations: Iterable[str] = _OPERATIONS
) -> None:
    """Call each of ``operations`` once through ``sessions``, checking its result.

    In this order: ``create`` (of a session owned by ``"alice"``, always), ``fetch`` once
    ``clock`` moved 5 s (a touch written back), ``store`` of the fetched copy, ``update``,
    ``rotate``, ``list`` and ``count`` (``list_owner`` and ``count_owner``: by owner), then
    ``take``, and ``delete`` (of the session, or after a ``take`` of another one created for
    it). ``update``, ``rotate`` and ``take`` are left out on a backend without the ``atomic``
    capability.

    :param sessions: a manager on an empty store (empty again afterwards when ``delete`` is
        among ``operations``).
    :param clock: the manager's clock.
    :param operations: names of the operations above (all of them by default); another name
        is a :class:`ValueError`.
    """
    wanted = set(operations)
    unknown = sorted(wanted.difference(_OPERATIONS))
    if unknown:
        raise ValueError(
            f"exercise_operations: not operations it calls: {', '.join(unknown)} "
            f"(it calls {', '.join(_OPERATIONS)})"
        )
    if not sessions.sync.capabilities.atomic:
        wanted -= _ATOMIC
    session = await sessions.create(metadata={"n": 0}, owner="alice")  # store
    current = session.id
    if "fetch" in wanted:
        clock.advance(5_000)
        session = await sessions.fetch(current)  # fetch, and touch (moved by more than 1 s)
        assert session.last_accessed == clock.now
    if "store" in wanted:
        await sessions.store(session)
    if "update" in wanted:
        updated = await sessions.update(current, lambda md: {"n": md["n"] + 1})  # store_if
        assert updated.metadata == {"n": 1}
    if "rotate" in wanted:
        current = (await sessions.rotate(current)).id
    if "list" in wanted:
        assert await sessions.list() == [current]
    if "count" in wanted:
        assert await sessions.count() == 1
    if "list_owner" in wanted:
        assert await sessions.list(owner="alice") == [current]
    if "count_owner" in wanted:
        assert await sessions.count(owner="alice") == 1
    if "take" in wanted:
        taken = await sessions.take(current)
        assert taken.id == current
        assert taken.metadata == {"n": 1 if "update" in wanted else 0}
        current = (await sessions.create()).id
    if "delete" in wanted:
        assert await sessions.delete(current) is True
        if "count" in wanted:
            assert await sessions.count() == 0
