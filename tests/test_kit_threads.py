"""The kit's async-path helpers: :class:`~sessionkeeper.testing.HookThreads` records the thread
of every call of the hooks it watches, and :func:`~sessionkeeper.testing.exercise_operations`
calls the operations it is given once each through an async manager."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sessionkeeper import AsyncSessionManager
from sessionkeeper.testing import HookThreads, ManualClock, exercise_operations

#: Every hook exercise_operations reaches on an atomic backend (memory).
ALL_CALLED = {
    "fetch",
    "touch",
    "store",
    "store_if",
    "delete",
    "take",
    "rotate",
    "list",
    "count",
    "list_owner",
    "count_owner",
}


def run(threads: HookThreads, clock: ManualClock, *operations: str) -> tuple[int, set[str]]:
    """Exercise ``operations`` (all when none) on a memory manager watched by ``threads``;
    return the loop's thread and the hooks seen, then check that the store is empty."""

    async def main() -> tuple[int, set[str]]:
        async with AsyncSessionManager(
            "memory", cleanup_interval=0, clock=clock, plugins=[threads]
        ) as sessions:
            if operations:
                await exercise_operations(sessions, clock, operations)
            else:
                await exercise_operations(sessions, clock)
            seen = set(threads.seen)
            assert await sessions.count() == 0
        return threading.get_ident(), seen

    return asyncio.run(main())


class TestHookThreads:
    def test_records_each_watched_hook_in_the_thread_it_ran(
        self, manual_clock: ManualClock
    ) -> None:
        """On the memory backend (every operation on the loop), every operation hook the
        exercise reaches is recorded, each in the loop's thread only; unwatched hooks are not
        recorded."""
        threads = HookThreads([*ALL_CALLED, "store_many", "cleanup_expired", "async_fetch"])
        loop_thread, seen = run(threads, manual_clock)
        assert seen == ALL_CALLED
        assert threads.where(loop_thread) == dict.fromkeys(ALL_CALLED, "loop")
        watched_one = HookThreads(["take"])
        run(watched_one, ManualClock())
        assert set(watched_one.seen) == {"take"}

    def test_where_says_worker_and_refuses_a_mix(self) -> None:
        """``where`` calls a hook never seen on the loop's thread ``"worker"``, and fails an
        assertion naming a hook seen both on the loop and elsewhere."""
        threads = HookThreads(["fetch", "store"])
        threads.seen = {"fetch": {1}, "store": {2, 3}}
        assert threads.where(1) == {"fetch": "loop", "store": "worker"}
        threads.seen["store"].add(1)
        with pytest.raises(AssertionError, match="store ran both on the loop and in a worker"):
            threads.where(1)

    def test_unknown_hook_names_are_refused(self) -> None:
        """A name that is not a hook of the specification (or keeps the prefix) is a
        ValueError naming it."""
        with pytest.raises(ValueError, match="not hooks of the specification: fecth, "):
            HookThreads(["fetch", "fecth", "sessionkeeper_store"])


class TestExerciseOperations:
    def test_only_the_operations_named(self, manual_clock: ManualClock) -> None:
        """Given ``create`` and ``delete`` only, the exercise stores and deletes one session:
        no other hook is called, and the store is empty again."""
        _, seen = run(HookThreads(ALL_CALLED), manual_clock, "create", "delete")
        assert seen == {"store", "delete"}

    def test_unknown_operation_names_are_refused(self, manual_clock: ManualClock) -> None:
        """An operation it does not call is a ValueError naming it, before anything is done."""
        threads = HookThreads(["store_if"])
        with pytest.raises(ValueError, match="not operations it calls: cleanup"):
            run(threads, manual_clock, "create", "cleanup")
        assert threads.seen == {}
