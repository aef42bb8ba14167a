"""AsyncSessionManager awaits the backend's ``sessionkeeper_async_*`` hooks when it implements
the twin of every hook an operation calls (issue 15): no thread, wrappers and monitors still see
every call, the sync manager never calls them, and a lone async hook is refused.

The backends are in tests/fixtures/async_backend/sk_async_backend.py (the memory backend with an
``async_`` twin of every operation hook, each yielding to the loop once like a round trip).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Generator
from typing import Any

import pytest

from sessionkeeper import (
    AsyncSessionManager,
    ManagerClosed,
    Session,
    SessionManager,
    SessionNotFound,
    VersionConflict,
)
from sessionkeeper.backend import PluginValidationError, hookimpl
from sessionkeeper.hookspecs import ASYNC_HOOKS
from sessionkeeper.testing import AsyncConformance, ManualClock

from .conftest import FIXTURES, MakeDist

ASYNC_TWINS = sorted(ASYNC_HOOKS.values())


@pytest.fixture
def async_backends(make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install the backends of sk_async_backend under their entry-point names."""
    monkeypatch.syspath_prepend(os.fspath(FIXTURES / "async_backend"))
    from sk_async_backend import ENTRY_POINTS

    make_dist("sk-async-backends", {}, {"sessionkeeper.backends": dict(ENTRY_POINTS)})


