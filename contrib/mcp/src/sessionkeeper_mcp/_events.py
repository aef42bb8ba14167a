"""Resumability: an ``EventStore`` whose events live in sessionkeeper, scoped by the session id.

Layout in the events table (every id starts with ``e.`` so it can share a table with sessions):

- ``e.<sid>``: the session's stream index, metadata ``{"streams": [<h>, …]}`` (oldest first).
- ``e.<sid>.<h>``: one stream, metadata ``{"stream": <stream id>, "first": F, "next": N}``.
- ``e.<sid>.<h>.<n>``: event number ``n`` (from 1) of that stream, metadata ``{"m": <message>}``.

Priming events (the SDK's ``store_event(stream, None)``) are not stored: their id is a cursor,
``<h>.<n>`` with ``n`` the number of the stream's last event (0 before the first), and replay
after it sends what came later. So replaying on another worker, which primes the resumed
stream, never writes into a stream the original worker is still writing.

``<h>`` is a 16-hex-digit BLAKE2b digest of the SDK's stream id (a request id or ``_GET_stream``).
The event id the client sees is ``<h>.<n>``; it only means something to the store scoped to the
same session, so one session can never replay another's events. Each stream keeps its last
``max_events_per_stream`` events and each session its last ``max_streams_per_session`` streams;
every record expires ``ttl`` seconds after it was written, and :func:`purge_session_events`
removes a session's records when the session is deleted.

One writer per stream is assumed: a request's stream is written by the worker serving that
request; the standalone GET stream by the worker whose copy of the session sends on it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Container
from typing import TYPE_CHECKING, Any, Final

from sessionkeeper import (
    AsyncSessionManager,
    InvalidSession,
    Session,
    SessionKeeperError,
    SessionNotFound,
)

from ._compat import dump_message, load_message
from ._stores import McpStores

if TYPE_CHECKING:
    from mcp.server.streamable_http import EventCallback
else:
    EventCallback = Any

import mcp.server.streamable_http as _sdk_http
from mcp.server.streamable_http import EventMessage, EventStore

#: The stream id of a session's standalone GET stream in the SDK.
GET_STREAM: Final = str(getattr(_sdk_http, "GET_STREAM_KEY", "_GET_stream"))

__all__ = ["SessionEventStore", "SessionKeeperEventStore", "purge_session_events"]

log = logging.getLogger("sessionkeeper_mcp")
_EVENT_ID: Final = re.compile(r"([0-9a-f]{16})\.([0-9]{1,18})")


def _digest(stream_id: str) -> str:
    return hashlib.blake2b(stream_id.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


async def _peek(manager: AsyncSessionManager, key: str) -> Session | None:
    try:
        return await manager.peek(key)
    except (SessionNotFound, InvalidSession):
        return None


class SessionKeeperEventStore:
    """Resumable Streamable HTTP streams, kept in the ``events`` table of :class:`McpStores`.

    Give it to :class:`~sessionkeeper_mcp.PersistentSessionManager` as ``event_store``; the
    manager hands each session's transport its own :meth:`for_session` view, scoped by the real
    session id, so a client that reconnects with ``Last-Event-ID`` to any worker gets the events
    it missed.

    :param stores: where the events go (``stores.events``).
    :param max_events_per_stream: events kept per stream; older ones are dropped.
    :param max_streams_per_session: streams kept per session; the oldest are dropped.
    :param ttl: seconds an event (and its stream's bookkeeping) is kept after it was written.
    """

    def __init__(
        self,
        stores: McpStores,
        *,
        max_events_per_stream: int = 100,
        max_streams_per_session: int = 100,
        ttl: float | None = 3600,
    ) -> None:
        if max_events_per_stream < 1:
            raise ValueError(
                f"max_events_per_stream must be at least 1, got {max_events_per_stream}"
            )
        if max_streams_per_session < 1:
            raise ValueError(
                f"max_streams_per_session must be at least 1, got {max_streams_per_session}"
            )
        if ttl is not None and not (math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl}")
        self.manager = stores.events
        self.max_events_per_stream = max_events_per_stream
        self.max_streams_per_session = max_streams_per_session
        self.ttl_ms = None if ttl is None else max(1, math.ceil(ttl * 1000))

    def for_session(self, session_id: str) -> SessionEventStore:
        """The SDK ``EventStore`` of one session."""
        return SessionEventStore(self, session_id)

    async def purge(self, session_id: str) -> int:
        """Remove every event of ``session_id``; return how many records went."""
        return await purge_session_events(self.manager, session_id)


class SessionEventStore(EventStore):
    """The ``EventStore`` of one session (see :class:`SessionKeeperEventStore`).

    While :attr:`muted` it stores nothing (the manager mutes it while it replays the handshake
    to bring a session back on a new worker, whose messages no client is waiting for).

    :attr:`running`, when set (the manager sets it), holds the ids of the requests this worker
    serves for the session: a replay of another request's stream (one running on another
    worker) ends after the stored events instead of waiting for live ones that will never come
    here, and the client polls again.
    """

    def __init__(self, parent: SessionKeeperEventStore, session_id: str) -> None:
        self.parent = parent
        self.session_id = session_id
        self.muted = False
        self.running: Container[object] | None = None
        self._streams: dict[str, tuple[int, int]] = {}  # digest -> (first, next)
        self._muted_count = 0

    def _key(self, *parts: object) -> str:
        return ".".join(("e", self.session_id, *map(str, parts)))

    def _session(self, key: str, metadata: dict[str, Any]) -> Session:
        now = self.parent.manager.sync.clock()
        return Session(key, now, now, self.parent.ttl_ms, metadata)

    async def store_event(self, stream_id: str, message: Any) -> str:
        """Store ``message`` as the next event of ``stream_id``; return its event id.

        A priming event (``message`` is ``None``) is not stored: its id is a cursor at the
        stream's current end, so writing one never touches a stream another worker writes.
        """
        if self.muted:
            self._muted_count += 1
            return f"{'0' * 16}.{self._muted_count}"
        digest = _digest(stream_id)
        if message is None:
            cursor = self._streams.get(digest) or await self._stored_position(digest)
            return f"{digest}.{cursor[1] - 1}"
        manager = self.parent.manager
        position = self._streams.get(digest)
        if position is None:
            position = await self._open_stream(digest)
        first, number = position
        try:
            await manager.store(
                self._session(self._key(digest, number), {"m": dump_message(message)})
            )
        except SessionKeeperError as exc:
            # Never break the session's message router: this one event is just not replayable.
            log.warning(
                "event %s.%s of session %s not stored: %s", digest, number, self.session_id, exc
            )
        number += 1
        cap = self.parent.max_events_per_stream
        while number - first > cap:
            await manager.delete(self._key(digest, first))
            first += 1
        self._streams[digest] = (first, number)
        await manager.store(
            self._session(self._key(digest), {"stream": stream_id, "first": first, "next": number})
        )
        return f"{digest}.{number - 1}"

    async def _stored_position(self, digest: str) -> tuple[int, int]:
        stored = await _peek(self.parent.manager, self._key(digest))
        if stored is None:
            return 1, 1
        meta = stored.metadata
        return int(meta.get("first", 1)), int(meta.get("next", 1))

    async def _open_stream(self, digest: str) -> tuple[int, int]:
        """Continue a stream this worker has not written yet (it may have another's events)."""
        manager = self.parent.manager
        stored = await _peek(manager, self._key(digest))
        if stored is not None:
            meta = stored.metadata
            return int(meta.get("first", 1)), int(meta.get("next", 1))
        index = await _peek(manager, self._key())
        streams: list[str] = list(index.metadata.get("streams", [])) if index else []
        if digest not in streams:
            streams.append(digest)
        while len(streams) > self.parent.max_streams_per_session:
            oldest = streams.pop(0)
            await _purge_stream(manager, self.session_id, oldest)
            self._streams.pop(oldest, None)
        await manager.store(self._session(self._key(), {"streams": streams}))
        return 1, 1

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        """Send the events of ``last_event_id``'s stream that came after it; return its stream."""
        match = _EVENT_ID.fullmatch(last_event_id)
        if match is None:
            return None
        digest, after = match[1], int(match[2])
        manager = self.parent.manager
        stream = await _peek(manager, self._key(digest))
        if stream is None:
            return None
        meta = stream.metadata
        stream_id = meta.get("stream")
        if not isinstance(stream_id, str):
            return None
        first, end = int(meta.get("first", 1)), int(meta.get("next", 1))
        for number in range(max(after + 1, first), end):
            event = await _peek(manager, self._key(digest, number))
            if event is None:
                continue
            payload = event.metadata.get("m")
            if not isinstance(payload, dict):
                continue
            await send_callback(EventMessage(load_message(payload), f"{digest}.{number}"))
        if self.running is not None and stream_id != GET_STREAM and stream_id not in self.running:
            return None  # the SDK then ends the replayed stream: the client reconnects later
        return stream_id


async def _purge_stream(manager: AsyncSessionManager, session_id: str, digest: str) -> int:
    key = f"e.{session_id}.{digest}"
    stream = await _peek(manager, key)
    removed = 0
    if stream is not None:
        meta = stream.metadata
        for number in range(int(meta.get("first", 1)), int(meta.get("next", 1))):
            removed += await manager.delete(f"{key}.{number}")
    removed += await manager.delete(key)
    return removed


async def purge_session_events(manager: AsyncSessionManager, session_id: str) -> int:
    """Remove every event record of ``session_id`` from ``manager``; return how many went."""
    index = await _peek(manager, f"e.{session_id}")
    if index is None:
        return 0
    removed = 0
    for digest in index.metadata.get("streams", []):
        if isinstance(digest, str):
            removed += await _purge_stream(manager, session_id, digest)
    removed += await manager.delete(f"e.{session_id}")
    return removed
