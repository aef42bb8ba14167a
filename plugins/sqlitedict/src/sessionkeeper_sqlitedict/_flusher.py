"""The interval flusher: a daemon thread that commits an interval store's buffer every window.

Apart from :mod:`._interval`, which decides *what* a flush commits, this module holds only the
*when*: a thread that calls a method every ``interval`` seconds until stopped. It holds the store
by a weak reference, so that a store dropped without ``close`` is collected (and its flusher
ends at the next tick) instead of being kept alive by its own thread.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

__all__ = ["Flusher"]


class Flusher:
    """Calls ``flush`` (a bound method, held weakly) every ``interval`` s in a daemon thread."""

    __slots__ = ("_flush", "_interval", "_name", "_stop", "_thread")

    def __init__(self, flush: Callable[[], object], interval: float, name: str) -> None:
        self._flush = weakref.WeakMethod(flush)
        self._interval = interval
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (the first call is one ``interval`` from now)."""
        self._stop.clear()
        thread = self._thread = threading.Thread(
            target=_run,
            args=(self._flush, self._interval, self._stop),
            name=self._name,
            daemon=True,
        )
        thread.start()

    def stop(self, wait: float) -> None:
        """Stop the thread, waiting ``wait`` s at most for a call in progress to end."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(wait)

    def forget(self) -> None:
        """In a forked child: the thread is the parent's (it does not exist here)."""
        self._thread = None
        self._stop = threading.Event()


def _run(
    flush: weakref.WeakMethod[Callable[[], object]], interval: float, stop: threading.Event
) -> None:
    """The thread: call ``flush`` every ``interval`` s until ``stop`` is set or it is gone."""
    while not stop.wait(interval):
        method = flush()
        if method is None:
            return
        method()
        del method
