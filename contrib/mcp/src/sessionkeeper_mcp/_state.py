"""FastMCP session state in sessionkeeper: a py-key-value ``AsyncKeyValue`` store.

FastMCP keeps what ``ctx.set_state``, ``UserSession`` and ``SessionId`` sessions hold in the
store given as ``FastMCP(session_state_store=…)``; with :class:`SessionStateStore` that store is
the ``state`` table of :class:`~sessionkeeper_mcp.McpStores`, so every worker reads what any
worker wrote, and it survives restarts.

It behaves as py-key-value's own stores do (their shared test suite runs against it): values
are JSON-compatible dicts, ``ttl`` counts from the ``put`` whatever reads follow, ``collection``
``None`` or ``""`` is the default collection, and errors are py-key-value's types when the
package is installed (``InvalidTTLError``, ``SerializationError``, ``ValueTooLargeError``; see
:mod:`sessionkeeper_mcp._kv_errors`).

Layout (every id starts with ``s.``): ``s.<digest of collection and key>`` holds one entry,
metadata ``{"c": collection, "k": key, "v": value}``, with an absolute timeout of ``ttl``.

Transport sessions of the handshake era (protocol 2025-11-25 and earlier): FastMCP writes the
``ctx.set_state`` keys of such a session as ``"<session id>:<key>"``. A key is tied to a
transport session only when, at ``put``, its prefix names a live session that
:class:`~sessionkeeper_mcp.PersistentSessionManager` recorded in ``stores.sessions``; the entry
then gets the owner ``mcp-state:<session id>`` in the same single write as its value (the owner
index is the backend's, updated atomically with the entry), reads hide it once that session has
ended, and :func:`purge_session_state` removes all of the session's keys with one
``delete_owner``. Any other key, among them every key on the sessionless protocol 2026-07-28
(whatever its shape), is a plain key: nothing reads or purges it but its own calls.

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

from ._kv_errors import invalid_ttl, serialization_error, value_too_large
from ._record import SessionRecord
from ._stores import McpStores

__all__ = ["SessionStateStore", "purge_session_state"]

DEFAULT_COLLECTION: Final = "default"
_SESSION_KEY: Final = re.compile(r"([0-9a-f]{32}):")
#: The owner of the state keys of transport session ``<sid>`` is ``STATE_OWNER_PREFIX + sid``.
STATE_OWNER_PREFIX: Final = "mcp-state:"
#: msgpack bytes of an entry besides its value: a 3-entry map header and the keys c, k, v.
_ENTRY_FRAME: Final = 1 + 3 * 2


def state_owner(session_id: str) -> str:
    """The owner under which the state keys of transport session ``session_id`` are stored."""
    return STATE_OWNER_PREFIX + session_id


def _digest(collection: str, key: str) -> str:
    data = f"{collection}\x00{key}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def _str_size(text: str) -> int:
    """The msgpack size of ``text``."""
    n = len(text.encode("utf-8", "surrogatepass"))
    return n + (1 if n < 32 else 2 if n < 256 else 3 if n < 65536 else 5)


def _timeout_ms(ttl: SupportsFloat | None) -> int | None:
    """``ttl`` seconds in ms, checked as py-key-value checks it (``InvalidTTLError``)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool):
        raise invalid_ttl(ttl, "a bool is not a number of seconds")
    try:
        seconds = float(ttl)
    except (TypeError, ValueError):
        raise invalid_ttl(ttl, f"{type(ttl).__name__} is not a number of seconds") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise invalid_ttl(ttl, "must be a positive, finite number of seconds or None")
    return max(1, math.ceil(seconds * 1000))


async def _peek(manager: AsyncSessionManager, key: str) -> Session | None:
    try:
        return await manager.peek(key)
    except (SessionNotFound, InvalidSession):
        return None


