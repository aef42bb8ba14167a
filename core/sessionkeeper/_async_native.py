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
errors, from the same helpers; ``update``'s retry loop is the one of
:class:`~sessionkeeper._concurrent.AsyncConcurrentOperations`, which calls :meth:`_update_once`
here for one attempt.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from . import hookspecs
from ._concurrent import (
    MAX_VERSION,
    UpdateFunction,
    _as_stored,
    _owner_argument,
    _refuse_past_max,
    check_if_version,
)
from ._errors import (
    InvalidSession,
    PluginValidationError,
    SessionKeeperError,
    SessionNotFound,
    Unsupported,
)
from ._manager import DEFAULT, _closed, _Default, _plain_impls, _via_pluggy
from ._model import (
    PackedMetadata,
    Session,
    check_absolute_timeout,
    check_owner,
    check_timeout,
    generate_id,
    pack_metadata,
    validate_id,
)

if TYPE_CHECKING:
    from ._manager import SessionManager

__all__ = ["NativeOperations", "async_close", "backend_hooks", "check_async_twins"]

log = logging.getLogger("sessionkeeper")

_PREFIX: Final = "sessionkeeper_"
_ASYNC_CLOSE: Final = "sessionkeeper_async_close"


def backend_hooks(sync: SessionManager) -> frozenset[str]:
    """The hooks the manager's backend implements itself (not a wrapper's, not another plugin's)."""
    pm = sync.plugin_manager
    return frozenset(
        name
        for name in vars(hookspecs)
        if name.startswith(_PREFIX)
        and any(
            impl.plugin is sync.backend and not (impl.wrapper or impl.hookwrapper)
            for impl in getattr(pm.hook, name).get_hookimpls()
        )
    )


def check_async_twins(backend: str, implemented: frozenset[str]) -> None:
    """Refuse a backend that implements an ``async_`` hook without its sync twin (the sync
    manager, and the async one where an operation is not native, call the sync hook)."""
    alone = sorted(
        twin
        for hook, twin in hookspecs.ASYNC_HOOKS.items()
        if twin in implemented and hook not in implemented
    )
    if alone:
        pairs = ", ".join(
            f"{twin} without {_PREFIX}{twin.removeprefix(_PREFIX + 'async_')}" for twin in alone
        )
        raise PluginValidationError(
            backend,
            f"implements {pairs}: an async hook is the twin of a sync hook, which the sync "
            "manager calls; implement both",
        )


def _binding(caller: Any, argnames: tuple[str, ...], monitored: bool) -> Callable[..., Any] | None:
    """What to call for one ``async_`` hook: the lone plain implementation directly, when
    pluggy would call exactly that function with those arguments; else pluggy's dispatch; ``None``
    when nothing implements it plainly (the operation is then not native)."""
    impls = caller.get_hookimpls()
    if not _plain_impls(caller):
        return None
    if len(impls) == 1 and not monitored and tuple(impls[0].argnames) == argnames:
        function: Callable[..., Any] = impls[0].function
        return function
    return _via_pluggy(caller, argnames)


