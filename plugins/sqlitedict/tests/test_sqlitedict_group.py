"""The group-commit protocol (``sessionkeeper_sqlitedict._group``), driven step by step.

No SQLite and no sleeps: the commit is a function that records each group it is given (and the
thread that gave it) and, when a test says so, blocks until released; the tests learn that a
writer has queued from the protocol's own ``_queued`` seam, and interrupt a waiting writer
through its ``_wait`` seam, at the exact point a ``KeyboardInterrupt`` would strike. Every wait
is bounded (a hang fails the test instead of stopping the run); nothing asserts a duration.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import pytest

from sessionkeeper_sqlitedict._group import GroupCommit, Request

#: How long a test waits for a step before it calls it a hang (never a timing assertion).
HANG = 60.0


class Note(Request):
    """A request with a name, and what its writer saw."""

    __slots__ = ("name", "outcome")

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.outcome: object = None


class Interrupted(BaseException):
    """What a signal handler raises (like KeyboardInterrupt, which nothing wraps)."""


class Harness(GroupCommit[Note]):
    """A group commit whose commit records the groups and can be held, and whose writers
    report when they queue and can be interrupted while they wait."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        super().__init__(self.lock, self._record)
        #: (names in the group, name of the thread that committed it), in commit order.
        self.groups: list[tuple[list[str], str]] = []
        self.queued_names: queue.Queue[str] = queue.Queue()
        #: Set by the commit when it starts; it then waits for ``release`` when ``hold`` is set.
        self.entered = threading.Event()
        self.hold = threading.Event()
        self.release = threading.Event()
        #: Requests whose writer is interrupted while waiting (after being woken, for
        #: ``interrupt_after_wake``).
        self.interrupt: set[str] = set()
        self.interrupt_after_wake: set[str] = set()
        self.fail_with: BaseException | None = None

    def _record(self, group: list[Note]) -> None:
        self.groups.append(([note.name for note in group], threading.current_thread().name))
        self.entered.set()
        if self.hold.is_set():
            assert self.release.wait(HANG), "the test never released the commit"
        for note in group:
            note.outcome = "committed" if self.fail_with is None else "failed"
        if self.fail_with is not None:
            raise self.fail_with

    def _queued(self, request: Note) -> None:
        self.queued_names.put(request.name)

    def _wait(self, waiter: threading.Lock) -> None:
        name = threading.current_thread().name
        if name in self.interrupt:
            raise Interrupted
        super()._wait(waiter)
        if name in self.interrupt_after_wake:
            raise Interrupted

    def await_queued(self, *names: str) -> None:
        """Wait until the writers ``names`` have queued, in that order."""
        for name in names:
            assert self.queued_names.get(timeout=HANG) == name


@pytest.fixture
def harness() -> Harness:
    return Harness()