class SessionStateStore:
    """A py-key-value ``AsyncKeyValue`` store on sessionkeeper (structurally; no import needed).

    Pass it as ``FastMCP(..., session_state_store=SessionStateStore(stores))``.

    :param stores: where values go (``stores.state``) and where transport sessions are looked
        up (``stores.sessions``).
    :param default_collection: the collection of calls that name none.
    :param check_session: hide the keys of a transport session once it has ended (see the
        module docstring); ``False`` leaves them readable until their ``ttl``.
    :param max_value_bytes: the largest value ``put`` accepts, in bytes of its stored (msgpack)
        form, at most what the state table's ``max_metadata_bytes`` leaves beside the key
        (the default). A larger value raises ``ValueTooLargeError`` naming its size and the
        limit.
    """

    def __init__(
        self,
        stores: McpStores,
        *,
        default_collection: str = DEFAULT_COLLECTION,
        check_session: bool = True,
        max_value_bytes: int | None = None,
    ) -> None:
        self.manager = stores.state
        self.sessions = stores.sessions
        self.default_collection = default_collection
        self.check_session = check_session
        table_limit = self.manager.config.max_metadata_bytes
        if max_value_bytes is not None and (
            isinstance(max_value_bytes, bool)
            or not isinstance(max_value_bytes, int)
            or not 0 < max_value_bytes <= table_limit
        ):
            raise ValueError(
                f"max_value_bytes must be an int from 1 to the state table's "
                f"max_metadata_bytes ({table_limit}), got {max_value_bytes!r}"
            )
        self.max_value_bytes = table_limit if max_value_bytes is None else max_value_bytes

    # --- helpers --------------------------------------------------------------------------

    def _collection(self, collection: str | None) -> str:
        return collection or self.default_collection

    async def _transport_owner(self, key: str) -> str | None:
        """The owner tying ``key`` to a live recorded transport session, or ``None``."""
        match = _SESSION_KEY.match(key)
        if match is None:
            return None
        session = await _peek(self.sessions, match[1])
        if session is None or SessionRecord.from_session(session) is None:
            return None
        return state_owner(match[1])

    async def _read(self, key: str, collection: str | None) -> Session | None:
        collection = self._collection(collection)
        record = await _peek(self.manager, "s." + _digest(collection, key))
        if record is None:
            return None
        meta = record.metadata
        if meta.get("c") != collection or meta.get("k") != key:
            return None
        owner = record.owner
        if (
            self.check_session
            and owner is not None
            and owner.startswith(STATE_OWNER_PREFIX)
            and await _peek(self.sessions, owner.removeprefix(STATE_OWNER_PREFIX)) is None
        ):
            return None
        return record

    def _left_ms(self, record: Session) -> int | None:
        """Milliseconds ``record`` has left (``None``: no expiry)."""
        now = self.manager.sync.clock()
        left = [
            limit - (now - start)
            for limit, start in (
                (record.absolute_timeout_ms, record.created_at),
                (record.timeout_ms, record.last_accessed),  # entries of earlier releases
            )
            if limit is not None
        ]
        return max(min(left), 0) if left else None

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
        left = self._left_ms(record)
        return value, None if left is None else left / 1000

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
        owner = await self._transport_owner(key)
        await self.manager.store(self._entry(key, value, collection, timeout, owner))

    def _entry(
        self,
        key: str,
        value: Mapping[str, Any],
        collection: str,
        timeout: int | None,
        owner: str | None = None,
    ) -> Session:
        """The record of one entry, its value checked (serializable, within the limit)."""
        if not isinstance(value, Mapping):
            raise serialization_error(collection, key, f"{type(value).__name__} is not a dict")
        now = self.manager.sync.clock()
        try:
            record = Session(
                "s." + _digest(collection, key),
                now,
                now,
                None,
                {"c": collection, "k": key, "v": dict(value)},
                owner=owner,
                absolute_timeout_ms=timeout,
            )
        except InvalidSession as exc:
            raise serialization_error(collection, key, str(exc)) from None
        frame = _ENTRY_FRAME + _str_size(collection) + _str_size(key)
        size = len(record.packed_metadata) - frame
        limit = min(self.max_value_bytes, self.manager.config.max_metadata_bytes - frame)
        if size > limit:
            raise value_too_large(size, limit, collection, key)
        return record

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
        """:meth:`put` for each key and value (the same number of each); nothing is stored
        when one value is refused."""
        if len(keys) != len(values):
            raise ValueError(f"put_many got {len(keys)} keys and {len(values)} values")
        name = self._collection(collection)
        timeout = _timeout_ms(ttl)
        for key, value in zip(keys, values, strict=True):
            self._entry(key, value, name, timeout)
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