#: The async hooks :class:`NativeOperations` binds, with the argument names they pass.
_ARGNAMES: Final = {
    twin: tuple(inspect.signature(getattr(hookspecs, twin)).parameters)
    for twin in hookspecs.ASYNC_HOOKS.values()
}


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
        self._rebind()
        sync.plugin_manager.add_listener(self._rebind)

    def _rebind(self) -> None:
        pm = self.sync.plugin_manager
        monitored = pm.monitored
        for twin, argnames in _ARGNAMES.items():
            attribute = "_a" + twin.removeprefix(_PREFIX + "async_")
            function = (
                _closed if self._closed else _binding(getattr(pm.hook, twin), argnames, monitored)
            )
            setattr(self, attribute, function)

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
        returns, log what fails; then every native call raises ``ManagerClosed``."""
        self._closed = True
        self._rebind()
        await async_close(self.sync)

    # --- calls --------------------------------------------------------------------------------

    async def _call(
        self, operation: str, function: Callable[..., Awaitable[Any]], *args: Any
    ) -> Any:
        try:
            return await function(*args)
        except SessionKeeperError:
            raise
        except Exception as exc:
            raise self.sync._failure(operation, exc) from exc

    async def _stored(self, session_id: str, operation: str) -> Session:
        sync = self.sync
        try:
            session = await self._afetch(session_id)
        except SessionKeeperError:
            raise
        except Exception as exc:
            raise sync._failure(operation, exc, session_id) from exc
        if session is None:
            raise sync._not_found(session_id)
        return session

    async def _write_touch(self, session_id: str, now: int, read: Session | None = None) -> Session:
        sync = self.sync
        if read is not None and sync.read_only:
            return read
        try:
            touched = await self._atouch(session_id, now)
        except SessionKeeperError:
            raise
        except Exception as exc:
            raise sync._failure("touch", exc, session_id) from exc
        if touched is None:
            raise SessionNotFound(session_id)
        return touched

    # --- operations ---------------------------------------------------------------------------

    async def create(
        self,
        timeout_ms: int | _Default | None = DEFAULT,
        metadata: Mapping[str, Any] | None = None,
        *,
        owner: str | None = None,
        absolute_timeout_ms: int | None = None,
    ) -> Session:
        sync = self.sync
        session = new_session(sync, timeout_ms, metadata, owner, absolute_timeout_ms)
        try:
            await self._astore(session)
            if sync._session_created is not None:
                sync._session_created(session)
        except SessionKeeperError:
            raise
        except Exception as exc:
            raise sync._failure("create", exc) from exc
        return session

    async def store(self, session: Session, *, if_version: int | None = None) -> Session:
        sync = self.sync
        if type(session) is not Session:
            raise InvalidSession(
                "session", f"store() takes a sessionkeeper.Session, got {type(session).__name__}"
            )
        sync._check_size(session._metadata)
        if sync._atomic:
            if if_version is not None:
                check_if_version(if_version)
                _refuse_past_max(session.id, if_version)
            elif session.version >= MAX_VERSION:
                current = await self._call("store", self._afetch, session.id)
                if current is not None and not current.is_expired(sync.clock()):
                    _refuse_past_max(session.id, current.version)
            stored = await self._call("store", self._astore_if, session, if_version, sync.clock())
            return stored if type(stored) is Session else _as_stored(session, stored)
        if if_version is not None:
            check_if_version(if_version)
            raise Unsupported(sync.backend_name)
        now = sync.clock()
        current = await self._call("store", self._afetch, session.id)
        if current is None or current.is_expired(now):
            version = 1
        else:
            _refuse_past_max(session.id, current.version)
            version = current.version + 1
        stored = session if session.version == version else session.with_version(version)
        await self._call("store", self._astore, stored)
        return stored

    async def store_many(self, sessions: Iterable[Session]) -> int:
        sync = self.sync
        batch: dict[str, Session] = {}
        for session in sessions:
            if type(session) is not Session:
                raise InvalidSession(
                    "session",
                    "store_many() takes sessionkeeper.Session objects, got "
                    f"{type(session).__name__}",
                )
            sync._check_size(session._metadata)
            batch[session.id] = session
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
        # SessionManager.fetch's rules (the sync manager writes them inline: its hot path).
        sync = self.sync
        session = await self._stored(session_id, "fetch")
        now = sync.clock()
        if session.is_expired(now):
            raise SessionNotFound(session_id)
        timeout = session.timeout_ms
        idle = now - session.last_accessed
        if (timeout is not None and idle > timeout // 10) or idle > sync._touch_resolution:
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
        sync = self.sync
        now = sync.clock()
        read = await self._stored(session_id, "update")
        changed = updated(sync, read, fn, now)
        stored = await self._call("update", self._astore_if, changed, read.version, now)
        return stored if type(stored) is Session else _as_stored(changed, stored)

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


def new_session(
    sync: SessionManager,
    timeout_ms: int | _Default | None,
    metadata: Mapping[str, Any] | None,
    owner: str | None,
    absolute_timeout_ms: int | None,
) -> Session:
    """The session ``create`` stores: checked arguments, a fresh id, version 1, now."""
    timeout = sync._default_timeout if isinstance(timeout_ms, _Default) else timeout_ms
    check_timeout(timeout)
    if owner is not None:
        owner = check_owner(owner)
    if absolute_timeout_ms is not None:
        check_absolute_timeout(absolute_timeout_ms)
    packed: PackedMetadata = pack_metadata(metadata)
    sync._check_size(packed)
    now = sync.clock()
    return Session._trusted(generate_id(), now, now, timeout, packed, 1, owner, absolute_timeout_ms)


def updated(sync: SessionManager, read: Session, fn: UpdateFunction, now: int) -> Session:
    """What one attempt of ``update`` writes over ``read``: ``fn``'s metadata, accessed now,
    the next version (``SessionNotFound`` when ``read`` has expired at ``now``)."""
    if read.is_expired(now):
        raise SessionNotFound(read.id)
    _refuse_past_max(read.id, read.version)
    packed = pack_metadata(fn(read.metadata))
    sync._check_size(packed)
    return Session._trusted(
        read.id,
        read.created_at,
        now if now > read.last_accessed else read.last_accessed,
        read.timeout_ms,
        packed,
        read.version + 1,
        read.owner,
        read.absolute_timeout_ms,
    )


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