class Writers:
    """Writer threads, each submitting ``Note(<its name>)``; what it raised is its outcome."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.outcomes: dict[str, object] = {}
        self.threads: list[threading.Thread] = []

    def __call__(self, name: str) -> threading.Thread:
        """Start the writer ``name``."""

        def run() -> None:
            note = Note(name)
            try:
                self.harness.submit(note)
            except BaseException as exc:
                note.outcome = exc
            self.outcomes[name] = note.outcome

        thread = threading.Thread(target=run, name=name)
        self.threads.append(thread)
        thread.start()
        return thread


@pytest.fixture
def writers(harness: Harness) -> Iterator[Writers]:
    """Writer threads on ``harness``; all released and joined at the end."""
    started = Writers(harness)
    yield started
    harness.release.set()
    join(*started.threads)


def join(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.join(HANG)
        assert not thread.is_alive(), f"writer {thread.name} hung"


class TestGroupCommit:
    def test_a_lone_writer_commits_a_group_of_one_without_queueing(self, harness: Harness) -> None:
        """With nobody leading and the lock free, a writer commits its own request as a group
        of one in its own thread, never entering the queue; the next lone writer does the same."""
        first, second = Note("first"), Note("second")
        harness.submit(first)
        harness.submit(second)
        me = threading.current_thread().name
        assert harness.groups == [(["first"], me), (["second"], me)]
        assert harness.queued_names.empty()
        assert (first.outcome, second.outcome) == ("committed", "committed")
        assert harness.queued() == 0
        assert not harness.lock.locked()

    def test_writers_queued_behind_the_lock_share_one_commit(
        self, harness: Harness, writers: Writers
    ) -> None:
        """Writers arriving while the lock is held (a commit in progress) queue up; the first
        leads and commits all of them, in the order they queued, in one group."""
        names = [f"w{i}" for i in range(6)]
        with harness.lock:
            threads = []
            for name in names:
                threads.append(writers(name))
                harness.await_queued(name)
            assert harness.groups == []
            assert harness.queued() == len(names)
        join(*threads)
        assert harness.groups == [(names, "w0")]
        assert writers.outcomes == dict.fromkeys(names, "committed")
        assert harness.queued() == 0

    def test_the_lead_passes_to_the_first_writer_queued_during_a_commit(
        self, harness: Harness, writers: Writers
    ) -> None:
        """While a group commits, later writers queue; when it is over, the first of them is
        promoted and commits every queued request as the next group, and nobody leads after."""
        harness.hold.set()
        with harness.lock:
            a = writers("a")
            harness.await_queued("a")
        assert harness.entered.wait(HANG)  # "a" leads and is committing [a]
        b, c = writers("b"), writers("c")
        harness.await_queued("b", "c")
        harness.hold.clear()
        harness.release.set()
        join(a, b, c)
        assert harness.groups == [(["a"], "a"), (["b", "c"], "b")]
        assert writers.outcomes == dict.fromkeys("abc", "committed")
        harness.submit(Note("later"))  # the lead was given back: a lone writer commits alone
        assert harness.groups[-1] == (["later"], threading.current_thread().name)

    def test_a_failing_commit_raises_in_its_leader_only_and_the_next_group_runs(
        self, harness: Harness, writers: Writers
    ) -> None:
        """What the commit raises reaches the group's leader; the other writers of the group
        are settled (their outcome is the commit's to set) and return; the lead is released, so
        the next writer commits."""
        harness.fail_with = RuntimeError("disk on fire")
        with harness.lock:
            leader, follower = writers("leader"), writers("follower")
            harness.await_queued("leader", "follower")
        join(leader, follower)
        outcomes = writers.outcomes
        assert isinstance(outcomes["leader"], RuntimeError)
        assert outcomes["follower"] == "failed"
        assert harness.groups == [(["leader", "follower"], "leader")]
        harness.fail_with = None
        after = Note("after")
        harness.submit(after)
        assert after.outcome == "committed"

    def test_a_writer_interrupted_in_the_queue_is_taken_back(
        self, harness: Harness, writers: Writers
    ) -> None:
        """A writer interrupted while it waits behind a leader raises the interruption, and its
        request is withdrawn: the leader's group holds the others only."""
        harness.interrupt.add("quitter")
        with harness.lock:
            leader = writers("leader")
            harness.await_queued("leader")
            quitter = writers("quitter")
            harness.await_queued("quitter")
            join(quitter)  # interrupted and withdrawn, while the lock is still held
            follower = writers("follower")
            harness.await_queued("follower")
        join(leader, follower)
        outcomes = writers.outcomes
        assert isinstance(outcomes["quitter"], Interrupted)
        assert harness.groups == [(["leader", "follower"], "leader")]
        assert harness.queued() == 0

    def test_a_writer_interrupted_once_promoted_hands_the_lead_on(
        self, harness: Harness, writers: Writers
    ) -> None:
        """A writer interrupted just as it is promoted to lead the next group raises, its
        request is withdrawn, and the lead goes to the next queued writer, which commits the
        rest: nobody waits for a leader that is gone."""
        harness.hold.set()
        harness.interrupt_after_wake.add("promoted")
        with harness.lock:
            first = writers("first")
            harness.await_queued("first")
        assert harness.entered.wait(HANG)  # "first" is committing its group
        promoted, last = writers("promoted"), writers("last")
        harness.await_queued("promoted", "last")
        harness.hold.clear()
        harness.release.set()
        join(first, promoted, last)
        outcomes = writers.outcomes
        assert isinstance(outcomes["promoted"], Interrupted)
        assert outcomes["last"] == "committed"
        assert harness.groups == [(["first"], "first"), (["last"], "last")]
        assert harness.queued() == 0

    def test_reset_forgets_the_queue_and_the_leader(self, harness: Harness) -> None:
        """``reset`` (what a forked child calls) leaves an empty queue, no leader and the given
        lock: the next writer commits alone even though the old lock is still held."""
        harness.lock.acquire()
        queued = Note("parent's")
        harness._queue.append(queued)
        harness._leading = True
        fresh = threading.Lock()
        harness.reset(fresh)
        assert harness.queued() == 0
        child = Note("child")
        harness.submit(child)
        assert child.outcome == "committed"
        assert not fresh.locked()
        harness.lock.release()