class Counting:
    """A wrapper on every ``async_`` hook and its sync twin, counting calls by hook name, and
    recording what each async call returned (the awaitable) and the thread it ran in."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.results: list[object] = []
        self.threads: set[int] = set()


def _counting(hook: str) -> Any:
    @hookimpl(wrapper=True)
    def wrapper(self: Counting) -> Generator[None, Any, Any]:
        self.calls[hook] += 1
        self.threads.add(threading.get_ident())
        result = yield
        if hook.startswith("sessionkeeper_async_"):
            self.results.append(result)
        return result

    return wrapper


for _hook in (*ASYNC_HOOKS, *ASYNC_HOOKS.values()):
    setattr(Counting, _hook, _counting(_hook))


def _open(**keywords: Any) -> AsyncSessionManager:
    keywords.setdefault("cleanup_interval", 0)
    return AsyncSessionManager("test-async", **keywords)


class TestPaths:
    def test_every_operation_of_a_fully_async_backend_is_native(self, async_backends: None) -> None:
        """A backend with the twin of every operation hook has every operation native, and
        none inline (native wins over inline) nor in a worker: no thread is started."""

        async def main() -> AsyncSessionManager:
            async with _open() as sessions:
                session = await sessions.create(owner="u", metadata={"n": 0})
                await sessions.update(session.id, lambda md: {"n": md["n"] + 1})
                assert (await sessions.fetch(session.id)).metadata == {"n": 1}
                assert await sessions.list(owner="u") == [session.id]
                assert await sessions.count() == 1
                assert sessions._executor is None
            return sessions

        sessions = asyncio.run(main())
        assert {
            "create",
            "store",
            "fetch",
            "peek",
            "touch",
            "delete",
            "list",
            "count",
            "list_owner",
            "count_owner",
            "update",
            "take",
            "rotate",
            "delete_owner",
            "cleanup_expired",
        } <= sessions.native_operations
        assert sessions.inline_operations & sessions.native_operations == frozenset()
        assert sessions.sync.backend.async_closed == 1

    def test_an_operation_with_one_twin_missing_is_not_native(self, async_backends: None) -> None:
        """A backend with ``async_fetch`` only: peek (fetch alone) is native; fetch (fetch and
        touch) and update (fetch and store_if) are not; they run in a worker thread."""

        async def main() -> tuple[AsyncSessionManager, Counting, int]:
            counting = Counting()
            async with AsyncSessionManager(
                "test-half-async", cleanup_interval=0, plugins=[counting]
            ) as sessions:
                session = await sessions.create()
                await sessions.peek(session.id)
                await sessions.fetch(session.id)
            return sessions, counting, threading.get_ident()

        sessions, counting, loop_thread = asyncio.run(main())
        assert sessions.native_operations == {"peek"}
        assert counting.calls["sessionkeeper_async_fetch"] == 1  # peek's
        assert counting.calls["sessionkeeper_fetch"] == 1  # fetch's, in a worker
        assert counting.threads - {loop_thread}, "fetch did not go to a worker thread"

    def test_the_sync_manager_never_calls_an_async_hook(self, async_backends: None) -> None:
        """Every operation of a SessionManager over a backend with async twins calls the sync
        hooks only."""
        counting = Counting()
        with SessionManager("test-async", cleanup_interval=0, plugins=[counting]) as sessions:
            session = sessions.create(owner="u")
            sessions.update(session.id, lambda md: {"n": 1})
            sessions.fetch(session.id)
            sessions.take(sessions.rotate(session.id).id)
            sessions.cleanup_expired()
            assert sessions.backend.async_calls == {}
        assert counting.calls["sessionkeeper_store_if"] == 1
        assert not [hook for hook in counting.calls if "async" in hook]

    def test_an_async_hook_without_its_sync_twin_is_refused(self, async_backends: None) -> None:
        """A backend implementing sessionkeeper_async_store_many without
        sessionkeeper_store_many is refused with a PluginValidationError naming both."""
        with pytest.raises(PluginValidationError) as info:
            AsyncSessionManager("test-lone-async", cleanup_interval=0)
        message = str(info.value)
        assert "sessionkeeper_async_store_many without sessionkeeper_store_many" in message
        assert "test-lone-async" in message

    def test_the_sync_manager_refuses_a_lone_async_hook_too(self, async_backends: None) -> None:
        """A SessionManager over a backend implementing sessionkeeper_async_store_many without
        sessionkeeper_store_many is refused as the async manager refuses it (issue 15 follow-up:
        it used to open), naming the backend and both hooks."""
        with pytest.raises(PluginValidationError) as info:
            SessionManager("test-lone-async", cleanup_interval=0)
        message = str(info.value)
        assert "sessionkeeper_async_store_many without sessionkeeper_store_many" in message
        assert "test-lone-async" in message


class TestEventLoops:
    """The backend's asyncio client belongs to one event loop: a manager with native
    operations binds to the first loop it runs them on, and refuses any other."""

    def test_a_second_asyncio_run_is_refused_naming_the_fix(self, async_backends: None) -> None:
        """A manager used in one asyncio.run and then in a second is refused there with a
        RuntimeError saying the first loop is closed and how to open one manager per loop; the
        refused call reaches no async hook (no new client is made on the second loop). The
        sessions written on the first loop are kept (the sync manager reads them)."""
        sessions = _open()

        async def first() -> str:
            return (await sessions.create(metadata={"n": 1})).id

        session_id = asyncio.run(first())
        calls = dict(sessions.sync.backend.async_calls)

        async def second() -> None:
            for call in (
                sessions.fetch(session_id),
                sessions.count(),
                sessions.update(session_id, lambda md: {"n": 2}),
            ):
                with pytest.raises(RuntimeError) as info:
                    await call
                message = str(info.value)
                assert "the event loop the manager first ran on (now closed)" in message
                assert "test-async backend" in message
                assert "await AsyncSessionManager.open(...)" in message

        asyncio.run(second())
        assert sessions.sync.backend.async_calls == calls
        assert sessions.sync.peek(session_id).metadata == {"n": 1}
        with pytest.warns(ResourceWarning, match="dropped without being closed"):
            asyncio.run(sessions.aclose())
        assert sessions.sync.closed
        assert sessions.sync.backend.async_closed == 0  # its loop is gone: nothing awaited it

    def test_a_loop_running_in_another_thread_is_refused(self, async_backends: None) -> None:
        """While the manager's first loop still runs (in another thread), a call from a second
        loop is refused with the same RuntimeError (without "now closed"); the first loop goes
        on using the manager and closes its client."""
        sessions = _open()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever)
        thread.start()
        try:
            created = asyncio.run_coroutine_threadsafe(sessions.create(), loop).result()
            with pytest.raises(RuntimeError, match=r"first ran on; it cannot run on another"):
                asyncio.run(sessions.peek(created.id))
            peeked = asyncio.run_coroutine_threadsafe(sessions.peek(created.id), loop).result()
            assert peeked == created
            asyncio.run_coroutine_threadsafe(sessions.aclose(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
        assert sessions.sync.backend.async_closed == 1

    def test_a_manager_without_native_operations_runs_on_any_loop(self) -> None:
        """The memory backend holds no asyncio client: its manager keeps working across
        consecutive asyncio.run calls (the binding is the native path's)."""
        sessions = AsyncSessionManager(cleanup_interval=0)
        assert sessions.native_operations == frozenset()
        session = asyncio.run(sessions.create(metadata={"n": 1}))
        assert asyncio.run(sessions.fetch(session.id)).metadata == {"n": 1}
        asyncio.run(sessions.aclose())
        assert sessions.sync.closed


class TestWrappersAndMonitors:
    def test_a_counting_wrapper_sees_each_async_call_and_gets_the_awaitable(
        self, async_backends: None
    ) -> None:
        """A wrapper on the async hooks sees one call per hook call the native path makes, and
        receives the awaitable as the result (the backend's coroutine), not its value."""

        async def main() -> tuple[Counting, AsyncSessionManager]:
            counting = Counting()
            clock = ManualClock()
            async with _open(plugins=[counting], clock=clock) as sessions:
                session = await sessions.create(timeout_ms=600_000)
                await sessions.fetch(session.id)  # within the touch resolution: no touch
                clock.advance(2_000)
                await sessions.fetch(session.id)  # touches
                await sessions.update(session.id, lambda md: {"n": 1})
                await sessions.take(session.id)
            return counting, sessions

        counting, sessions = asyncio.run(main())
        assert {h: n for h, n in counting.calls.items()} == {
            "sessionkeeper_async_store": 1,
            "sessionkeeper_async_fetch": 3,
            "sessionkeeper_async_touch": 1,
            "sessionkeeper_async_store_if": 1,
            "sessionkeeper_async_take": 1,
        }
        assert all(asyncio.iscoroutine(result) for result in counting.results)
        assert sessions.sync.backend.async_calls == {
            "sessionkeeper_async_store": 1,
            "sessionkeeper_async_fetch": 3,
            "sessionkeeper_async_touch": 1,
            "sessionkeeper_async_store_if": 1,
            "sessionkeeper_async_take": 1,
        }

    def test_a_monitor_sees_the_async_calls_until_undone(self, async_backends: None) -> None:
        """``add_hookcall_monitoring`` on the manager's plugin manager sees each async hook the
        native path calls; once undone, the direct calls come back and it sees nothing more."""
        seen: list[str] = []

        def before(hook: str, impls: Any, kwargs: Any) -> None:
            seen.append(hook)

        def after(outcome: Any, hook: str, impls: Any, kwargs: Any) -> None:
            pass

        async def main() -> None:
            async with _open() as sessions:
                session = await sessions.create()
                undo = sessions.sync.plugin_manager.add_hookcall_monitoring(before, after)
                await sessions.peek(session.id)
                await sessions.delete(session.id)
                undo()
                await sessions.count()

        asyncio.run(main())
        assert seen == ["sessionkeeper_async_fetch", "sessionkeeper_async_delete"]


class TestSemantics:
    def test_racing_updates_in_one_loop_lose_nothing(self, async_backends: None) -> None:
        """50 tasks each adding 1 through update, interleaved between read and write by the
        backend's yield, leave exactly +50: conflicts were retried, none lost."""

        async def main() -> tuple[int, int]:
            async with _open() as sessions:
                session = await sessions.create(metadata={"n": 0})

                async def add_one() -> None:
                    await sessions.update(session.id, lambda md: {"n": md["n"] + 1}, attempts=100)

                await asyncio.gather(*(add_one() for _ in range(50)))
                final = await sessions.peek(session.id)
                return final.metadata["n"], final.version

        n, version = asyncio.run(main())
        assert (n, version) == (50, 51)

    def test_a_conditional_store_with_a_stale_version_conflicts(self, async_backends: None) -> None:
        """store(if_version=) on the native path refuses a stale version with VersionConflict
        naming the expected and actual versions, and writes nothing."""

        async def main() -> None:
            async with _open() as sessions:
                session = await sessions.create(metadata={"n": 0})
                await sessions.store(session.replace(metadata={"n": 1}), if_version=1)
                with pytest.raises(VersionConflict) as info:
                    await sessions.store(session.replace(metadata={"n": 2}), if_version=1)
                assert (info.value.expected, info.value.actual) == (1, 2)
                assert (await sessions.peek(session.id)).metadata == {"n": 1}

        asyncio.run(main())

    def test_a_backend_exception_is_a_storage_error_naming_the_backend(
        self, async_backends: None
    ) -> None:
        """An exception escaping an awaited hook surfaces as StorageError naming the backend and
        the operation, never as not found."""
        from sessionkeeper import StorageError

        class Failing:
            @hookimpl(wrapper=True)
            def sessionkeeper_async_fetch(self) -> Generator[None, Any, Any]:
                (yield).close()  # the backend's coroutine, replaced by one that fails

                async def fail() -> None:
                    raise ConnectionError("server gone")

                return fail()

        async def main() -> None:
            async with _open(plugins=[Failing()]) as sessions:
                with pytest.raises(StorageError, match=r"test-async.*fetch failed.*server gone"):
                    await sessions.fetch("some-id")

        asyncio.run(main())

    def test_after_aclose_every_operation_raises_manager_closed(self, async_backends: None) -> None:
        """Once closed, a native operation raises ManagerClosed (not an AttributeError, not a
        call on a closed client)."""

        async def main() -> None:
            sessions = _open()
            await sessions.aclose()
            with pytest.raises(ManagerClosed):
                await sessions.fetch("some-id")
            with pytest.raises(ManagerClosed):
                await sessions.update("some-id", lambda md: md)

        asyncio.run(main())

    @pytest.mark.parametrize(
        ("timeout_ms", "absolute_timeout_ms", "idle", "age"),
        [
            (10_000, None, 0, 0),
            (10_000, None, 1_000, 1_000),  # neither a tenth of the timeout nor the resolution
            (10_000, None, 1_001, 1_001),  # over both
            (10_000, None, 10_000, 10_000),  # the last live instant
            (10_000, None, 10_001, 10_001),  # expired
            (5_000, None, 501, 501),  # over a tenth of the timeout, under the resolution
            (None, None, 1_000, 1_000),
            (None, None, 1_001, 1_001),
            (None, None, 10**9, 10**9),
            (None, 3_000, 0, 3_000),  # the absolute limit's last live instant
            (None, 3_000, 0, 3_001),  # past it, however recent the access
            (600_000, 3_000, 2_000, 3_001),
        ],
    )
    def test_fetch_judges_expiry_and_touch_as_the_sync_manager_does(
        self,
        async_backends: None,
        timeout_ms: int | None,
        absolute_timeout_ms: int | None,
        idle: int,
        age: int,
    ) -> None:
        """The native fetch (SessionManager._accessed) and the sync fetch (the same rule written
        inline on its hot path) agree on every edge: not found, returned as stored, or touched
        to now."""
        clock = ManualClock(10**10)
        created, accessed = clock() - age, clock() - idle

        def outcome(fetched: Any) -> str:
            if isinstance(fetched, SessionNotFound):
                return "not found"
            return "touched" if fetched.last_accessed == clock() else "as stored"

        async def main() -> tuple[str, str]:
            async with _open(clock=clock, touch_resolution=1_000) as sessions:
                results = []
                for name in ("sync", "native"):
                    session = Session(
                        f"judged-{name}",
                        created,
                        accessed,
                        timeout_ms,
                        {},
                        absolute_timeout_ms=absolute_timeout_ms,
                    )
                    sessions.sync.backend.sessionkeeper_store(session)
                    try:
                        if name == "sync":
                            fetched: Any = sessions.sync.fetch(session.id)
                        else:
                            fetched = await sessions.fetch(session.id)
                    except SessionNotFound as exc:
                        fetched = exc
                    results.append(outcome(fetched))
                return results[0], results[1]

        sync, native = asyncio.run(main())
        assert native == sync

    def test_a_missing_session_is_not_found_on_every_read(self, async_backends: None) -> None:
        """fetch, peek, touch, take and rotate of an unknown id raise SessionNotFound naming it."""

        async def main() -> None:
            async with _open() as sessions:
                for operation in ("fetch", "peek", "touch", "take", "rotate"):
                    with pytest.raises(SessionNotFound) as info:
                        await getattr(sessions, operation)("nobody")
                    assert info.value.session_id == "nobody", operation

        asyncio.run(main())


class TestAsyncBackendConformance(AsyncConformance):
    """The async conformance class on the fully native test backend."""

    backend = "test-async"

    @pytest.fixture(autouse=True)
    def _installed(self, async_backends: None) -> None:
        """The test backends are installed for every test of the class."""


def test_every_async_hook_is_exercised(async_backends: None) -> None:
    """Every ``async_`` hook of the specification is called by a native operation (the memory
    backend has no batch hook, so store_many stores one by one through async_store), and
    ``sessionkeeper_async_close`` once by aclose."""

    async def main() -> tuple[dict[str, int], int]:
        clock = ManualClock()
        sessions = _open(clock=clock)
        async with sessions:
            session = await sessions.create(owner="u", timeout_ms=1_000)
            await sessions.store_many([session.replace(metadata={"a": 1})])
            await sessions.store(session)
            clock.advance(500)
            await sessions.touch(session.id)
            await sessions.update(session.id, lambda md: {"n": 1})
            rotated = await sessions.rotate(session.id)
            await sessions.list()
            await sessions.count()
            await sessions.list(owner="u")
            await sessions.count(owner="u")
            await sessions.take(rotated.id)
            await sessions.delete(rotated.id)
            await sessions.delete_owner("u")
            await sessions.cleanup_expired()
        backend = sessions.sync.backend
        return dict(backend.async_calls), backend.async_closed

    calls, closed = asyncio.run(main())
    assert set(calls) == {
        "sessionkeeper_async_store",
        "sessionkeeper_async_fetch",
        "sessionkeeper_async_touch",
        "sessionkeeper_async_delete",
        "sessionkeeper_async_list",
        "sessionkeeper_async_count",
        "sessionkeeper_async_cleanup_expired",
        "sessionkeeper_async_store_if",
        "sessionkeeper_async_take",
        "sessionkeeper_async_rotate",
        "sessionkeeper_async_list_owner",
        "sessionkeeper_async_count_owner",
        "sessionkeeper_async_delete_owner",
    }
    assert set(ASYNC_TWINS) - set(calls) == {"sessionkeeper_async_store_many"}
    assert closed == 1  # sessionkeeper_async_close
