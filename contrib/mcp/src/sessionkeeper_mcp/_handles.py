"""State handles for MCP protocol 2026-07-28 (SEP-2567): state behind server-minted handles.

A sessionless MCP server keeps cross-call state (a cart, a counter, a provisioned machine)
behind a *handle*: an unguessable string the server mints and the client passes back as an
ordinary tool argument. :class:`Handles` keeps them in a sessionkeeper store, so every worker
serves every handle:

- the handle is a sessionkeeper session id (256 bits from ``secrets``); its state is the
  session's metadata (a JSON object, size-capped like any metadata);
- it belongs to the principal that minted it: the authenticated principal the SDK validated
  (the ``AccessToken`` the SDK's auth middleware put in context, identified by
  ``principal_components`` exactly as the SDK binds sessions and ``requestState``), or an
  explicit ``owner``. A handle used by another principal (or anonymously) gets the same answer
  as an unknown one: :class:`HandleNotFound`;
- it ends after ``idle_timeout`` seconds without use and ``absolute_timeout`` seconds after it
  was minted, whichever comes first, or when revoked (:meth:`Handles.revoke`, or every handle
  of a principal with :meth:`Handles.revoke_all`);
- :meth:`Handles.update` changes its state atomically (one read, which also checks the owner,
  and a write conditional on the version read, re-run when another writer came first): parallel
  agents adding to one counter lose nothing, on every backend that declares ``atomic``
  (``memory``, ``sqlitedict``, ``leveldb``, ``redis``, ``postgres``; on ``zmq`` it raises
  :class:`~sessionkeeper.Unsupported`). Given the :class:`Handle` the tool resolved, it writes
  on that read: a tool call is then two store operations, the resolve and the write.

On an ``mcp`` 2.x ``MCPServer`` the handle becomes the tool's state through a ``Resolve``
dependency (the SDK's own injection seam)::

    handles = Handles(stores)

    @server.tool()
    async def add(
        handle: str, amount: int, cart: Annotated[Handle, Resolve(handles.resolve_arg)]
    ) -> int:
        stored = await handles.update(cart, lambda s: {**s, "n": s["n"] + amount})
        return stored.state["n"]

``resolve_arg`` reads the tool's ``handle`` argument by name, checks the caller's principal
and returns the :class:`Handle`; an unknown, expired, revoked or foreign handle ends the call
with the SDK's ``ToolError`` (``isError`` result, message :data:`UNKNOWN_HANDLE`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

import attrs

from sessionkeeper import (
    AsyncSessionManager,
    InvalidSession,
    Session,
    SessionNotFound,
    Unsupported,
    VersionConflict,
)

from ._stores import McpStores

__all__ = [
    "UNKNOWN_HANDLE",
    "Handle",
    "HandleNotFound",
    "Handles",
    "authenticated_principal",
]

#: What a caller is told for an unknown, expired, revoked or foreign handle (one answer for all).
UNKNOWN_HANDLE: Final = "unknown, expired or revoked handle"
#: The longest owner sessionkeeper stores (bytes of UTF-8); longer principals are digested.
_OWNER_MAX_BYTES: Final = 256

#: Something that names the principal of the current request, or ``None`` (anonymous).
PrincipalFunction = Callable[[], "str | None"]


class HandleNotFound(SessionNotFound):
    """No live handle with this id for this principal (unknown, expired, revoked, or minted by
    another principal: deliberately indistinguishable). A :class:`~sessionkeeper.SessionNotFound`
    (and so a :class:`KeyError`)."""

    def __str__(self) -> str:
        return UNKNOWN_HANDLE


@attrs.frozen(slots=False)
class Handle:
    """One handle as read: its id (what the client passes back), its state, its owner (the
    principal it belongs to, ``None`` for a bearer handle anyone holding it may use) and the
    store's version of it.

    A handle that :class:`Handles` read also keeps the stored session it was read from, so
    that :meth:`Handles.update` given this handle writes on that read instead of reading
    again. That session is not a field (equality, repr, ``attrs.asdict`` and the constructor
    are the four fields alone); a handle built by hand or with ``attrs.evolve`` has none.
    """

    #: The stored session this handle was read from (set on the instance by
    #: :meth:`from_session`; ``None``, the class default, for a handle built otherwise).
    _read: ClassVar[Session | None] = None

    id: str
    state: dict[str, Any]
    owner: str | None
    version: int

    @classmethod
    def from_session(cls, session: Session) -> Handle:
        """The handle a stored session is (it keeps ``session`` as its read)."""
        handle = cls(session.id, session.metadata, session.owner, session.version)
        object.__setattr__(handle, "_read", session)  # frozen: set once, here
        return handle


def _owner_of(principal: str) -> str:
    """The stored owner for ``principal``: itself when sessionkeeper can store it as an owner
    (at most 256 bytes, no control characters), else ``sha256:`` and its digest."""
    raw = principal.encode("utf-8", "surrogatepass")
    printable = all(ord(c) >= 0x20 and ord(c) != 0x7F for c in principal)
    if principal and printable and len(raw) <= _OWNER_MAX_BYTES:
        try:
            principal.encode("utf-8")
            return principal
        except UnicodeEncodeError:  # a lone surrogate: not storable as is
            pass
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _may_use(session: Session, caller: str | None) -> bool:
    """Whether ``caller`` (a stored owner, or ``None``: anonymous) may use the handle
    ``session``: it is a bearer handle, or the caller's."""
    return session.owner is None or session.owner == caller


