"""The cleanup scheduler: runs a sweep every ``cleanup_interval`` ms on a background thread."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

__all__ = ["CleanupScheduler"]

log = logging.getLogger("sessionkeeper")


class CleanupScheduler:
    """Calls ``sweep()`` every ``interval_ms`` until :meth:`stop`.

    A run that raises is logged (with the traceback), counted in :attr:`failures`, and tried
    again at the next interval: nothing a run raises ends the thread. The wait is capped at what
    the platform's timers accept (:data:`threading.TIMEOUT_MAX`), so no interval can make the
    thread die on its first wait (the configuration bounds ``cleanup_interval`` well below that).
    The caller's ``sweep`` serialises itself, so a manual cleanup never overlaps a scheduled one.
    """

    def __init__(self, sweep: Callable[[], int], interval_ms: int, *, name: str) -> None:
        # Held weakly: a manager that is dropped without close() is still collected, and then
        # this thread ends.
        self._sweep = weakref.WeakMethod(sweep)
        self._interval = min(interval_ms / 1000, threading.TIMEOUT_MAX)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.runs = 0
        self.failures = 0

    @property
    def interval_s(self) -> float:
        """The wait between two runs, in seconds."""
        return self._interval

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            sweep = self._sweep()
            if sweep is None:
                return
            try:
                removed = sweep()
            except BaseException:  # nothing a run raises may end the thread silently
                self.failures += 1
                log.exception("scheduled cleanup failed; retrying in %.3f s", self._interval)
            else:
                self.runs += 1
                if removed:
                    log.debug("scheduled cleanup removed %d expired sessions", removed)
            del sweep

    @property
    def alive(self) -> bool:
        """True while the thread runs (started and not stopped)."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and wait (up to ``timeout`` s) for a sweep in progress to finish."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("cleanup thread did not stop within %.1f s", timeout)
