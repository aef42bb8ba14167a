"""Group commit: writers in several threads share transactions instead of paying one each.

This module holds the queueing alone — who leads, who waits, who is woken — and knows nothing
of sessions or SQLite. The durable store (:mod:`._durable`) hands it a *commit* callable that
applies a list of requests and commits them in one transaction; the requests carry their own
payload and outcome (:class:`Request` is subclassed). Kept apart so that the protocol can be
driven step by step by its own tests (``tests/test_sqlitedict_group.py``: threads, events and a
commit that blocks until told, no sleeps), and so that another store engine — one whose every
write is a transaction of a file shared by several processes — can use it as it is.

The protocol, as databases do it: one writer at a time *leads*. The leader takes the commit lock,
takes every request queued by then (its own among them) and calls *commit* with them, under the
lock; then it wakes the writers of its group and hands the lead to the first writer that queued
meanwhile, whose group is every request queued by the time it holds the lock. A lone writer
(nobody leading, the lock free) skips the queue and commits a group of one. The next group is
committed only once this one is over, so no write builds on a change that another group may yet
undo. A writer interrupted while it waits (a ``KeyboardInterrupt``) takes its request back, and
hands the lead on when it was to lead.

A coroutine joins a group without a thread of its own (:meth:`GroupCommit.wait`): its request
carries a future of its event loop instead of a lock. It never leads in its own thread (the loop
must not wait on a commit): when such a request is to lead, the group commit's *committer*
thread leads for it, started on first need and ended after :data:`IDLE_S` s with nothing to do
(or by :meth:`GroupCommit.stop`, which the store calls when it closes).
A leader settles the futures of its group with one call into each loop
(``call_soon_threadsafe``): one commit and one wake-up serve every task of the group, however
many, where a thread per waiting writer caps a group at the number of threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from sessionkeeper._table import Lock

__all__ = ["IDLE_S", "GroupCommit", "Request"]

log = logging.getLogger("sessionkeeper.sqlitedict")

#: Seconds the committer thread waits for work before it ends (the next coroutine's request
#: starts it again).
IDLE_S: Final = 1.0


class Request:
    """One write on its way to a group's commit: the queue's bookkeeping.

    Subclasses add the payload and the outcome, which *commit* fills in. ``waiter`` is a lock
    its writer holds while it waits, released once a leader settled the request (``done``) or
    promoted it to lead the next group (``promoted``); ``done`` and ``promoted`` change under
    the group commit's own mutex. A coroutine's request has a ``future`` (of its event loop)
    instead, set once the request is settled.
    """

    __slots__ = ("done", "future", "promoted", "waiter")

    def __init__(self) -> None:
        self.done = False
        self.promoted = False
        self.waiter: threading.Lock | None = None
        self.future: asyncio.Future[None] | None = None


R = TypeVar("R", bound=Request)


class GroupCommit(Generic[R]):
    """Runs ``commit(group)`` under ``lock`` for groups of requests submitted by many threads.

    :param lock: the lock every group is committed under: the store's write lock, which
        every other write takes too (so a group sees, and leaves, the store consistent).
    :param commit: applies and commits a group, settling each request (its outcome is the
        caller's business); what it raises is raised in the leader only.
    """

    __slots__ = (
        "_commit",
        "_committer",
        "_group",
        "_leading",
        "_lock",
        "_name",
        "_queue",
        "_signals",
        "_starting",
    )

    def __init__(
        self, lock: Lock, commit: Callable[[list[R]], object], name: str = "group-commit"
    ) -> None:
        self._lock = lock
        self._commit = commit
        #: The committer thread's name.
        self._name = name
        self._group = threading.Lock()  # the queue, _leading, and each request's flags
        self._queue: list[R] = []
        self._leading = False
        self._fresh_committer()

    def _fresh_committer(self) -> None:
        #: One item per group the committer is to lead (``_STOP``: end now).
        self._signals: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._starting = threading.Lock()  # _committer, and its decision to end
        self._committer: threading.Thread | None = None

    def queued(self) -> int:
        """How many requests wait for the next group."""
        return len(self._queue)

    def reset(self, lock: Lock) -> None:
        """Start afresh with ``lock`` (in a forked child: the parent's writers do not exist
        there, and a parent thread may have held the mutexes at the fork)."""
        self._lock = lock
        self._group = threading.Lock()
        self._queue = []
        self._leading = False
        self._fresh_committer()

    def stop(self, wait: float) -> None:
        """End the committer thread once it has led the groups it was signalled for, waiting
        ``wait`` s at most (a later coroutine's request starts a new one)."""
        with self._starting:
            thread, self._committer = self._committer, None
            if thread is None:
                return
            self._signals.put(_STOP)
            self._signals = queue.SimpleQueue()  # for a committer started after this one
        thread.join(wait)

    def submit(self, request: R) -> None:
        """Return once ``request`` was committed (or failed) in some group.

        Raises what interrupted the wait, with the request taken back, or what ``commit``
        raised when this thread led the group.
        """
        if not self._leading and self._lock.acquire(blocking=False):
            # Nobody leads and nothing holds the lock: a group of one, without the queue's
            # bookkeeping. Writers arriving meanwhile queue up and one of them leads next.
            try:
                self._commit([request])
            finally:
                self._lock.release()
        else:
            self._queue_and_wait(request)

    def _queue_and_wait(self, request: R) -> None:
        """Queue ``request``; return once a leader settled it, or after leading its group."""
        with self._group:
            self._queue.append(request)
            if self._leading:
                waiter = request.waiter = threading.Lock()
                waiter.acquire()
            else:
                self._leading = True
                waiter = None
            self._queued(request)
        if waiter is not None:
            try:
                self._wait(waiter)  # released once settled, or promoted to lead
            except BaseException:  # interrupted (KeyboardInterrupt) while queued
                self._withdraw(request)
                raise
        if not request.done:
            self._lead(request)

    async def wait(self, request: R) -> None:
        """Return once ``request`` was committed (or failed) in some group, awaited on the
        running event loop, with no thread of its own: the group's leader (a writer thread, or
        the committer thread) settles it. A cancelled wait takes the request back when no group
        holds it yet (else it is committed all the same), and raises ``CancelledError``.
        """
        future = request.future = asyncio.get_running_loop().create_future()
        with self._group:
            self._queue.append(request)
            lead = not self._leading
            if lead:
                self._leading = request.promoted = True
            self._queued(request)
        if lead:
            self._signal()
        try:
            await future
        except asyncio.CancelledError:
            self._withdraw(request)
            raise

    def _queued(self, request: R) -> None:
        """Called with the mutex held once ``request`` is queued (a seam for the tests)."""

    def _wait(self, waiter: threading.Lock) -> None:
        """Block until a leader settles or promotes the request (a seam for the tests)."""
        waiter.acquire()

    def _lead(self, own: R | None) -> None:
        """Commit the next group (it holds ``own``, unless the committer leads for coroutines),
        then hand the lead on."""
        batch: list[R] = []
        try:
            with self._lock:
                # Taken once the lock is ours: requests queued while we waited join this group.
                with self._group:
                    batch, self._queue = self._queue, []
                if batch:  # empty when the committer's one request was withdrawn
                    self._commit(batch)
        finally:
            with self._group:
                for request in batch:
                    request.done = True
                if own is not None and own in self._queue:  # interrupted before the group
                    self._queue.remove(own)
                successor = self._promote()
            futures: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for request in batch:
                if request.waiter is not None:
                    request.waiter.release()
                elif request.future is not None:
                    future = request.future
                    futures.setdefault(future.get_loop(), []).append(future)
            for loop, settled in futures.items():
                # A closed loop raises RuntimeError: nothing awaits these any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_resolve, settled)
            if successor is not None:
                successor()

    def _promote(self) -> Callable[[], object] | None:
        """Hand the lead to the first queued request (with the mutex held): what to call to
        wake its leader (its writer's lock, or the committer for a coroutine's request), or
        ``None`` (nobody queued: nobody leads)."""
        if not self._queue:
            self._leading = False
            return None
        successor = self._queue[0]
        successor.promoted = True
        waiter = successor.waiter
        return self._signal if waiter is None else waiter.release

    def _signal(self) -> None:
        """Have the committer thread lead the next group (starting it if it is not running)."""
        with self._starting:
            self._signals.put(None)
            if self._committer is None:
                thread = self._committer = threading.Thread(
                    target=self._run_committer,
                    args=(self._signals,),
                    name=self._name,
                    daemon=True,
                )
                thread.start()

    def _run_committer(self, signals: queue.SimpleQueue[object]) -> None:
        """The committer thread: lead a group per signal; end at ``_STOP`` or after
        :data:`IDLE_S` s idle."""
        while True:
            try:
                signal = signals.get(timeout=IDLE_S)
            except queue.Empty:
                with self._starting:
                    if signals.empty() and signals is self._signals:  # no signal raced it
                        self._committer = None
                        return
                continue
            if signal is _STOP:
                return
            try:
                self._lead(None)
            except Exception:  # its writers got the error: keep serving the others
                log.exception("a group commit led for coroutines failed")

    def _withdraw(self, request: R) -> None:
        """Take back a queued ``request`` whose writer was interrupted while waiting."""
        successor = None
        with self._group:
            if request.done or request not in self._queue:
                return  # settled, or in a group being committed: it will be settled
            self._queue.remove(request)
            # A writer thread that was to lead hands the lead on; the committer, signalled
            # for a coroutine's request, leads anyway (a group without it).
            if request.promoted and request.waiter is not None:
                successor = self._promote()
        if successor is not None:
            successor()


#: What :meth:`GroupCommit.stop` sends the committer thread.
_STOP: Final = object()


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    """Wake the coroutines waiting on ``futures`` (on their loop; a cancelled one is done)."""
    for future in futures:
        if not future.done():
            future.set_result(None)
