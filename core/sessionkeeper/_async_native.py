"""The async manager's native path (issue 15): operations awaited on the backend's own asyncio
client, through its ``sessionkeeper_async_*`` hooks, with no thread.

pluggy calls are synchronous, so an async hook *returns an awaitable*: the manager calls it
through pluggy (wrappers and monitors see the call and the awaitable as its result) and awaits
what it returns. :class:`NativeOperations` holds, per async hook, the function to call: the
backend's own when it is the lone implementation and nothing monitors the calls, else pluggy's
dispatch (rebound whenever a plugin or a monitor comes or goes, as the sync manager does).

An operation is native when the backend implements the ``async_`` twin of every hook the
operation may call (``NATIVE_HOOKS`` of :mod:`sessionkeeper._async`) among those it implements
at all. Its semantics are the
sync manager's, step for step: the same validation, expiry, touch coalescing, version rules and
errors, from the same helpers of the sync manager (only the awaits are written here);
``update``'s retry loop is the one of
:class:`~sessionkeeper._concurrent.AsyncConcurrentOperations`, which calls :meth:`_update_once`
here for one attempt.

The backend's asyncio client belongs to one event loop: redis.asyncio connections and
psycopg's async pool are closed by coroutines awaited on their own loop (neither library offers
a close without one, and a loop that has ended runs nothing more). So the native operations bind
to the loop they first run on, and refuse any other with a ``RuntimeError`` that says what to
do, rather than make a new client per loop and leave the old one open. :meth:`aclose` on
another loop closes the rest and warns (``ResourceWarning``) that the client was left open.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from . import hookspecs
from ._concurrent import UpdateFunction, _as_stored, _owner_argument, _refuse_past_max
from ._dispatch import bind_hooks, hook_table
from ._errors import SessionKeeperError, SessionNotFound
from ._manager import _NO_ID, _STORE_TAKES
from ._model import Session, generate_id, validate_id

if TYPE_CHECKING:
    from ._manager import SessionManager

__all__ = ["NativeOperations", "async_close"]

log = logging.getLogger("sessionkeeper")

_ASYNC_CLOSE: Final = "sessionkeeper_async_close"

#: The async hooks :class:`NativeOperations` binds: ``sessionkeeper_async_fetch`` to
#: ``_afetch``, ... (see :func:`~sessionkeeper._dispatch.bind_hooks`).
_ASYNC_OPERATIONS: Final = hook_table(
    hookspecs.ASYNC_HOOKS.values(),
    lambda twin: "_a" + twin.removeprefix("sessionkeeper_async_"),
)


class NativeOperations:
    """The native operations of one :class:`~sessionkeeper.AsyncSessionManager` (see the module).

    Each public coroutine has the signature of the sync manager's method the async manager would
    otherwise run (``_update_once`` for one attempt of ``update``).
    """

    _afetch: Callable[[str], Awaitable[Session | None]]
    _atouch: Callable[[str, int], Awaitable[Session | None]]
    _astore: Callable[[Session], Awaitable[None]]
    _astore_many: Callable[[list[Session]], Awaitable[int | None]] | None
    _astore_if: Callable[[Session, int | None, int], Awaitable[Session | None]]
    _adelete: Callable[[str], Awaitable[bool | None]]
    _alist: Callable[[int], Awaitable[list[str] | None]]
    _acount: Callable[[int], Awaitable[int | None]]
    _acleanup_expired: Callable[[int], Awaitable[int | None]]
    _atake: Callable[[str, int], Awaitable[Session | None]]
    _arotate: Callable[[str, str, int], Awaitable[Session | None]]
    _alist_owner: Callable[[str, int], Awaitable[list[str] | None]]
    _acount_owner: Callable[[str, int], Awaitable[int | None]]
    _adelete_owner: Callable[[str], Awaitable[int | None]]

    def __init__(self, sync: SessionManager, operations: frozenset[str]) -> None:
        self.sync = sync
        #: The operations that run here.
        self.operations = operations
        self._closed = False
        #: The event loop the backend's asyncio client belongs to: the first one run on.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._binding = threading.Lock()
        self._rebind()
        sync.plugin_manager.add_listener(self._rebind)

    def _rebind(self) -> None:
        bind_hooks(self, self.sync.plugin_manager, _ASYNC_OPERATIONS, closed=self._closed)

    def on_loop(self) -> None:
        """Bind to the running event loop at the first native operation; raise a
        ``RuntimeError`` that says what to do when run on any other loop after that (see the
        module). The async manager calls it before every native operation."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        with self._binding:
            if self._loop is None:
                self._loop = loop
                return
        raise RuntimeError(
            f"this AsyncSessionManager ({self.sync.backend_name} backend) awaits the backend's "
            "asyncio client, which belongs to the event loop the manager first ran on"
            f"{' (now closed)' if self._loop.is_closed() else ''}; it cannot run on another "
            "loop. Open one manager per event loop: `await AsyncSessionManager.open(...)` in "
            "the coroutine that asyncio.run() runs (or `async with` it there), and aclose() it "
            "on that loop before the loop ends"
        )

    def table(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        """Operation -> the coroutine function that runs it natively (what ``_run`` dispatches)."""
        methods: dict[str, Callable[..., Awaitable[Any]]] = {
            "create": self.create,
            "store": self.store,
            "store_many": self.store_many,
            "fetch": self.fetch,
            "peek": self.peek,
            "touch": self.touch,
            "delete": self.delete,
            "list": self.list,
            "count": self.count,
            "list_owner": self.list,
            "count_owner": self.count,
            "update": self._update_once,
            "take": self.take,
            "rotate": self.rotate,
            "delete_owner": self.delete_owner,
            "cleanup_expired": self.cleanup_expired,
        }
        return {op: method for op, method in methods.items() if op in self.operations}

    async def aclose(self) -> None:
        """Call ``sessionkeeper_async_close`` (every plugin's, through pluggy), await what each
        returns, log what fails; then every native call raises ``ManagerClosed``. On a loop
        other than the client's, the client cannot be closed: warn (``ResourceWarning``) and
        leave it to the sync close, which drops it."""
        self._closed = True
        self._rebind()
        bound = self._loop
        if bound is None or bound is asyncio.get_running_loop():
            await async_close(self.sync)
            return
        warnings.warn(
            f"the asyncio client of the {self.sync.backend_name} backend belongs to the event "
            "loop the AsyncSessionManager first ran on, not to the one aclose() runs on: it "
            "is dropped without being closed (aclose() the manager on the loop that used it)",
            ResourceWarning,
            stacklevel=3,
        )

    # --- calls --------------------------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        function: Callable[..., Awaitable[Any]],
        *args: Any,
        session_id: object = _NO_ID,
    ) -> Any:
        """``await function(*args)``, an exception it raises made the error the sync manager
        raises (see :meth:`SessionManager._failure`)."""
        try:
            return await function(*args)
        except SessionKeeperError:
            raise
        except Exception as exc:
            raise self.sync._failure(operation, exc, session_id) from exc

    async def _stored(self, session_id: str, operation: str) -> Session:
        """:meth:`SessionManager._stored`, awaited."""
        session: Session | None = await self._call(
            operation, self._afetch, session_id, session_id=session_id
        )
        if session is None:
            raise self.sync._not_found(session_id)
        return session

    async def _write_touch(self, session_id: str, now: int, read: Session | None = None) -> Session:
        """:meth:`SessionManager._write_touch`, awaited."""
        if read is not None and self.sync.read_only:
            return read
        touched: Session | None = await self._call(
            "touch", self._atouch, session_id, now, session_id=session_id
        )
        if touched is None:
            raise SessionNotFound(session_id)
        return touched

    # --- operations ---------------------------------------------------------------------------

    async def create(self, *arguments: Any, **keywords: Any) -> Session:
        """:meth:`SessionManager.create` (its arguments), awaited."""
        session = self.sync._new_session(*arguments, **keywords)
        await self._call("create", self._astore, session)
        if self.sync._session_created is not None:
            self.sync._call("create", self.sync._session_created, session)
        return session

    async def store(self, session: Session, *, if_version: int | None = None) -> Session:
        # SessionManager.store and _store_versioned, awaited.
        sync = self.sync
        sync._check_session(session, _STORE_TAKES)
        if sync._atomic:
            if sync._look_before_store_if(session, if_version):
                current = await self._call("store", self._afetch, session.id)
                sync._refuse_live_at_max(session.id, current)
            stored = await self._call("store", self._astore_if, session, if_version, sync.clock())
            return _as_stored(session, stored)
        sync._refuse_condition(if_version)
        now = sync.clock()
        current = await self._call("store", self._afetch, session.id)
        counted = sync._counted(session, current, now)
        await self._call("store", self._astore, counted)
        return counted

    async def store_many(self, sessions: Iterable[Session]) -> int:
        batch = self.sync._batch(sessions)
        if not batch:
            return 0
        if self._astore_many is not None:
            await self._call("store_many", self._astore_many, list(batch.values()))
        else:
            for session in batch.values():
                await self._call("store_many", self._astore, session)
        return len(batch)

    async def fetch(self, session_id: str) -> Session:
        stats = self.sync._stats
        if stats is None:
            return await self._fetch(session_id)
        try:
            session = await self._fetch(session_id)
        except SessionNotFound:
            stats.record_fetch(hit=False)
            raise
        stats.record_fetch(hit=True)
        return session

    async def _fetch(self, session_id: str) -> Session:
        session = await self._stored(session_id, "fetch")
        now = self.sync.clock()
        if self.sync._accessed(session, now):
            return await self._write_touch(session_id, now, session)
        return session

    async def peek(self, session_id: str, *, include_expired: bool = False) -> Session:
        session = await self._stored(session_id, "peek")
        if not include_expired and session.is_expired(self.sync.clock()):
            raise SessionNotFound(session_id)
        return session

    async def touch(self, session_id: str) -> Session:
        session = await self._stored(session_id, "touch")
        now = self.sync.clock()
        if session.is_expired(now):
            raise SessionNotFound(session_id)
        return await self._write_touch(session_id, now)

    async def delete(self, session_id: str) -> bool:
        validate_id(session_id)
        return bool(await self._call("delete", self._adelete, session_id))

    async def list(self, owner: str | None = None) -> list[str]:
        if owner is not None:
            checked = _owner_argument(owner)
            ids = await self._call("list", self._alist_owner, checked, self.sync.clock())
        else:
            ids = await self._call("list", self._alist, self.sync.clock())
        return list(ids or ())

    async def count(self, owner: str | None = None) -> int:
        if owner is not None:
            checked = _owner_argument(owner)
            return int(
                await self._call("count", self._acount_owner, checked, self.sync.clock()) or 0
            )
        return int(await self._call("count", self._acount, self.sync.clock()) or 0)

    async def cleanup_expired(self) -> int:
        now = self.sync.clock()
        return int(await self._call("cleanup_expired", self._acleanup_expired, now) or 0)

    async def _update_once(self, session_id: str, fn: UpdateFunction) -> Session:
        """One attempt of ``update``: raises ``VersionConflict`` when it lost the race."""
        now = self.sync.clock()
        read = await self._stored(session_id, "update")
        changed = self.sync._updated(read, fn, now)
        stored = await self._call("update", self._astore_if, changed, read.version, now)
        return _as_stored(changed, stored)

    async def take(self, session_id: str) -> Session:
        sync = self.sync
        validate_id(session_id)
        sync._require_atomic()
        taken: Session | None = await self._call("take", self._atake, session_id, sync.clock())
        if taken is None:
            raise SessionNotFound(session_id)
        return taken

    async def rotate(self, session_id: str) -> Session:
        sync = self.sync
        validate_id(session_id)
        sync._require_atomic()
        current = await self._call("rotate", self._afetch, session_id)
        if current is not None:
            _refuse_past_max(session_id, current.version)
        rotated: Session | None = await self._call(
            "rotate", self._arotate, session_id, generate_id(), sync.clock()
        )
        if rotated is None:
            raise SessionNotFound(session_id)
        return rotated

    async def delete_owner(self, owner: str) -> int:
        checked = _owner_argument(owner)
        self.sync._require_atomic()
        return int(await self._call("delete_owner", self._adelete_owner, checked) or 0)


async def async_close(sync: SessionManager) -> None:
    """Call ``sessionkeeper_async_close`` through pluggy and await every awaitable returned,
    logging (by plugin) what fails instead of raising: closing goes on."""
    caller = getattr(sync.plugin_manager.hook, _ASYNC_CLOSE)
    if not caller.get_hookimpls():
        return
    try:
        results = caller()
    except Exception:
        log.exception("sessionkeeper_async_close of the %s backend failed", sync.backend_name)
        return
    for result in results:
        try:
            await result
        except Exception:
            log.exception("closing the async client of the %s backend failed", sync.backend_name)
