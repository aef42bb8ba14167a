"""Dispatch behaves as the docs say (issue 13).

Every hook call the manager makes reaches the wrapper plugins and the monitors added through
pluggy's public API; the direct calls of the fast path come back when they go; the operation table
is read from the hookspecs; the two managers are built from one settings object; the async manager
opens a blocking backend off the event loop; the stats plugin never reads the clock.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pluggy
import pytest

from sessionkeeper import (
    AsyncSessionManager,
    ConfigError,
    SessionManager,
    SessionNotFound,
    hookspecs,
)
from sessionkeeper._manager import _OPERATIONS
from sessionkeeper._settings import (
    CONFIG_KEYWORDS,
    OPTION_KEYWORDS,
    ManagerKeywords,
    OptionKeywords,
)
from sessionkeeper.backend import check_store, hookimpl
from sessionkeeper.testing import ManualClock, TickingClock

MakeDist = Callable[..., Path]

HOOKS = sorted(name for name in vars(hookspecs) if name.startswith("sessionkeeper_"))


class CountingWrapper:
    """A wrapper plugin on every hook of the specification (the methods are added below, one
    per hook, so a new hook is covered at once), counting the calls it sees by operation."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()


def _counting(hook: str) -> Any:
    # A wrapper may take none of the hook's arguments (pluggy passes those it names).
    @hookimpl(wrapper=True)
    def wrapper(self: CountingWrapper) -> Generator[None, Any, Any]:
        self.calls[hook.removeprefix("sessionkeeper_")] += 1
        return (yield)

    return wrapper


for _hook in HOOKS:
    setattr(CountingWrapper, _hook, _counting(_hook))


class Closer:
    """A plain plugin whose close is recorded in ``log`` (and raises when ``fail``)."""

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail = fail

    @hookimpl
    def sessionkeeper_close(self) -> None:
        self.log.append(self.name)
        if self.fail:
            raise RuntimeError(f"{self.name} cannot close")


class BrokenCloseWrapper:
    """A wrapper of sessionkeeper_close that raises before its yield (so pluggy calls nothing)."""

    def __init__(self) -> None:
        self.fail = True

    @hookimpl(wrapper=True)
    def sessionkeeper_close(self) -> Generator[None, Any, Any]:
        if self.fail:
            raise RuntimeError("the close wrapper fails")
        return (yield)


@attrs.define
class UnhashableAudit:
    """A plain plugin that is not hashable (attrs ``define`` with ``eq``), as pluggy allows."""

    closed: int = 0

    @hookimpl
    def sessionkeeper_close(self) -> None:
        self.closed += 1

    @hookimpl
    def sessionkeeper_stats(self) -> dict[str, Any]:
        return {"closed": self.closed}


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "sessions.sqlite"


