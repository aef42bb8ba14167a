"""The conformance tests run through :class:`~sessionkeeper.AsyncSessionManager`:
:class:`AsyncConformance`.

Each operation of the async manager takes one of three paths (awaited on the backend's asyncio
client through its ``sessionkeeper_async_*`` hooks, a plain call on the event loop, or a worker
thread), chosen per operation and per backend. These tests hold every path to the contract the
sync suite checks: round trips, expiry, touch coalescing, versions and owners, and tasks of one
loop racing ``update``, ``take`` and inserts-if-absent, checked against a model (an exact
counter, exactly one winner). A backend's suite subclasses it beside
:class:`~sessionkeeper.testing.BackendConformance`::

    class TestMyBackendAsync(AsyncConformance):
        backend = "mybackend"
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

from sessionkeeper import (
    AsyncSessionManager,
    InvalidSession,
    Session,
    SessionNotFound,
    Unsupported,
    VersionConflict,
)

from ._clock import ManualClock
from ._kit import BackendConformance
from ._rules import assert_same_session, touch_window

__all__ = ["AsyncConformance", "AsyncRunner"]

T = TypeVar("T")

#: ``update``'s attempts in the races: enough that a correct backend never runs out.
_ATTEMPTS = 10_000

#: What the ``run`` fixture is: ``run(body, **overrides)`` opens an AsyncSessionManager (the
#: test's options, overridden by ``overrides``), awaits ``body(sessions)`` in a fresh event loop,
#: closes the manager there and returns what ``body`` returned.
AsyncRunner = Callable[..., Any]


def _add_one(metadata: dict[str, Any]) -> dict[str, Any]:
    return {**metadata, "n": metadata["n"] + 1}


async def _not_found(sessions: AsyncSessionManager, session_id: str, *operations: str) -> None:
    for operation in operations:
        with pytest.raises(SessionNotFound) as info:
            await getattr(sessions, operation)(session_id)
        assert info.value.session_id == session_id, f"{operation}({session_id!r})"


@pytest.mark.sessionkeeper_conformance
class AsyncConformance:
    """The contract through :class:`~sessionkeeper.AsyncSessionManager` (see the module).

    Set ``backend``, and override :meth:`backend_opts` as for
    :class:`~sessionkeeper.testing.BackendConformance`. The races run ``race_tasks`` tasks in one
    loop. The tests of atomic operations skip on a backend without ``atomic`` (after checking
    that the manager refuses them with :class:`~sessionkeeper.Unsupported`).
    """

    #: The backend's entry-point name in group ``sessionkeeper.backends``.
    backend: ClassVar[str]
    #: Extra :class:`~sessionkeeper.AsyncSessionManager` keyword arguments for every manager.
    manager_kwargs: ClassVar[Mapping[str, Any]] = {}
    #: Tasks of one loop in each race.
    race_tasks: ClassVar[int] = 20
    #: ``update``s per task in the counter race.
    race_updates: ClassVar[int] = 10
    #: Rounds of the one-winner races.
    race_rounds: ClassVar[int] = 5

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        """The ``backend_opts`` of a fresh, empty store for one test (default: none)."""
        return {}

    # --- fixtures -----------------------------------------------------------------------------

    @pytest.fixture
    def clock(self) -> ManualClock:
        """The clock of every manager of the test; it moves only when the test says so."""
        return ManualClock()

    @pytest.fixture
    def run(self, clock: ManualClock, tmp_path: Path) -> AsyncRunner:
        """See :data:`AsyncRunner`."""
        options = self.backend_opts(tmp_path)

        def run(body: Callable[[AsyncSessionManager], Awaitable[T]], **overrides: Any) -> T:
            kwargs: dict[str, Any] = {
                "backend_opts": options,
                "clock": clock,
                "cleanup_interval": 0,
                "base_dir": tmp_path,
                **self.manager_kwargs,
                **overrides,
            }

            async def main() -> T:
                sessions = await AsyncSessionManager.open(self._backend_name(), **kwargs)
                async with sessions:
                    return await body(sessions)

            return asyncio.run(main())

        return run

    def _backend_name(self) -> str:
        # BackendConformance's check, which reads only the class attribute ``backend``.
        return BackendConformance._backend_name(self)  # type: ignore[arg-type]

    # --- the paths ----------------------------------------------------------------------------

    def test_every_operation_takes_one_known_path(self, run: AsyncRunner) -> None:
        """Each operation is native, inline or in a worker, never two of them; the native ones
        are the backend's ``async_`` hooks (none on a backend without any)."""

        async def body(sessions: AsyncSessionManager) -> None:
            assert not sessions.native_operations & sessions.inline_operations
            for operation in sessions.native_operations:
                assert operation in sessions._natives, operation

        run(body)

    # --- round trips, expiry, touch ------------------------------------------------------------

    def test_store_then_fetch_returns_every_field(
        self, run: AsyncRunner, clock: ManualClock
    ) -> None:
        """A stored session reads back with every field exactly, at version 1 when new."""
        now = clock.now
        session = Session(
            "async-1",
            now,
            now,
            60_000,
            {"user_id": "u", "n": [1, 2.5, None, True]},
            owner="u",
            absolute_timeout_ms=3_600_000,
        )

        async def body(sessions: AsyncSessionManager) -> None:
            stored = await sessions.store(session)
            assert stored.version == 1
            assert_same_session(await sessions.fetch(session.id), stored)
            assert_same_session(await sessions.peek(session.id), stored)

        run(body)

    def test_unknown_ids_are_not_found_and_delete_returns_false(self, run: AsyncRunner) -> None:
        """fetch, peek and touch of an unknown id raise SessionNotFound naming it; delete
        returns False; a malformed id is InvalidSession."""

        async def body(sessions: AsyncSessionManager) -> None:
            await _not_found(sessions, "nobody-here", "fetch", "peek", "touch")
            assert await sessions.delete("nobody-here") is False
            with pytest.raises(InvalidSession):
                await sessions.fetch("has space")

        run(body)

    def test_fetch_coalesces_touches_and_touch_always_writes(
        self, run: AsyncRunner, clock: ManualClock
    ) -> None:
        """A fetch within the touch window leaves last_accessed; past it, moves it to now;
        touch moves it to now whatever the window."""

        async def body(sessions: AsyncSessionManager) -> None:
            created = await sessions.create(timeout_ms=600_000)
            window = touch_window(sessions.config.touch_resolution, 600_000)
            clock.advance(window)
            assert (await sessions.fetch(created.id)).last_accessed == created.last_accessed
            assert (await sessions.peek(created.id)).last_accessed == created.last_accessed
            clock.advance(1)
            assert (await sessions.fetch(created.id)).last_accessed == clock.now
            clock.advance(1)
            assert (await sessions.touch(created.id)).last_accessed == clock.now
            assert (await sessions.peek(created.id)).last_accessed == clock.now

        run(body)

    def test_expired_sessions_are_invisible_until_cleanup_removes_them(
        self, run: AsyncRunner, clock: ManualClock
    ) -> None:
        """A session idle past its timeout is not fetched, peeked, touched, listed or counted
        before cleanup; cleanup removes exactly the expired ones and says how many."""

        async def body(sessions: AsyncSessionManager) -> None:
            short = await sessions.create(timeout_ms=1_000, owner="o")
            kept = await sessions.create(timeout_ms=None, owner="o")
            clock.advance(1_001)
            await _not_found(sessions, short.id, "fetch", "peek", "touch")
            assert await sessions.list() == [kept.id]
            assert await sessions.count() == 1
            assert await sessions.list(owner="o") == [kept.id]
            assert await sessions.count(owner="o") == 1
            assert (await sessions.peek(short.id, include_expired=True)).id == short.id
            assert await sessions.cleanup_expired() == 1
            assert await sessions.cleanup_expired() == 0
            await _not_found(sessions, short.id, "peek")

        run(body)

    def test_store_replaces_and_store_many_stores_every_session(
        self, run: AsyncRunner, clock: ManualClock
    ) -> None:
        """store of an existing id replaces it; store_many stores each session of the batch."""
        now = clock.now

        async def body(sessions: AsyncSessionManager) -> None:
            first = await sessions.store(Session("a", now, now, None, {"v": 1}))
            await sessions.store(first.replace(metadata={"v": 2}))
            assert (await sessions.peek("a")).metadata == {"v": 2}
            batch = [Session(f"b{i}", now, now, None, {"i": i}) for i in range(5)]
            assert await sessions.store_many(batch) == 5
            assert sorted(await sessions.list()) == sorted(["a", *(s.id for s in batch)])
            assert await sessions.delete("a") is True
            assert await sessions.delete("a") is False

        run(body)

    # --- atomic operations ---------------------------------------------------------------------

    def _atomic(self, sessions: AsyncSessionManager) -> None:
        if not sessions.sync.capabilities.atomic:
            pytest.skip("the backend does not declare atomic")

    def test_a_backend_without_atomic_refuses_the_atomic_operations(self, run: AsyncRunner) -> None:
        """On a backend without ``atomic``, update, take, rotate, delete_owner and a
        conditional store raise Unsupported and change nothing."""

        async def body(sessions: AsyncSessionManager) -> None:
            if sessions.sync.capabilities.atomic:
                pytest.skip("the backend declares atomic")
            created = await sessions.create(metadata={"n": 0})
            for call in (
                sessions.update(created.id, _add_one),
                sessions.take(created.id),
                sessions.rotate(created.id),
                sessions.delete_owner("o"),
                sessions.store(created, if_version=1),
            ):
                with pytest.raises(Unsupported):
                    await call
            assert (await sessions.peek(created.id)).metadata == {"n": 0}

        run(body)

    def test_conditional_store_update_take_and_rotate(self, run: AsyncRunner) -> None:
        """A conditional store checks the live version (VersionConflict naming both, nothing
        written); update writes fn's metadata at version + 1; rotate moves the session to a
        new id (the old one gone); take returns it once, then SessionNotFound."""

        async def body(sessions: AsyncSessionManager) -> None:
            self._atomic(sessions)
            created = await sessions.create(metadata={"n": 0}, owner="o")
            with pytest.raises(VersionConflict) as info:
                await sessions.store(created.replace(metadata={"n": 9}), if_version=2)
            assert (info.value.expected, info.value.actual) == (2, 1)
            with pytest.raises(VersionConflict):
                await sessions.store(created, if_version=0)
            updated = await sessions.update(created.id, _add_one)
            assert (updated.metadata, updated.version) == ({"n": 1}, 2)
            rotated = await sessions.rotate(created.id)
            assert rotated.id != created.id
            assert (rotated.metadata, rotated.version, rotated.owner) == ({"n": 1}, 3, "o")
            await _not_found(sessions, created.id, "peek")
            taken = await sessions.take(rotated.id)
            assert taken.id == rotated.id
            await _not_found(sessions, rotated.id, "take", "peek")

        run(body)

    def test_delete_owner_removes_every_session_of_the_owner(self, run: AsyncRunner) -> None:
        """delete_owner removes that owner's sessions, returns how many, and keeps others'."""

        async def body(sessions: AsyncSessionManager) -> None:
            self._atomic(sessions)
            mine = [await sessions.create(owner="me") for _ in range(3)]
            other = await sessions.create(owner="you")
            assert await sessions.delete_owner("me") == 3
            assert await sessions.list(owner="me") == []
            assert await sessions.count(owner="you") == 1
            await _not_found(sessions, mine[0].id, "peek")
            assert (await sessions.peek(other.id)).owner == "you"

        run(body)

    # --- races of tasks in one loop ----------------------------------------------------------

    def test_tasks_racing_update_match_an_exact_counter(self, run: AsyncRunner) -> None:
        """``race_tasks`` tasks each add 1 ``race_updates`` times with update, interleaved with
        reads: the counter and the version grow by exactly the number of updates, and every
        read sees a value the model (the count of updates done so far) allows."""
        tasks, per_task = self.race_tasks, self.race_updates

        async def body(sessions: AsyncSessionManager) -> None:
            self._atomic(sessions)
            created = await sessions.create(timeout_ms=None, metadata={"n": 0})
            done = 0  # the model: updates acknowledged so far
            begun = 0

            async def worker(seed: int) -> None:
                nonlocal done, begun
                rng = random.Random(seed)  # noqa: S311 (a test's choice of reads)
                for _ in range(per_task):
                    if rng.random() < 0.3:
                        low, seen = done, (await sessions.peek(created.id)).metadata["n"]
                        assert low <= seen <= begun, f"read n={seen} outside [{low}, {begun}]"
                    begun += 1
                    stored = await sessions.update(created.id, _add_one, attempts=_ATTEMPTS)
                    done += 1
                    assert stored.metadata["n"] == stored.version - created.version

            await asyncio.gather(*(worker(seed) for seed in range(tasks)))
            final = await sessions.peek(created.id)
            expected = tasks * per_task
            assert final.metadata == {"n": expected}, (
                f"{tasks} tasks x {per_task} updates left n={final.metadata['n']}, not {expected}"
            )
            assert final.version == created.version + expected

        run(body)

    def test_tasks_racing_take_have_exactly_one_winner(self, run: AsyncRunner) -> None:
        """Of ``race_tasks`` tasks taking one id together, exactly one gets the session."""

        async def body(sessions: AsyncSessionManager) -> None:
            self._atomic(sessions)
            for _ in range(self.race_rounds):
                created = await sessions.create(metadata={"token": 1})

                async def take(session_id: str = created.id) -> Session | None:
                    try:
                        return await sessions.take(session_id)
                    except SessionNotFound:
                        return None

                got = await asyncio.gather(*(take() for _ in range(self.race_tasks)))
                winners = [s for s in got if s is not None]
                assert len(winners) == 1, f"{len(winners)} tasks took one session"
                assert winners[0].id == created.id

        run(body)

    def test_tasks_racing_insert_if_absent_have_exactly_one_winner(
        self, run: AsyncRunner, clock: ManualClock
    ) -> None:
        """Of ``race_tasks`` tasks storing one new id with if_version=0, exactly one succeeds
        and its metadata is what is stored."""

        async def body(sessions: AsyncSessionManager) -> None:
            self._atomic(sessions)
            for round_ in range(self.race_rounds):
                session_id = f"insert-{round_}"

                async def insert(index: int, session_id: str = session_id) -> int | None:
                    now = clock.now
                    session = Session(session_id, now, now, None, {"by": index})
                    try:
                        await sessions.store(session, if_version=0)
                    except VersionConflict:
                        return None
                    return index

                got = await asyncio.gather(*(insert(i) for i in range(self.race_tasks)))
                winners = [i for i in got if i is not None]
                assert len(winners) == 1, f"{len(winners)} inserts-if-absent of one id succeeded"
                assert (await sessions.peek(session_id)).metadata == {"by": winners[0]}

        run(body)
