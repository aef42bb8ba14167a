"""The bound on every round trip of the asyncio driver: one timer per event loop, not one per
command (issue 15).

Given a ``socket_timeout``, ``redis.asyncio`` wraps the sending of every command in
``asyncio.wait_for`` (on Python 3.11 a new task and two more passes of the event loop per
command) and its reading in ``asyncio.timeout`` (a timer scheduled and cancelled per command):
about a tenth of the CPU time of 100 tasks awaiting Redis. Socket-level options cannot replace
it: TCP keepalive and ``TCP_USER_TIMEOUT`` notice a host that is gone, not a server that is
alive but does not answer (stopped with SIGSTOP, or stuck in a long script), whose kernel still
acknowledges every byte; ``health_check_interval`` only pings an idle connection before a
command, and never bounds a reply being awaited.

So the backend's asyncio client has no ``socket_timeout`` (a connection attempt keeps its
``socket_connect_timeout``), and :class:`Watchdog` bounds each round trip instead: entering one
costs a dictionary entry; a single timer, armed only while round trips are in flight, wakes
every quarter of the limit and cancels the task of each round trip older than the limit. The
cancellation reaches the task inside ``redis.asyncio``'s own ``await``, which drops that
connection (it cannot be reused half-read) before the ``CancelledError`` reaches the driver;
:meth:`Watchdog.expired` then takes back that cancellation and the driver raises
``redis.exceptions.TimeoutError`` instead. A cancellation from elsewhere (the caller's own
timeout, a task group) is never swallowed. A round trip that gets no reply therefore fails
after between 1 and 1.25 times ``socket_timeout_ms``.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Final

from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Watchdog"]

#: The timer wakes this many times per limit: a round trip fails after 1 to 1 + 1/TICKS limits.
TICKS: Final = 4


class Watchdog:
    """Cancels the task of any round trip that takes longer than ``limit`` seconds on
    ``loop`` (see the module)."""

    __slots__ = ("_fired", "_keys", "_limit", "_loop", "_pending", "_timer", "limit_ms")

    def __init__(self, loop: asyncio.AbstractEventLoop, limit_ms: int) -> None:
        self._loop = loop
        self.limit_ms = limit_ms
        self._limit = limit_ms / 1000
        self._pending: dict[int, tuple[float, asyncio.Task[object]]] = {}
        self._fired: set[int] = set()
        self._keys = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def enter(self, task: asyncio.Task[object]) -> int:
        """Start the clock of one round trip of ``task``; the key :meth:`leave` takes."""
        key = next(self._keys)
        self._pending[key] = (self._loop.time() + self._limit, task)
        if self._timer is None:
            self._timer = self._loop.call_later(self._limit / TICKS, self._check)
        return key

    def leave(self, key: int) -> None:
        """The round trip ``key`` is over (answered, failed or cancelled)."""
        self._pending.pop(key, None)
        self._fired.discard(key)

    def expired(self, key: int, task: asyncio.Task[object]) -> RedisTimeoutError | None:
        """Called with the ``CancelledError`` of round trip ``key`` in hand: the error to raise
        instead when this watchdog cancelled it (the cancellation taken back), else ``None``
        (the cancellation came from elsewhere: let it through)."""
        if key not in self._fired:
            return None
        self._fired.discard(key)
        if task.uncancel() > 0:
            return None  # cancelled from elsewhere as well: that one wins
        return RedisTimeoutError(f"no reply within socket_timeout_ms ({self.limit_ms} ms)")

    def _check(self) -> None:
        now = self._loop.time()
        late = [key for key, (deadline, _) in self._pending.items() if deadline <= now]
        for key in late:
            _, task = self._pending.pop(key)
            self._fired.add(key)
            task.cancel()
        self._timer = (
            self._loop.call_later(self._limit / TICKS, self._check) if self._pending else None
        )

    def close(self) -> None:
        """Stop the timer (the client is closing; nothing more is awaited)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        self._fired.clear()