class TestWrappersSeeEveryCall:
    def test_the_wrapper_covers_every_hook(self, manager: SessionManager) -> None:
        """The counting wrapper wraps every hook of the specification once registered, so the
        next test covers every hook the manager calls."""
        wrapper = CountingWrapper()
        manager.register(wrapper)
        hooks = manager.plugin_manager.hook
        wrapped = {
            name
            for name in HOOKS
            if any(impl.plugin is wrapper for impl in getattr(hooks, name).get_hookimpls())
        }
        assert wrapped == set(HOOKS)

    def test_a_wrapper_sees_every_hook_call_of_every_operation(
        self, sqlite_file: Path, clock: ManualClock
    ) -> None:
        """A wrapper registered on a manager sees each hook call the manager makes, one per
        call: open, every operation, identity, session_created (with no plain implementation),
        stats and close; and check_store's check when passed as a plugin (issue 13)."""
        wrapper = CountingWrapper()
        sessions = SessionManager(
            backend="sqlitedict",
            backend_opts={"file_path": str(sqlite_file)},
            cleanup_interval=0,
            clock=clock,
            plugins=[wrapper],
        )
        # inline_hooks is asked once at opening, after open (issue 15).
        assert wrapper.calls == {"open": 1, "inline_hooks": 1}
        session = sessions.create(timeout_ms=600_000)
        sessions.store(session)
        assert sessions.store_many([session.replace(metadata={"n": 1})]) == 1
        sessions.fetch(session.id)
        clock.advance(2_000)
        sessions.fetch(session.id)  # writes the touch back
        sessions.peek(session.id)
        sessions.touch(session.id)
        assert sessions.list() == [session.id]
        assert sessions.count() == 1
        assert [s.id for s in sessions.iter_sessions()] == [session.id]
        assert sessions.cleanup_expired() == 0
        assert sessions.identity() is not None
        assert sessions.stats()["live_sessions"] == 1
        assert sessions.delete(session.id)
        sessions.close()
        assert check_store(sessions.config, plugins=[wrapper]) is not None
        assert wrapper.calls == {
            "open": 1,
            "inline_hooks": 1,
            "store": 1,  # create(); store() on an ``atomic`` backend is one store_if
            "store_if": 1,
            "session_created": 1,
            "store_many": 1,
            "fetch": 4,
            "touch": 2,
            "list": 1,
            "count": 2,
            "iter_sessions": 1,
            "cleanup_expired": 1,
            "identity": 1,
            "stats": 1,
            "delete": 1,
            "close": 1,
            "check": 1,
        }

    def test_stats_wrapper_sees_the_figures_and_stats_keeps_the_names(
        self, manager: SessionManager
    ) -> None:
        """A wrapper of sessionkeeper_stats sees pluggy's result (every plugin's figures), and
        stats() still shows each plugin's figures under its name."""
        seen: list[Any] = []

        class Figures:
            @hookimpl
            def sessionkeeper_stats(self) -> dict[str, Any]:
                return {"answers": 42}

        class StatsWrapper:
            @hookimpl(wrapper=True)
            def sessionkeeper_stats(self) -> Generator[None, Any, Any]:
                result = yield
                seen.append(result)
                return result

        manager.register(Figures(), name="figures")
        manager.register(StatsWrapper())
        figures = manager.stats()
        assert figures["plugins"] == {"figures": {"answers": 42}}
        assert figures["backend_stats"]["stored"] == 0
        assert len(seen) == 1
        assert {"answers": 42} in seen[0]
        assert figures["backend_stats"] in seen[0]