def authenticated_principal() -> str | None:
    """The principal of the current request as the SDK identifies it: the (client id, issuer,
    subject) of the access token its auth middleware validated, as compact JSON (what the SDK's
    own ``request_state.authenticated_principal`` binds), or ``None`` when unauthenticated."""
    from mcp.server.auth.middleware.auth_context import get_access_token
    from mcp.server.auth.provider import principal_components

    token = get_access_token()
    if token is None:
        return None
    return json.dumps(principal_components(token), separators=(",", ":"))


def _ms(seconds: float | None, name: str) -> int | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, got {seconds!r}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{name} must be a positive number of seconds or None, got {seconds!r}")
    return max(1, math.ceil(seconds * 1000))


_UNSET: Final[Any] = object()
#: How many times :meth:`Handles.update` reads and writes before its ``VersionConflict`` stands
#: (the manager's own ``update`` default), waiting a jittered exponential back-off in between.
_UPDATE_ATTEMPTS: Final = 10


class Handles:
    """Mint, resolve, update and revoke state handles kept in a sessionkeeper store.

    :param store: an :class:`~sessionkeeper_mcp.McpStores` (its ``handles`` table) or an
        :class:`~sessionkeeper.AsyncSessionManager`.
    :param idle_timeout: seconds without use after which a handle ends (``None``: never).
    :param absolute_timeout: seconds after minting after which a handle ends whatever its use
        (``None``: no limit).
    :param principal: names the principal of the current request; defaults to
        :func:`authenticated_principal` (the SDK's validated access token).
    """

    def __init__(
        self,
        store: McpStores | AsyncSessionManager,
        *,
        idle_timeout: float | None = 3600.0,
        absolute_timeout: float | None = None,
        principal: PrincipalFunction = authenticated_principal,
    ) -> None:
        self.manager = store.handles if isinstance(store, McpStores) else store
        self.idle_timeout_ms = _ms(idle_timeout, "idle_timeout")
        self.absolute_timeout_ms = _ms(absolute_timeout, "absolute_timeout")
        self.principal = principal

    def _caller(self, principal: str | None) -> str | None:
        """The stored owner of the caller: ``principal`` if given, else the current one."""
        name = self.principal() if principal is _UNSET else principal
        return None if name is None else _owner_of(name)

    async def mint(
        self,
        state: Mapping[str, Any] | None = None,
        *,
        owner: str | None = _UNSET,
        idle_timeout: float | None = _UNSET,
        absolute_timeout: float | None = _UNSET,
    ) -> Handle:
        """A new handle holding ``state`` (a JSON object), owned by ``owner`` (default: the
        current authenticated principal; ``None`` makes a bearer handle). The timeouts default
        to the store's. Raises :class:`ValueError` for state that is not JSON-compatible or
        too large."""
        idle = self.idle_timeout_ms if idle_timeout is _UNSET else _ms(idle_timeout, "idle_timeout")
        absolute = (
            self.absolute_timeout_ms
            if absolute_timeout is _UNSET
            else _ms(absolute_timeout, "absolute_timeout")
        )
        try:
            session = await self.manager.create(
                idle,
                dict(state or {}),
                owner=self._caller(owner),
                absolute_timeout_ms=absolute,
            )
        except InvalidSession as exc:
            raise ValueError(f"cannot keep this handle state: {exc}") from exc
        return Handle.from_session(session)

    async def _checked(self, handle: object, caller: str | None, *, touch: bool) -> Session:
        """The live session of ``handle`` if ``caller`` (a stored owner, see :meth:`_caller`)
        may use it, else HandleNotFound."""
        if not isinstance(handle, str):
            raise HandleNotFound(handle)
        try:
            session = await (self.manager.fetch(handle) if touch else self.manager.peek(handle))
        except (SessionNotFound, InvalidSession):
            raise HandleNotFound(handle) from None
        if not _may_use(session, caller):
            raise HandleNotFound(handle)
        return session

    async def resolve(self, handle: str, *, principal: str | None = _UNSET) -> Handle:
        """The live handle ``handle`` (its idle time starts again), if the caller's principal
        (default: the current one) owns it. Raises :class:`HandleNotFound` otherwise."""
        return Handle.from_session(await self._checked(handle, self._caller(principal), touch=True))

    async def update(
        self,
        handle: str | Handle,
        fn: Callable[[dict[str, Any]], Mapping[str, Any]],
        *,
        principal: str | None = _UNSET,
    ) -> Handle:
        """Change the handle's state atomically: ``fn`` gets a copy of the state and returns the
        new one; it is re-run on a fresh read when another writer got there first, so keep it a
        pure computation. Returns the handle as stored.

        ``handle`` is the handle's id, or the :class:`Handle` that :meth:`resolve` (or the
        ``Resolve`` dependency) returned: then its first write is conditional on that read's
        version, with no new read (the owner is checked again against the caller, in memory).
        When the handle changed, ended or was revoked since that read, the write fails and
        the update goes on as for an id: a fresh read, the owner check, a conditional write.

        Raises :class:`HandleNotFound` (also when the handle ends meanwhile), :class:`ValueError`
        for state that cannot be kept, :class:`~sessionkeeper.VersionConflict` after the
        store's attempts all lost their race, :class:`~sessionkeeper.Unsupported` on a backend
        without ``atomic``."""
        caller = self._caller(principal)
        if not self.manager.sync.capabilities.atomic:  # never a read before Unsupported
            raise Unsupported(self.manager.backend_name)
        read = handle._read if isinstance(handle, Handle) else None
        handle_id: object = handle.id if isinstance(handle, Handle) else handle
        if read is not None and not _may_use(read, caller):
            read = None  # not the caller's as read: the store says whose it is now
        if read is not None:
            # The caller's read: its version decides (no back-off when it was stale, and the
            # attempts below are all still to come).
            try:
                return Handle.from_session(await self._write(read, fn))
            except VersionConflict:
                pass
        for attempt in range(_UPDATE_ATTEMPTS):
            # One read serves the owner check and the update; the write is conditional on its
            # version (what the manager's own update does, with the owner checked in between).
            read = await self._checked(handle_id, caller, touch=False)
            try:
                return Handle.from_session(await self._write(read, fn))
            except VersionConflict:
                if attempt + 1 >= _UPDATE_ATTEMPTS:
                    raise
                # jittered exponential back-off, as the manager's update (not a secret)
                await asyncio.sleep(random.random() * min(0.05, 0.001 * 2**attempt))  # noqa: S311
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write(
        self, read: Session, fn: Callable[[dict[str, Any]], Mapping[str, Any]]
    ) -> Session:
        """``fn`` applied to ``read``'s state, stored if the handle's live version is still
        ``read``'s (else :class:`~sessionkeeper.VersionConflict`)."""
        now = self.manager.sync.clock()
        try:
            changed = read.replace(
                metadata=fn(read.metadata), last_accessed=max(now, read.last_accessed)
            )
            return await self.manager.store(changed, if_version=read.version)
        except InvalidSession as exc:
            raise ValueError(f"cannot keep this handle state: {exc}") from exc

    async def revoke(self, handle: str, *, principal: str | None = _UNSET) -> bool:
        """End the handle now, on every worker; True if it was live and the caller's."""
        try:
            await self._checked(handle, self._caller(principal), touch=False)
        except HandleNotFound:
            return False
        return await self.manager.delete(handle)

    async def list(self, owner: str | None = _UNSET) -> list[str]:
        """The live handles of ``owner`` (a principal; default: the current one). An
        anonymous caller has none listed (bearer handles belong to nobody)."""
        name = self._caller(owner)
        return [] if name is None else sorted(await self.manager.list(owner=name))

    async def revoke_all(self, owner: str | None = _UNSET) -> int:
        """End every handle of ``owner`` (default: the current principal), "log out
        everywhere"; return how many. Raises :class:`~sessionkeeper.Unsupported` on a backend
        without ``atomic``."""
        name = self._caller(owner)
        return 0 if name is None else await self.manager.delete_owner(name)

    async def resolve_arg(self, handle: str) -> Handle:
        """The ``Resolve`` dependency of an ``MCPServer`` tool: the tool's ``handle`` argument
        turned into the :class:`Handle`, checked against the request's principal. An
        unusable handle ends the call with the SDK's ``ToolError`` (:data:`UNKNOWN_HANDLE`)."""
        from mcp.server.mcpserver.exceptions import ToolError

        try:
            return await self.resolve(handle)
        except HandleNotFound:
            raise ToolError(UNKNOWN_HANDLE) from None
