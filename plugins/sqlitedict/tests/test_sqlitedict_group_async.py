"""Coroutines in the group-commit protocol (``GroupCommit.wait``, issue 15): a task's request
joins the pending group from the event loop with no thread of its own, the committer thread
leads for it, and one commit settles every task of the group.

No SQLite and no sleeps: the commit records each group and the thread that committed it; the
tests hold the commit lock from the loop while tasks queue (the protocol's own ``queued``
count says when they have), then let it go. Every wait is bounded (``HANG``, and the request
class ``Note``, are those of the thread tests in test_sqlitedict_group.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from test_sqlitedict_group import HANG, Note

from sessionkeeper_sqlitedict._group import GroupCommit


class Recorder(GroupCommit[Note]):
    """A group commit whose commit records (names, committing thread) per group."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        super().__init__(self.lock, self._record, name="test-committer")
        self.groups: list[tuple[list[str], str]] = []
        self.threads: list[threading.Thread] = []  # the thread that committed each group
        self.fail_with: Exception | None = None

    def _record(self, group: list[Note]) -> None:
        self.groups.append(([note.name for note in group], threading.current_thread().name))
        self.threads.append(threading.current_thread())
        for note in group:
            note.outcome = "committed" if self.fail_with is None else "failed"
        if self.fail_with is not None:
            raise self.fail_with


async def queued(recorder: Recorder, count: int) -> None:
    """Let the loop run until ``count`` requests wait in the queue."""
    async with asyncio.timeout(HANG):
        while recorder.queued() < count:
            await asyncio.sleep(0)