class TestClose:
    def test_every_plugin_closes_last_first_even_when_one_raises(
        self, table_name: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """close() closes every plugin, the last registered first, in one call a wrapper sees;
        a plugin whose close raises is logged by name and the plugins after it still close."""
        closed: list[str] = []
        wrapper = CountingWrapper()
        sessions = SessionManager(
            backend_opts={"table_name": table_name},
            cleanup_interval=0,
            plugins=[Closer("first", closed), Closer("failing", closed, fail=True)],
        )
        sessions.register(Closer("last", closed), name="last")
        sessions.register(wrapper)
        with caplog.at_level(logging.ERROR, logger="sessionkeeper"):
            sessions.close()
        assert closed == ["last", "failing", "first"]
        assert wrapper.calls == {"close": 1}
        failures = [r for r in caplog.records if "closing plugin" in r.getMessage()]
        assert len(failures) == 1
        assert "failing cannot close" in (failures[0].exc_text or "")

    def test_a_close_wrapper_that_raises_does_not_keep_plugins_open(
        self, table_name: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A wrapper of sessionkeeper_close that raises before pluggy calls the implementations
        is logged, and every plugin is closed all the same, in the same order."""
        closed: list[str] = []
        sessions = SessionManager(
            backend_opts={"table_name": table_name},
            cleanup_interval=0,
            plugins=[Closer("a", closed), Closer("b", closed), BrokenCloseWrapper()],
        )
        with caplog.at_level(logging.ERROR, logger="sessionkeeper"):
            sessions.close()
        assert closed == ["b", "a"]
        assert "a wrapper of sessionkeeper_close" in caplog.text
        assert sessions.closed

    def test_an_unhashable_plugin_is_closed_and_counted(self, table_name: str) -> None:
        """A plugin pluggy accepts but that is not hashable still has its stats shown and is
        closed (wrappers of those two hooks then do not see the call: pluggy's subset caller
        needs hashable plugins)."""
        audit = UnhashableAudit()
        sessions = SessionManager(
            backend_opts={"table_name": table_name}, cleanup_interval=0, plugins=[audit]
        )
        assert sessions.stats()["plugins"] == {
            sessions.plugin_manager.get_name(audit): {"closed": 0}
        }
        sessions.close()
        assert audit.closed == 1


class Monitor:
    """``before`` and ``after`` for ``add_hookcall_monitoring``: the hook names seen."""

    def __init__(self) -> None:
        self.before: list[str] = []
        self.after: list[str] = []

    def on_before(self, name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        self.before.append(name)

    def on_after(
        self, outcome: pluggy.Result[Any], name: str, impls: Sequence[Any], kwargs: Any
    ) -> None:
        self.after.append(name)


class TestMonitors:
    def test_a_monitor_sees_fetch_store_stats_and_close(self, table_name: str) -> None:
        """A monitor added with the plugin manager's add_hookcall_monitoring sees every hook
        call, the fast-path operations (fetch, store) included, and stats and close (issue 13)."""
        sessions = SessionManager(backend_opts={"table_name": table_name}, cleanup_interval=0)
        monitor = Monitor()
        sessions.plugin_manager.add_hookcall_monitoring(monitor.on_before, monitor.on_after)
        session = sessions.create()
        sessions.fetch(session.id)
        sessions.store(session)
        sessions.stats()
        sessions.close()
        expected = [
            "sessionkeeper_store",
            "sessionkeeper_fetch",
            "sessionkeeper_store_if",  # store() on the atomic memory backend
            "sessionkeeper_count",
            "sessionkeeper_stats",
            "sessionkeeper_close",
        ]
        assert monitor.before == expected
        assert monitor.after == expected

    def test_undoing_the_monitor_restores_the_direct_calls(self, manager: SessionManager) -> None:
        """After the monitor's undo function is called, the monitor sees nothing more and every
        operation calls the backend's implementation directly again."""
        monitor = Monitor()
        undo = manager.plugin_manager.add_hookcall_monitoring(monitor.on_before, monitor.on_after)
        session = manager.create()
        assert manager._fetch != manager.backend.sessionkeeper_fetch
        undo()
        undo()  # a second undo changes nothing
        manager.fetch(session.id)
        manager.store(session)
        assert monitor.before == ["sessionkeeper_store"]
        for hook in hookspecs.REQUIRED_HOOKS:
            bound = getattr(manager, "_" + hook.removeprefix("sessionkeeper_"))
            assert bound == getattr(manager.backend, hook), hook

    def test_enable_tracing_traces_the_fast_path_until_undone(
        self, manager: SessionManager, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """pluggy's enable_tracing on the manager's plugin manager traces fetch to stderr; its
        undo function stops it."""
        session = manager.create()
        undo = manager.plugin_manager.enable_tracing()
        manager.fetch(session.id)
        assert "sessionkeeper_fetch" in capsys.readouterr().err
        undo()
        manager.fetch(session.id)
        assert "sessionkeeper_fetch" not in capsys.readouterr().err

    def test_two_monitors_keep_pluggy_until_both_are_undone(self, manager: SessionManager) -> None:
        """With two monitors, undoing the last one added leaves the first one seeing calls."""
        first, second = Monitor(), Monitor()
        pm = manager.plugin_manager
        pm.add_hookcall_monitoring(first.on_before, first.on_after)
        undo_second = pm.add_hookcall_monitoring(second.on_before, second.on_after)
        undo_second()
        manager.create()
        assert first.before == ["sessionkeeper_store"]
        assert second.before == []


class TestOperationTable:
    def test_operation_arguments_are_the_hookspecs(self, manager: SessionManager) -> None:
        """The table of bound operations names each hook's arguments exactly as its hookspec
        does (it is read from them), binds each to ``_<operation>``, and covers the required
        hooks and the two optional ones the manager calls per operation."""
        hooks = manager.plugin_manager.hook
        for name, (attribute, argnames) in _OPERATIONS.items():
            assert argnames == tuple(getattr(hooks, name).spec.argnames), name
            assert attribute == "_" + name.removeprefix("sessionkeeper_"), name
        assert {
            *hookspecs.REQUIRED_HOOKS,
            "sessionkeeper_store_many",
            "sessionkeeper_session_created",
        } <= set(_OPERATIONS)

    def test_a_lone_backend_is_called_directly(self, manager: SessionManager) -> None:
        """With nothing but the backend, every required operation is bound to the backend's own
        method (the fast path), and an optional hook nobody implements to nothing."""
        for hook in hookspecs.REQUIRED_HOOKS:
            bound = getattr(manager, "_" + hook.removeprefix("sessionkeeper_"))
            assert bound == getattr(manager.backend, hook), hook
        assert manager._store_many is None
        assert manager._session_created is None


class TestStatsReadsNoClock:
    def test_hits_and_misses_are_judged_at_the_fetchs_one_reading(self, table_name: str) -> None:
        """With stats on, a fetch reads the clock once and the stats plugin counts a hit or a
        miss as that reading judged it: a session live at the reading is returned and counted
        a hit, one expired at it raises and is counted a miss (issue 13)."""
        clock = TickingClock(start=1_000, step=1)
        with SessionManager(
            backend_opts={"table_name": table_name},
            stats=True,
            cleanup_interval=0,
            clock=clock,
        ) as sessions:
            session = sessions.create(timeout_ms=5)  # created at 1_000
            clock.set(1_005)  # idle 5 at the next reading: not over the timeout
            reads = clock.reads
            assert sessions.fetch(session.id).last_accessed == 1_005
            assert clock.reads - reads == 1
            clock.set(1_011)  # idle 6 since the touch at 1_005: expired
            with pytest.raises(SessionNotFound):
                sessions.fetch(session.id)
            counters = sessions.stats()["counters"]
        assert (counters["hits"], counters["misses"]) == (1, 1)
        assert counters["operations"]["fetch"]["calls"] == 2

    def test_the_atomic_operations_are_counted(self, table_name: str) -> None:
        """With stats on, a conditional store counts as stored, a take and each session of a
        delete_owner as deleted, and each has its latency summary (the atomic memory
        backend)."""
        with SessionManager(
            backend_opts={"table_name": table_name},
            stats=True,
            cleanup_interval=0,
            clock=ManualClock(),
        ) as sessions:
            sessions.create(owner="user_456")
            sessions.create(owner="user_456")
            single_use = sessions.create()
            sessions.store(single_use.replace(metadata={"v": 1}))
            assert sessions.take(single_use.id).id == single_use.id
            assert sessions.delete_owner("user_456") == 2
            counters = sessions.stats()["counters"]
        assert (counters["stored"], counters["deleted"]) == (4, 3)
        assert {"store_if", "take", "delete_owner"} <= set(counters["operations"])

    def test_an_unclosed_stats_manager_is_still_collected(self, table_name: str) -> None:
        """The counting fetch holds its manager weakly: a stats manager dropped without close()
        is collected and closed at once, without a garbage collection."""
        sessions = SessionManager(
            backend_opts={"table_name": table_name}, stats=True, cleanup_interval=0
        )
        with pytest.warns(ResourceWarning, match="was not closed"):
            del sessions


class TestSettings:
    def test_the_constructor_keywords_are_the_settings_fields(self) -> None:
        """The keywords both constructors take (ManagerKeywords) are exactly the Config keys
        other than backend, backend_opts and source, and the ManagerOptions fields."""
        keys = ManagerKeywords.__required_keys__ | ManagerKeywords.__optional_keys__
        assert keys == CONFIG_KEYWORDS | OPTION_KEYWORDS
        options = OptionKeywords.__required_keys__ | OptionKeywords.__optional_keys__
        assert options == OPTION_KEYWORDS

    def test_both_managers_build_the_same_settings(self, table_name: str, tmp_path: Path) -> None:
        """Given every keyword, the sync and the async manager end with equal Config and
        ManagerOptions (the async one's sync manager leaves scheduling to the task)."""
        clock = ManualClock()
        keywords: dict[str, Any] = {
            "cleanup_interval": 5_000,
            "touch_resolution": 10,
            "default_timeout": None,
            "max_metadata_bytes": 1_000,
            "stats": True,
            "plugins": [],
            "clock": clock,
            "read_only": False,
            "base_dir": tmp_path,
            "schedule": False,
        }
        with SessionManager("memory", {"table_name": table_name}, **keywords) as sync:
            asynchronous = AsyncSessionManager("memory", {"table_name": table_name}, **keywords)
            try:
                assert asynchronous.config == sync.config
                assert asynchronous.sync.options == sync.options
                assert sync.config.default_timeout is None
                assert sync.options.base_dir == tmp_path
                assert sync.clock is clock
            finally:
                asyncio.run(asynchronous.aclose())

    @pytest.mark.parametrize("build", [SessionManager, AsyncSessionManager])
    def test_an_unknown_keyword_is_a_type_error_naming_it(self, build: Any) -> None:
        """A misspelt keyword is a TypeError naming it and the constructor, nothing opened."""
        with pytest.raises(TypeError, match=r"\(\) got an unexpected keyword argument 'cleanup'"):
            build(cleanup=5)

    def test_a_bad_value_names_the_key(self) -> None:
        """A keyword with a bad value is a ConfigError naming the key."""
        with pytest.raises(ConfigError, match="touch_resolution"):
            SessionManager(touch_resolution=-1)

    def test_from_settings_refuses_a_config_keyword(self) -> None:
        """from_settings takes only the options a file cannot give; a config key is named."""
        from sessionkeeper import Config

        with pytest.raises(TypeError, match="'stats'"):
            SessionManager.from_settings(Config(), stats=True)  # type: ignore[call-arg]

    def test_schedule_false_starts_no_cleanup(self, table_name: str) -> None:
        """schedule=False leaves cleanup to the caller in both managers: no thread, no task."""
        with SessionManager(
            backend_opts={"table_name": table_name}, cleanup_interval=5, schedule=False
        ) as sessions:
            assert "scheduler" not in sessions.stats()

        async def scenario() -> bool:
            async with AsyncSessionManager(
                backend_opts={"table_name": table_name}, cleanup_interval=5, schedule=False
            ) as sessions:
                return sessions._task is None

        assert asyncio.run(scenario())


BLOCKING_OPEN = """
import threading
from sessionkeeper.backend import Capabilities, hookimpl
from sk_stub_backend import StubBackend

entered = threading.Event()
gate = threading.Event()
opened_in: list[int] = []

class BlockingOpen(StubBackend):
    capabilities = Capabilities(persistent=True, blocking=True)

    @hookimpl
    def sessionkeeper_open(self):
        opened_in.append(threading.get_ident())
        entered.set()
        if not gate.wait(timeout=30):
            raise RuntimeError("the event loop never let the open finish")
"""


@pytest.fixture
def blocking_open(
    make_dist: MakeDist, stub_backend: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A backend (entry point ``blocking-open``) whose open blocks until the test's ``gate`` is
    set; the module is returned so the test can see ``entered``, ``gate`` and ``opened_in``."""
    make_dist(
        "sk-blocking-open",
        {"sk_blocking_open": BLOCKING_OPEN},
        {"sessionkeeper.backends": {"blocking-open": "sk_blocking_open:BlockingOpen"}},
    )
    import sk_blocking_open  # type: ignore[import-not-found]

    yield sk_blocking_open
    sk_blocking_open.gate.set()
    sys.modules.pop("sk_blocking_open", None)


class TestAsyncOpen:
    def test_open_leaves_the_event_loop_free_while_the_backend_opens(
        self, blocking_open: Any
    ) -> None:
        """AsyncSessionManager.open() opens a blocking backend in a worker thread: while its
        open waits, the event loop runs the coroutine that lets it finish (issue 13)."""

        async def scenario() -> tuple[int, int]:
            opening = asyncio.create_task(
                AsyncSessionManager.open(backend="blocking-open", cleanup_interval=0)
            )
            assert await asyncio.to_thread(blocking_open.entered.wait, 30)
            blocking_open.gate.set()  # runs on the loop, while the open is still waiting
            async with await opening as sessions:
                assert await sessions.count() == 0
            return blocking_open.opened_in[0], threading.get_ident()

        opened_in, loop_thread = asyncio.run(scenario())
        assert opened_in != loop_thread

    def test_open_config_reads_the_file_and_opens_off_the_loop(self, tmp_path: Path) -> None:
        """AsyncSessionManager.open_config() opens the store a config file names (a real
        sqlitedict file) and the manager works."""
        config = tmp_path / "sessionkeeper.toml"
        config.write_text(
            '[sessionkeeper]\nbackend = "sqlitedict"\ncleanup_interval = 0\n'
            '[sessionkeeper.backend_opts]\nfile_path = "s.sqlite"\n'
        )

        async def scenario() -> dict[str, Any]:
            async with await AsyncSessionManager.open_config(config) as sessions:
                session = await sessions.create(metadata={"k": "v"})
                return (await sessions.fetch(session.id)).metadata

        assert asyncio.run(scenario()) == {"k": "v"}
        assert (tmp_path / "s.sqlite").exists()

    def test_open_names_an_unknown_keyword(self) -> None:
        """open() checks its keywords as the constructor does."""
        with pytest.raises(TypeError, match=r"AsyncSessionManager\.open\(\)"):
            asyncio.run(AsyncSessionManager.open(cleanup=5))  # type: ignore[call-arg]
