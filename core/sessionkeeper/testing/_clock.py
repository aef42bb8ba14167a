"""A clock that moves only when a test says so."""

from __future__ import annotations

import threading
from typing import Final

__all__ = ["DEFAULT_START", "ManualClock"]

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


def _check_ms(name: str, value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int of milliseconds, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 ms, got {value}")
    return value
