"""Clocks for tests: one that moves only when a test says so, one that moves on every read; and
:func:`wait_for`, which waits on the real clock for what another thread, process or server does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["DEFAULT_START", "WAIT_DEADLINE_S", "ManualClock", "TickingClock", "wait_for"]

#: Where a :class:`ManualClock` starts: 2023-11-14T22:13:20Z, in ms since the Unix epoch.
DEFAULT_START: Final = 1_700_000_000_000


class ManualClock:
    """A clock for :class:`~sessionkeeper.SessionManager` that tests move by hand.

    Calling it returns the current time as an ``int`` of milliseconds since the Unix epoch, as
    every sessionkeeper clock does, so tests can exercise expiry without sleeping::

        clock = ManualClock()
        manager = SessionManager(clock=clock)
        clock.advance(30_001)

    It is safe to read and move from several threads.

    :param start: the initial time, in ms.
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: int = DEFAULT_START) -> None:
        self._lock = threading.Lock()
        self._now = _check_ms("start", start)

    def __call__(self) -> int:
        return self._now

    @property
    def now(self) -> int:
        """The current time, in ms."""
        return self._now

    def advance(self, ms: int) -> int:
        """Move the clock forward by ``ms`` milliseconds (``0`` is allowed); return the new time."""
        _check_ms("ms", ms)
        with self._lock:
            self._now += ms
            return self._now

    def set(self, ms: int) -> int:
        """Set the clock to ``ms``; it may move backwards, as a real wall clock can. Return it."""
        with self._lock:
            self._now = _check_ms("ms", ms)
            return self._now

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now})"


class TickingClock(ManualClock):
    """A :class:`ManualClock` that also moves forward by ``step`` ms after every read.

    It is the clock of a busy server, where no two reads return the same millisecond, and it
    catches code that reads the clock twice in one operation: an operation must decide and write
    with the one instant it read (check expiry at 100, then write ``last_accessed = 101``, and a
    session that had expired at 101 comes back to life). :attr:`now` is what the next read
    returns, and :attr:`reads` counts the reads::

        clock = TickingClock(start=100)
        manager = SessionManager(clock=clock)
        before = clock.reads
        manager.touch(session_id)
        assert clock.reads - before == 1

    ``advance`` and ``set`` move it by hand as for a :class:`ManualClock`.

    :param start: the time the first read returns, in ms.
    :param step: how far every read moves it, in ms (``0`` makes it a :class:`ManualClock`).
    """

    __slots__ = ("_reads", "_step")

    def __init__(self, start: int = DEFAULT_START, step: int = 1) -> None:
        super().__init__(start)
        self._step = _check_ms("step", step)
        self._reads = 0

    def __call__(self) -> int:
        with self._lock:
            now = self._now
            self._now = now + self._step
            self._reads += 1
            return now

    @property
    def reads(self) -> int:
        """How many times the clock was read."""
        return self._reads

    @property
    def step(self) -> int:
        """How far each read moves the clock, in ms; set it to start or stop ticking."""
        return self._step

    @step.setter
    def step(self, ms: int) -> None:
        with self._lock:
            self._step = _check_ms("step", ms)

    def __repr__(self) -> str:
        return f"TickingClock(now={self._now}, step={self._step}, reads={self._reads})"


#: How long :func:`wait_for` waits by default: generous, as test machines are often shared.
WAIT_DEADLINE_S: Final = 30.0


def wait_for(
    condition: Callable[[], Any],
    what: str,
    deadline_s: float = WAIT_DEADLINE_S,
    *,
    interval_s: float = 0.01,
    retry_on: tuple[type[Exception], ...] = (),
) -> Any:
    """Call ``condition`` every ``interval_s`` seconds until it returns something truthy, and
    return that value.

    For what a test cannot make happen at once: a server that starts, a replica that catches up,
    a thread that reaches a lock. The deadline bounds a hang; it is not a timing assertion, so
    make it generous. ``condition`` is called at least once, and once more after the deadline
    has passed, so a slow last poll is not lost. An exception of a type in ``retry_on`` (a
    connection refused while a server starts) counts as "not yet"; any other propagates at once.

    :raises AssertionError: past the deadline, ``timed out after <deadline_s> s waiting for
        <what>``, followed by ``(last error: ...)`` naming the last error retried, when a poll
        raised one.
    """
    end = time.monotonic() + deadline_s
    last: Exception | None = None  # the last error retried, kept across the polls after it
    while True:
        try:
            value = condition()
        except retry_on as exc:
            last, value = exc, None
        if value:
            return value
        if time.monotonic() > end:
            error = f" (last error: {last!r})" if last is not None else ""
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}{error}")
        time.sleep(interval_s)


def _check_ms(name: str, value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int of milliseconds, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 ms, got {value}")
    return value
