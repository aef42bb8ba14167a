"""FastMCP session state in sessionkeeper: the ``AsyncKeyValue`` protocol of py-key-value.

FastMCP keeps ``ctx.set_state``/``get_state`` values under ``"<session id>:<key>"`` in the store
given as ``FastMCP(session_state_store=…)``; with :class:`SessionStateStore` that store is the
``state`` table of :class:`~sessionkeeper_mcp.McpStores`, so the values follow the session to
every worker and survive restarts.

Layout (every id starts with ``s.``): ``s.<digest>`` holds one key, metadata
``{"c": collection, "k": key, "v": value}``, expiring ``ttl`` seconds after it was written. A key
of transport session ``sid`` (one that starts with a 32-hex-digit session id and a colon, as
FastMCP's do) is stored with the owner ``mcp-state:<sid>``, so :func:`purge_session_state`
removes every key of the session with one ``delete_owner`` when the session ends: no index is
read and rewritten, so puts running at once on several workers cannot lose each other's keys
(issue 12 item 14; an earlier release kept a per-session index record ``s.<sid>`` updated by an
unlocked read-modify-write, and a purge left most keys of concurrent puts behind). Such an index
left by that release is still honoured by the purge. A key of a session that is no longer live
reads as missing at once.

On a backend without the ``atomic`` capability (``zmq``) ``delete_owner`` raises
:class:`~sessionkeeper.Unsupported`; the purge then lists the owner's keys and deletes them one
by one. A put that lands during that purge may survive it; it is unreadable anyway (its session
is no longer live) and goes when its ``ttl`` runs out.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, SupportsFloat

from sessionkeeper import (
    AsyncSessionManager,
    InvalidSession,
    Session,
    SessionNotFound,
    Unsupported,
)

from ._stores import McpStores

__all__ = ["SessionStateStore", "purge_session_state"]

DEFAULT_COLLECTION: Final = "default"
_SESSION_KEY: Final = re.compile(r"([0-9a-f]{32}):")
#: The owner of the state keys of transport session ``<sid>`` is ``STATE_OWNER_PREFIX + sid``.
STATE_OWNER_PREFIX: Final = "mcp-state:"


def state_owner(session_id: str) -> str:
    """The owner under which the state keys of transport session ``session_id`` are stored."""
    return STATE_OWNER_PREFIX + session_id


def _digest(collection: str, key: str) -> str:
    data = f"{collection}\x00{key}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def _timeout_ms(ttl: SupportsFloat | None) -> int | None:
    if ttl is None:
        return None
    seconds = float(ttl)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
    return max(1, math.ceil(seconds * 1000))


async def _peek(manager: AsyncSessionManager, key: str) -> Session | None:
    try:
        return await manager.peek(key)
    except (SessionNotFound, InvalidSession):
        return None


class SessionStateStore:
    """A py-key-value ``AsyncKeyValue`` store on sessionkeeper (structurally; no import needed).

    Pass it as ``FastMCP(..., session_state_store=SessionStateStore(stores))``.

    :param stores: where values go (``stores.state``) and where sessions are checked
        (``stores.sessions``).
    :param default_collection: the collection of calls that name none.
    :param check_session: hide the keys of a transport session that is no longer live.
    """

    def __init__(
        self,
        stores: McpStores,
        *,
        default_collection: str = DEFAULT_COLLECTION,
        check_session: bool = True,
    ) -> None:
        self.manager = stores.state
        self.sessions = stores.sessions
        self.default_collection = default_collection
        self.check_session = check_session

    # --- helpers --------------------------------------------------------------------------

    def _collection(self, collection: str | None) -> str:
        return self.default_collection if collection is None else collection

    async def _live_owner(self, key: str) -> bool:
        match = _SESSION_KEY.match(key)
        if match is None or not self.check_session:
            return True
        return await _peek(self.sessions, match[1]) is not None

    async def _read(self, key: str, collection: str | None) -> Session | None:
        collection = self._collection(collection)
        record = await _peek(self.manager, "s." + _digest(collection, key))
        if record is None:
            return None
        meta = record.metadata
        if meta.get("c") != collection or meta.get("k") != key:
            return None
        if not await self._live_owner(key):
            return None
        return record

    # --- AsyncKeyValue --------------------------------------------------------------------

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        """The value stored under ``key``, or ``None``."""
        record = await self._read(key, collection)
        if record is None:
            return None
        value = record.metadata.get("v")
        return value if isinstance(value, dict) else None

    async def ttl(
        self, key: str, *, collection: str | None = None
    ) -> tuple[dict[str, Any] | None, float | None]:
        """The value and its remaining time to live in seconds (``None``: no expiry)."""
        record = await self._read(key, collection)
        if record is None:
            return None, None
        value = record.metadata.get("v")
        if not isinstance(value, dict):
            return None, None
        if record.timeout_ms is None:
            return value, None
        left = record.timeout_ms - (self.manager.sync.clock() - record.last_accessed)
        return value, max(left, 0) / 1000

    async def put(
        self,
        key: str,
        value: Mapping[str, Any],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        """Store ``value`` under ``key``, expiring ``ttl`` seconds from now (``None``: never)."""
        collection = self._collection(collection)
        timeout = _timeout_ms(ttl)
        match = _SESSION_KEY.match(key)
        owner = state_owner(match[1]) if match is not None else None
        now = self.manager.sync.clock()
        try:
            record = Session(
                "s." + _digest(collection, key),
                now,
                now,
                timeout,
                {"c": collection, "k": key, "v": dict(value)},
                owner=owner,
            )
            await self.manager.store(record)
        except InvalidSession as exc:
            raise ValueError(f"cannot serialize the value of state key {key!r}: {exc}") from exc

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        """Remove ``key``; True if it was there."""
        collection = self._collection(collection)
        return await self.manager.delete("s." + _digest(collection, key))

    async def get_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[dict[str, Any] | None]:
        """:meth:`get` for each key."""
        return [await self.get(key, collection=collection) for key in keys]

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        """:meth:`ttl` for each key."""
        return [await self.ttl(key, collection=collection) for key in keys]

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        """:meth:`put` for each key and value (the same number of each)."""
        if len(keys) != len(values):
            raise ValueError(f"put_many got {len(keys)} keys and {len(values)} values")
        for key, value in zip(keys, values, strict=True):
            await self.put(key, value, collection=collection, ttl=ttl)

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        """:meth:`delete` for each key; return how many were there."""
        return sum([await self.delete(key, collection=collection) for key in keys])

    async def purge(self, session_id: str) -> int:
        """Remove every key of transport session ``session_id``; return how many went."""
        return await purge_session_state(self.manager, session_id)


async def purge_session_state(manager: AsyncSessionManager, session_id: str) -> int:
    """Remove the state keys of transport session ``session_id`` from ``manager``; return how
    many records went.

    One ``delete_owner`` on an ``atomic`` backend; elsewhere the owner's keys are listed and
    deleted one by one (see the module docstring). The per-session index an earlier release
    kept (``s.<sid>``) is honoured too, so keys written before an upgrade are purged.
    """
    owner = state_owner(session_id)
    try:
        removed = await manager.delete_owner(owner)
    except Unsupported:
        removed = 0
        for record_id in await manager.list(owner=owner):
            removed += await manager.delete(record_id)
    return removed + await _purge_legacy_index(manager, session_id)


async def _purge_legacy_index(manager: AsyncSessionManager, session_id: str) -> int:
    """Remove the keys listed by a per-session index record of an earlier release, and it."""
    index = await _peek(manager, "s." + session_id)
    if index is None or not isinstance(index.metadata.get("keys"), list):
        return 0
    removed = 0
    for digest in index.metadata["keys"]:
        if isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{40}", digest):
            removed += await manager.delete("s." + digest)
    await manager.delete("s." + session_id)
    return removed