class TestCoroutines:
    def test_tasks_queued_behind_the_lock_share_one_commit_led_by_the_committer(self) -> None:
        """Fifty tasks writing while the lock is held all join one group, committed by the
        committer thread (never the loop's thread) once the lock is free; each task returns
        with its request committed."""
        recorder = Recorder()
        names = [f"t{i}" for i in range(50)]
        notes = [Note(name) for name in names]

        async def main() -> None:
            with recorder.lock:
                tasks = [asyncio.create_task(recorder.wait(note)) for note in notes]
                await queued(recorder, len(notes))
                assert not any(task.done() for task in tasks)  # nothing acknowledged yet
            async with asyncio.timeout(HANG):
                await asyncio.gather(*tasks)

        asyncio.run(main())
        assert recorder.groups == [(names, "test-committer")]
        assert [note.outcome for note in notes] == ["committed"] * len(names)
        assert recorder.queued() == 0

    def test_a_writer_thread_queued_behind_a_task_is_committed_in_its_group(self) -> None:
        """A writer thread arriving while a task's request waits for the lock queues behind it
        and is committed in the same group, by the committer; both return."""
        recorder = Recorder()
        task_note, thread_note = Note("task"), Note("thread")
        writer = threading.Thread(target=recorder.submit, args=(thread_note,), name="writer")

        async def main() -> None:
            with recorder.lock:
                task = asyncio.create_task(recorder.wait(task_note))
                await queued(recorder, 1)
                writer.start()
                await queued(recorder, 2)
            async with asyncio.timeout(HANG):
                await task

        asyncio.run(main())
        writer.join(HANG)
        assert not writer.is_alive()
        assert recorder.groups == [(["task", "thread"], "test-committer")]
        assert (task_note.outcome, thread_note.outcome) == ("committed", "committed")

    def test_a_task_queued_behind_a_writer_thread_is_committed_by_that_writer(self) -> None:
        """A task's request queued while a writer thread leads joins that writer's group: no
        committer thread is involved."""
        recorder = Recorder()
        thread_note, task_note = Note("thread"), Note("task")
        writer = threading.Thread(target=recorder.submit, args=(thread_note,), name="writer")

        async def main() -> None:
            with recorder.lock:
                writer.start()
                await queued(recorder, 1)
                task = asyncio.create_task(recorder.wait(task_note))
                await queued(recorder, 2)
            async with asyncio.timeout(HANG):
                await task

        asyncio.run(main())
        writer.join(HANG)
        assert recorder.groups == [(["thread", "task"], "writer")]
        assert task_note.outcome == "committed"

    def test_a_cancelled_task_takes_its_request_back(self) -> None:
        """A task cancelled while its request waits for the next group raises CancelledError
        and its request is withdrawn: the group holds the others only, and a later write
        commits normally."""
        recorder = Recorder()
        kept, dropped = Note("kept"), Note("dropped")

        async def main() -> None:
            with recorder.lock:
                first = asyncio.create_task(recorder.wait(kept))
                second = asyncio.create_task(recorder.wait(dropped))
                await queued(recorder, 2)
                second.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await second
                assert recorder.queued() == 1
            async with asyncio.timeout(HANG):
                await first
                await recorder.wait(Note("later"))

        asyncio.run(main())
        assert [group for group, _ in recorder.groups] == [["kept"], ["later"]]
        assert dropped.outcome is None

    def test_the_lone_request_of_the_committer_withdrawn_commits_nothing(self) -> None:
        """When the one request the committer was woken for is cancelled before the lock is
        free, the committer commits no empty group, and the next request is served."""
        recorder = Recorder()

        async def main() -> None:
            with recorder.lock:
                task = asyncio.create_task(recorder.wait(Note("gone")))
                await queued(recorder, 1)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            async with asyncio.timeout(HANG):
                await recorder.wait(Note("next"))

        asyncio.run(main())
        assert [group for group, _ in recorder.groups] == [["next"]]

    def test_a_failing_commit_settles_its_tasks_and_the_next_group_runs(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """When the commit raises in the committer thread, every task of the group returns
        (its outcome is the commit's to set), the error is logged, and the committer serves
        the next group."""
        recorder = Recorder()
        recorder.fail_with = RuntimeError("disk on fire")
        first, second = Note("first"), Note("second")

        async def main() -> None:
            with recorder.lock:
                tasks = [asyncio.create_task(recorder.wait(n)) for n in (first, second)]
                await queued(recorder, 2)
            async with asyncio.timeout(HANG):
                await asyncio.gather(*tasks)
            recorder.fail_with = None
            async with asyncio.timeout(HANG):
                await recorder.wait(Note("after"))

        with caplog.at_level(logging.ERROR, logger="sessionkeeper.sqlitedict"):
            asyncio.run(main())
        assert (first.outcome, second.outcome) == ("failed", "failed")
        assert [group for group, _ in recorder.groups] == [["first", "second"], ["after"]]
        assert "disk on fire" in caplog.text

    def test_stop_ends_the_committer_and_a_later_request_starts_another(self) -> None:
        """``stop`` (what closing the store calls) ends the committer thread; a request made
        after it is still committed, by a new committer."""
        recorder = Recorder()

        async def main() -> None:
            async with asyncio.timeout(HANG):
                await recorder.wait(Note("first"))
            recorder.stop(HANG)
            assert not recorder.threads[0].is_alive()
            async with asyncio.timeout(HANG):
                await recorder.wait(Note("second"))

        asyncio.run(main())
        assert [group for group, _ in recorder.groups] == [["first"], ["second"]]
        first, second = recorder.threads
        assert second is not first
        recorder.stop(HANG)
        assert not second.is_alive()

    def test_tasks_of_two_loops_are_each_woken_on_their_own_loop(self) -> None:
        """Requests of tasks running on two event loops (two threads) share a group; each
        task is woken on its own loop."""
        recorder = Recorder()
        ready = threading.Barrier(3, timeout=HANG)
        woken: dict[str, int] = {}

        def run(name: str) -> None:
            async def main() -> None:
                task = asyncio.create_task(recorder.wait(Note(name)))
                await asyncio.sleep(0)  # queued (the lock is held by the test)
                ready.wait()
                async with asyncio.timeout(HANG):
                    await task
                woken[name] = threading.get_ident()

            asyncio.run(main())

        threads = [threading.Thread(target=run, args=(name,), name=name) for name in "ab"]
        with recorder.lock:
            for thread in threads:
                thread.start()
            ready.wait()
        for thread in threads:
            thread.join(HANG)
        assert sorted(recorder.groups[0][0]) == ["a", "b"]
        assert woken == {thread.name: thread.ident for thread in threads}
