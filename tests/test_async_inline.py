"""AsyncSessionManager runs an operation on the event loop when the backend serves every hook it
may call without blocking, and in its worker threads otherwise (issue 15): decided per operation,
from the backend's ``sessionkeeper_inline_hooks`` answer."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper import AsyncSessionManager, Session
from sessionkeeper.backend import PluginValidationError, hookimpl
from sessionkeeper.testing import AsyncConformance

REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="-")


class Declares:
    """Answers ``sessionkeeper_inline_hooks`` (as a backend would) with the given names."""

    def __init__(self, names: Iterable[str] | object) -> None:
        self.names = names

    @hookimpl
    def sessionkeeper_inline_hooks(self) -> Any:
        return self.names


class Where:
    """A wrapper recording, per hook, the thread it ran in and the context variable seen."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, str]] = {}

    def _note(self, hook: str) -> None:
        self.seen[hook] = (threading.get_ident(), REQUEST.get())

    @hookimpl(wrapper=True)
    def sessionkeeper_fetch(self, session_id: str) -> Generator[None, Any, Any]:
        self._note("fetch")
        return (yield)

    @hookimpl(wrapper=True)
    def sessionkeeper_store(self, session: Session) -> Generator[None, Any, Any]:
        self._note("store")
        return (yield)


def sqlite_opts(tmp_path: Path) -> dict[str, Any]:
    return {"file_path": str(tmp_path / "s.sqlite"), "auto_save": 60_000}


class TestPerOperation:
    def test_declared_reads_run_on_the_loop_and_the_rest_in_a_worker(self, tmp_path: Path) -> None:
        """With fetch and touch declared inline on a blocking backend (sqlitedict), fetch and
        peek run on the event loop's thread; create (store, not declared) runs in a worker
        thread that sees the caller's context variables. Wrappers see both calls."""
        where = Where()

        async def main() -> tuple[int, AsyncSessionManager]:
            REQUEST.set("req-1")
            sessions = await AsyncSessionManager.open(
                "sqlitedict",
                sqlite_opts(tmp_path),
                cleanup_interval=0,
                plugins=[Declares({"sessionkeeper_fetch", "sessionkeeper_touch"}), where],
            )
            async with sessions:
                assert {"fetch", "peek", "touch"} <= sessions.inline_operations
                assert "create" not in sessions.inline_operations
                session = await sessions.create(metadata={"n": 1})
                assert (await sessions.fetch(session.id)).metadata == {"n": 1}
            return threading.get_ident(), sessions

        loop_thread, sessions = asyncio.run(main())
        assert where.seen["fetch"] == (loop_thread, "req-1")
        store_thread, context = where.seen["store"]
        assert store_thread != loop_thread
        assert context == "req-1"
        assert sessions.sync.closed

    def test_no_declaration_means_every_operation_in_a_worker(self, tmp_path: Path) -> None:
        """A blocking backend that declares nothing has no inline operation: fetch runs in a
        worker thread. (sqlitedict declares its in-memory hooks; an empty answer registered
        after it, so asked first, stands for a backend that declares nothing.)"""
        where = Where()

        async def main() -> int:
            async with await AsyncSessionManager.open(
                "sqlitedict",
                sqlite_opts(tmp_path),
                cleanup_interval=0,
                plugins=[Declares(()), where],
            ) as sessions:
                assert sessions.inline_operations == frozenset()
                await sessions.fetch((await sessions.create()).id)
            return threading.get_ident()

        loop_thread = asyncio.run(main())
        assert where.seen["fetch"][0] != loop_thread

    def test_memory_runs_everything_inline_and_starts_no_thread(self) -> None:
        """The memory backend (``blocking=False``) has every operation inline: no worker thread
        is ever started for it."""

        def ours() -> set[threading.Thread]:
            # Another test's worker threads may still be exiting: only count new ones.
            return {t for t in threading.enumerate() if t.name.startswith("sessionkeeper-")}

        async def main() -> None:
            before = ours()
            async with AsyncSessionManager("memory", cleanup_interval=0) as sessions:
                session = await sessions.create(owner="u")
                await sessions.update(session.id, lambda md: {"n": 1})
                assert await sessions.list(owner="u") == [session.id]
                assert sessions._executor is None
                assert ours() <= before
            assert {"fetch", "store", "update", "list_owner"} <= sessions.inline_operations

        asyncio.run(main())


class TestBadDeclarations:
    @pytest.mark.parametrize(
        ("answer", "match"),
        [
            ({"sessionkeeper_fetch", "fetch"}, r"names 'fetch', not hooks of the specification"),
            ("sessionkeeper_fetch", "not a collection of hook names"),
            (42, "not a collection of hook names"),
        ],
        ids=["unknown-name", "a-string", "an-int"],
    )
    def test_refused_naming_what_is_wrong(self, tmp_path: Path, answer: object, match: str) -> None:
        """An answer that is not a collection of hook names is a PluginValidationError naming
        the wrong name or type; the backend opened for it is closed again (the file can be
        opened at once by the next manager)."""
        with pytest.raises(PluginValidationError, match=match):
            AsyncSessionManager("sqlitedict", sqlite_opts(tmp_path), plugins=[Declares(answer)])

        async def reopen() -> None:
            sessions = await AsyncSessionManager.open(
                "sqlitedict", sqlite_opts(tmp_path), cleanup_interval=0
            )
            await sessions.aclose()

        asyncio.run(reopen())


class TestMemoryAsyncConformance(AsyncConformance):
    """The contract through AsyncSessionManager on memory: every operation inline."""

    backend = "memory"

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        return {"table_name": f"async-{tmp_path.name}"}


class TestSqlitedictIntervalAsyncConformance(AsyncConformance):
    """On sqlitedict in interval mode: its in-memory hooks inline, the rest in workers."""

    backend = "sqlitedict"

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        return sqlite_opts(tmp_path)


class TestSqlitedictDurableAsyncConformance(AsyncConformance):
    """On sqlitedict in durable mode: fetch inline, every write in a worker thread (tasks
    racing there reach the group commit together)."""

    backend = "sqlitedict"
    race_tasks = 10

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        return {"file_path": str(tmp_path / "s.sqlite"), "auto_save": 0}
