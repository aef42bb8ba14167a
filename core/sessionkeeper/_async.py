"""The :class:`AsyncSessionManager`: the same operations as coroutines, for asyncio servers."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, Unpack

import attrs

from . import hookspecs
from ._async_native import NativeOperations, async_close
from ._concurrent import AsyncConcurrentOperations
from ._config import Config, load_config
from ._dispatch import backend_hooks
from ._manager import DEFAULT, SessionManager, _Default
from ._model import Session
from ._settings import (
    ManagerKeywords,
    ManagerOptions,
    OptionKeywords,
    options_from_keywords,
    settings_from_keywords,
)

__all__ = ["AsyncSessionManager"]

log = logging.getLogger("sessionkeeper")
P = ParamSpec("P")
R = TypeVar("R")

#: Worker threads of one async manager for the operations that may block: enough for a durable
#: backend's group commit to gather several writers, few enough to stay cheap (a backend whose
#: writes join its group commit natively, as sqlitedict's durable mode does, gathers every
#: waiting task instead). Threads start on the first operation that needs one (a manager whose
#: operations are all inline or native starts none).
WORKERS: Final = 8

_ASYNC_CLOSE: Final = "sessionkeeper_async_close"

#: The backend hooks each operation of the async manager may call (without the prefix
#: ``sessionkeeper_``). It runs on the event loop when the backend declares every one of them
#: inline (:func:`~sessionkeeper.hookspecs.sessionkeeper_inline_hooks`), else in a worker.
OPERATION_HOOKS: Final[dict[str, tuple[str, ...]]] = {
    "create": ("store",),
    "store": ("fetch", "store", "store_if"),
    "store_many": ("store", "store_many"),
    "fetch": ("fetch", "touch"),
    "peek": ("fetch",),
    "touch": ("fetch", "touch"),
    "delete": ("delete",),
    "list": ("list",),
    "count": ("count",),
    "list_owner": ("list_owner", "iter_sessions"),
    "count_owner": ("count_owner", "iter_sessions"),
    "update": ("fetch", "store_if"),
    "take": ("take",),
    "rotate": ("fetch", "rotate"),
    "delete_owner": ("delete_owner",),
    "cleanup_expired": ("cleanup_expired",),
    "iter_sessions": ("iter_sessions",),
    "identity": ("identity",),
    "stats": ("count", "stats"),
    "close": ("close",),
}


#: The operations that may be awaited on the backend's ``sessionkeeper_async_*`` hooks, with the
#: hooks each calls on that path: those of :data:`OPERATION_HOOKS` but the scan of
#: ``iter_sessions`` (no async twin) by which the owner reads stand in for a missing owner index.
NATIVE_HOOKS: Final[dict[str, tuple[str, ...]]] = {
    operation: tuple(hook for hook in hooks if hook != "iter_sessions")
    for operation, hooks in OPERATION_HOOKS.items()
    if operation not in ("iter_sessions", "identity", "stats", "close")
}


def native_operations(implemented: frozenset[str]) -> frozenset[str]:
    """The operations of :data:`NATIVE_HOOKS` that run natively on a backend implementing the
    hooks ``implemented``: it implements the ``async_`` twin of each of the operation's hooks
    that it implements, and of one at least (``list_owner`` without an owner index scans
    ``iter_sessions``: it stays in a worker thread)."""
    return frozenset(
        operation
        for operation, hooks in NATIVE_HOOKS.items()
        if (present := ["sessionkeeper_" + h for h in hooks if "sessionkeeper_" + h in implemented])
        and all(hookspecs.ASYNC_HOOKS[hook] in implemented for hook in present)
    )


def inline_operations(inline_hooks: frozenset[str]) -> frozenset[str]:
    """The operations of :data:`OPERATION_HOOKS` whose every hook is in ``inline_hooks``."""
    return frozenset(
        operation
        for operation, hooks in OPERATION_HOOKS.items()
        if all("sessionkeeper_" + hook in inline_hooks for hook in hooks)
    )


class AsyncSessionManager(AsyncConcurrentOperations):
    """:class:`~sessionkeeper.SessionManager`'s operations as coroutines.

    Each operation takes one of three paths, chosen per operation when the manager opens:
    *native*, awaited on the backend's asyncio client when it implements the ``async_`` twin of
    every hook the operation calls (:attr:`native_operations`); *inline*, a plain call on the
    event loop when the backend serves every hook it may call without blocking
    (:func:`~sessionkeeper.hookspecs.sessionkeeper_inline_hooks`; every hook of a backend with
    ``blocking=False``, such as the memory backend; :attr:`inline_operations`); otherwise in one
    of the manager's few worker threads, so the event loop never waits on I/O. The cleanup
    scheduler is an
    asyncio task, started on ``async with`` (or :meth:`start`) and cancelled by :meth:`aclose`::

        async with await AsyncSessionManager.open(backend="memory") as sessions:
            s = await sessions.create(metadata={"user_id": "user_456"})
            await sessions.fetch(s.id)

    A manager whose native operations await an asyncio client (a backend that releases one in
    ``sessionkeeper_async_close``) belongs to one event loop: it runs on the first loop it
    runs them on, and raises a ``RuntimeError`` saying so on any other (open one manager per
    loop, and ``aclose()`` it on its loop). Any other manager runs on any loop.

    Opening the store may wait on I/O too (a file, a lock, a server): :meth:`open` and
    :meth:`open_config` open it in a worker thread, so call them from a running event loop. The
    constructor (same arguments as :class:`~sessionkeeper.SessionManager`'s, ``schedule``
    meaning the cleanup task) and :meth:`from_config` open it in the calling thread: use them
    before the loop starts, or for the memory backend.
    """

    def __init__(
        self,
        backend: str = "memory",
        backend_opts: Mapping[str, Any] | None = None,
        **keywords: Unpack[ManagerKeywords],
    ) -> None:
        config, options = settings_from_keywords(
            backend, backend_opts, keywords, named_by="AsyncSessionManager()"
        )
        self._adopt(SessionManager._open(config, _unscheduled(options)), options)

    @classmethod
    def from_config(
        cls, path: str | os.PathLike[str] | None = None, **options: Unpack[OptionKeywords]
    ) -> AsyncSessionManager:
        """Open the manager a config file describes (lookup order of :func:`load_config`), in
        the calling thread; :meth:`open_config` is the same off the event loop."""
        return cls._open(
            load_config(path, named_by="AsyncSessionManager.from_config()"),
            options_from_keywords(options, named_by="AsyncSessionManager.from_config()"),
        )

    @classmethod
    async def open(
        cls,
        backend: str = "memory",
        backend_opts: Mapping[str, Any] | None = None,
        **keywords: Unpack[ManagerKeywords],
    ) -> AsyncSessionManager:
        """Open a manager (the constructor's arguments) in a worker thread: the event loop goes
        on serving while the backend is imported, built and opened (a file locked, a server
        connected)."""
        config, options = settings_from_keywords(
            backend, backend_opts, keywords, named_by="AsyncSessionManager.open()"
        )
        return await asyncio.to_thread(cls._open, config, options)

    @classmethod
    async def open_config(
        cls, path: str | os.PathLike[str] | None = None, **options: Unpack[OptionKeywords]
    ) -> AsyncSessionManager:
        """:meth:`from_config` in a worker thread (the file is read there too)."""
        settings = options_from_keywords(options, named_by="AsyncSessionManager.open_config()")

        def open_file() -> AsyncSessionManager:
            config = load_config(path, named_by="AsyncSessionManager.open_config()")
            return cls._open(config, settings)

        return await asyncio.to_thread(open_file)

    @classmethod
    def _open(cls, config: Config, options: ManagerOptions) -> AsyncSessionManager:
        self = cls.__new__(cls)
        self._adopt(SessionManager._open(config, _unscheduled(options)), options)
        return self

    def _adopt(self, sync: SessionManager, options: ManagerOptions) -> None:
        self.sync = sync
        self._schedule = options.schedule
        self._task: asyncio.Task[None] | None = None
        self._sweeping = asyncio.Lock()  # binds to a loop at first use, not here
        self._executor: ThreadPoolExecutor | None = None
        # A lone async hook was refused by the sync manager (_check_backend_hooks).
        implemented = backend_hooks(sync)
        native = native_operations(implemented)
        self._native: NativeOperations | None = NativeOperations(sync, native) if native else None
        #: Operation -> its native coroutine (the backend's ``async_`` hooks), for :meth:`_run`.
        self._natives = self._native.table() if self._native is not None else {}
        #: Called before each native operation: binds the manager to its first loop when the
        #: backend holds something of a loop's (an asyncio client, released by its
        #: ``sessionkeeper_async_close``); a backend without that hook runs on any loop.
        self._on_loop = (
            self._native.on_loop
            if self._native is not None and _ASYNC_CLOSE in implemented
            else _anywhere
        )
        #: The operations awaited on the backend's asyncio client (its ``async_`` hooks).
        self.native_operations: frozenset[str] = native
        #: The operations that run on the event loop as plain calls (the others, neither native
        #: nor inline, go to the worker threads).
        self.inline_operations = inline_operations(sync.inline_hooks) - native
        # The hottest operations, when inline: a coroutine that calls the sync manager's
        # method bound once here, with no check or lookup per call (it shadows the method).
        if "fetch" in self.inline_operations:
            setattr(self, "fetch", _inline_fetch(sync.fetch))  # noqa: B010
        if "store" in self.inline_operations:
            setattr(self, "store", _inline_store(sync.store))  # noqa: B010

    @property
    def config(self) -> Config:
        return self.sync.config

    @property
    def backend_name(self) -> str:
        return self.sync.backend_name

    async def _run(
        self, operation: str, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """``function(*args, **kwargs)``: on the loop when ``operation`` is inline; natively
        (the coroutine of :class:`~sessionkeeper._async_native.NativeOperations` with the same
        signature) when it is native; else in a worker thread (with the caller's context
        variables, as :func:`asyncio.to_thread`)."""
        if operation in self.inline_operations:
            return function(*args, **kwargs)
        native = self._natives.get(operation)
        if native is not None:
            self._on_loop()
            result: R = await native(*args, **kwargs)
            return result
        return await self._hop(function, *args, **kwargs)

    async def _hop(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        executor = self._executor
        if executor is None:
            executor = self._executor = ThreadPoolExecutor(
                WORKERS, thread_name_prefix=f"sessionkeeper-{self.backend_name}"
            )
        call = functools.partial(contextvars.copy_context().run, function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(executor, call)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the cleanup task on the running loop (``async with`` does it for you)."""
        interval = self.config.cleanup_interval
        if self._task is None and self._schedule and interval and not self.sync.read_only:
            self._task = asyncio.get_running_loop().create_task(
                self._cleanup_loop(interval / 1000), name="sessionkeeper-cleanup"
            )

    async def _cleanup_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.cleanup_expired()
            except Exception:
                log.exception("scheduled cleanup failed; retrying in %.3f s", interval)

    async def aclose(self) -> None:
        """Cancel the cleanup task, close the backend's asyncio client (its
        ``sessionkeeper_async_close``, on this loop) and then the backend."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._native is not None:
            self._natives = {}  # the closed sync manager raises ManagerClosed from now on
            await self._native.aclose()
        elif not self.sync.closed:
            await async_close(self.sync)  # a plugin other than the backend may hold one
        try:
            await self._run("close", self.sync.close)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False)  # idle now: nothing waits on the loop
                self._executor = None

    async def __aenter__(self) -> AsyncSessionManager:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- operations --------------------------------------------------------------------------

    async def create(
        self,
        timeout_ms: int | _Default | None = DEFAULT,
        metadata: Mapping[str, Any] | None = None,
        *,
        owner: str | None = None,
        absolute_timeout_ms: int | None = None,
    ) -> Session:
        """See :meth:`SessionManager.create`."""
        return await self._run(
            "create",
            self.sync.create,
            timeout_ms,
            metadata,
            owner=owner,
            absolute_timeout_ms=absolute_timeout_ms,
        )

    async def store(self, session: Session, *, if_version: int | None = None) -> Session:
        """See :meth:`SessionManager.store`."""
        return await self._run("store", self.sync.store, session, if_version=if_version)

    async def store_many(self, sessions: Iterable[Session]) -> int:
        """See :meth:`SessionManager.store_many`."""
        return await self._run("store_many", self.sync.store_many, list(sessions))

    async def fetch(self, session_id: str) -> Session:
        """See :meth:`SessionManager.fetch`."""
        native = self._natives.get("fetch")
        if native is not None:
            self._on_loop()
            session: Session = await native(session_id)
            return session
        return await self._hop(self.sync.fetch, session_id)

    async def peek(self, session_id: str, *, include_expired: bool = False) -> Session:
        """See :meth:`SessionManager.peek`."""
        return await self._run("peek", self.sync.peek, session_id, include_expired=include_expired)

    async def touch(self, session_id: str) -> Session:
        """See :meth:`SessionManager.touch`."""
        return await self._run("touch", self.sync.touch, session_id)

    async def delete(self, session_id: str) -> bool:
        """See :meth:`SessionManager.delete`."""
        return await self._run("delete", self.sync.delete, session_id)

    async def list(self, owner: str | None = None) -> list[str]:
        """See :meth:`SessionManager.list`."""
        return await self._run("list" if owner is None else "list_owner", self.sync.list, owner)

    async def count(self, owner: str | None = None) -> int:
        """See :meth:`SessionManager.count`."""
        return await self._run("count" if owner is None else "count_owner", self.sync.count, owner)

    async def cleanup_expired(self) -> int:
        """See :meth:`SessionManager.cleanup_expired`."""
        async with self._sweeping:
            return await self._run("cleanup_expired", self.sync.cleanup_expired)

    async def identity(self) -> str | None:
        """See :meth:`SessionManager.identity`."""
        return await self._run("identity", self.sync.identity)

    async def stats(self) -> dict[str, Any]:
        """See :meth:`SessionManager.stats`."""
        return await self._run("stats", self.sync.stats)

    async def iter_sessions(
        self, *, include_expired: bool = False, batch_size: int = 1000
    ) -> AsyncIterator[Session]:
        """Every stored session (see :meth:`SessionManager.iter_sessions`), read in batches."""
        sessions = self.sync.iter_sessions(include_expired=include_expired)
        while batch := await self._run(
            "iter_sessions", list, itertools.islice(sessions, batch_size)
        ):
            for session in batch:
                yield session


def _inline_fetch(fetch: Callable[[str], Session]) -> Callable[[str], Awaitable[Session]]:
    """:meth:`AsyncSessionManager.fetch` of an inline ``fetch``: the sync manager's ``fetch``
    awaited with nothing around it (it measured 1.5x the sync call through the method and its
    per-call check, against the 0.07-0.12 us of the coroutine alone)."""

    async def inline(session_id: str) -> Session:
        return fetch(session_id)

    inline.__doc__ = AsyncSessionManager.fetch.__doc__
    return inline


def _inline_store(store: Callable[..., Session]) -> Callable[..., Awaitable[Session]]:
    """:meth:`AsyncSessionManager.store` of an inline ``store`` (see :func:`_inline_fetch`)."""

    async def inline(session: Session, *, if_version: int | None = None) -> Session:
        if if_version is None:
            return store(session)
        return store(session, if_version=if_version)

    inline.__doc__ = AsyncSessionManager.store.__doc__
    return inline


def _anywhere() -> None:
    """The loop check of a manager without native operations: it runs on any loop."""


def _unscheduled(options: ManagerOptions) -> ManagerOptions:
    """The sync manager's options: its thread scheduler off (the async manager runs a task)."""
    return attrs.evolve(options, schedule=False)
