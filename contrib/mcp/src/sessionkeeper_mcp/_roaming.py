"""Handshake-era requests that reach a worker other than the one they belong to.

A handshake-era session (protocol 2025-11-25 and earlier) runs a server on every worker that has
served it. Most requests are whole on their own, but two kinds answer something that happened on
one worker only:

- **an answer to a server request** (an elicitation, a sampling, a roots listing): the tool that
  asked waits on the worker that sent the request; the client POSTs the answer, and a round-robin
  balancer may deliver it to another worker, whose copy of the session never asked. The SDK drops
  such an answer there, and the tool (and so the client) waits for ever. Here the worker that got
  it stores it in the shared ``events`` table (:func:`relay_answer`), the client gets ``202`` as
  usual, and the worker waiting for it takes it from the store at its next watch round
  (``check_interval``) and delivers it to its own session (:func:`take_answer`). When the store
  cannot keep it, the client gets a JSON-RPC error saying why (:func:`misrouted`).
- **a polling reconnect** (``GET`` with ``Last-Event-ID``) after the server closed a request's
  stream: with events in the shared store
  (:class:`~sessionkeeper_mcp.SessionKeeperEventStore`) any worker replays what was stored, but
  only the worker running the request can go on sending live; elsewhere the replayed stream ends
  after the stored events, and the client reconnects again (the protocol's polling) instead of
  waiting on a stream no message will reach. With events kept per process (or none), a worker
  that does not know the event id answers a JSON-RPC error saying so.

:class:`TrackingTransport` is the SDK transport that knows which requests its session runs here
(``running``) and which server requests it waits answers for (``outgoing``), from the messages
its session writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Final

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from sessionkeeper import (
    AsyncSessionManager,
    InvalidSession,
    Session,
    SessionKeeperError,
    SessionNotFound,
    Unsupported,
)

from ._asgi import PROTOCOL_VERSION_HEADER, Status, body_once, header, json_rpc, replay_scope
from ._events import SessionEventStore
from ._stores import McpStores

from mcp.server.streamable_http import StreamableHTTPServerTransport  # isort: skip

__all__ = [
    "ANSWER_TTL_MS",
    "MISROUTED_STATUS",
    "RoamingRequests",
    "TrackingTransport",
    "misrouted",
    "read_body",
    "relay_answer",
    "take_answer",
]

log = logging.getLogger("sessionkeeper_mcp")

#: The header of a reconnect that resumes a stream.
LAST_EVENT_HEADER: Final = b"last-event-id"
#: How long a relayed answer waits in the store for the worker that asked.
ANSWER_TTL_MS: Final = 300_000
#: The HTTP status of a request this worker cannot serve because it belongs to another one.
MISROUTED_STATUS: Final = 409
#: The largest POST body read when the SDK names no limit.
DEFAULT_MAX_BODY: Final = 4 * 1024 * 1024
#: At most this many ids are remembered per session and kind (older ones are forgotten).
_MAX_TRACKED: Final = 256


class _Ids:
    """JSON-RPC ids (as ``str``), each forgotten :data:`ANSWER_TTL_MS` after it was added, and
    at most :data:`_MAX_TRACKED` of them (the oldest go first)."""

    def __init__(self) -> None:
        self._ids: dict[str, float] = {}

    def add(self, request_id: object) -> None:
        self._ids[str(request_id)] = time.monotonic()
        while len(self._ids) > _MAX_TRACKED:
            del self._ids[next(iter(self._ids))]

    def discard(self, request_id: object) -> None:
        self._ids.pop(str(request_id), None)

    def _expire(self) -> None:
        horizon = time.monotonic() - ANSWER_TTL_MS / 1000
        for key in [key for key, added in self._ids.items() if added < horizon]:
            del self._ids[key]

    def __contains__(self, request_id: object) -> bool:
        return str(request_id) in self._ids

    def __iter__(self) -> Iterator[str]:
        self._expire()
        return iter(list(self._ids))

    def __bool__(self) -> bool:
        return bool(self._ids)


class _Watched:
    """The session's write stream, noting each request it sends and each response."""

    def __init__(self, inner: Any, transport: TrackingTransport) -> None:
        self._inner = inner
        self._transport = transport

    async def send(self, item: Any) -> None:
        message = getattr(getattr(item, "message", None), "root", None) or getattr(
            item, "message", None
        )
        request_id = getattr(message, "id", None)
        if request_id is not None:
            if getattr(message, "method", None) is not None:
                self._transport.outgoing.add(request_id)
            else:  # a response or an error: that request is done here
                self._transport.running.discard(request_id)
        await self._inner.send(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __aenter__(self) -> _Watched:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._inner.__aexit__(*exc_info)


class TrackingTransport(StreamableHTTPServerTransport):
    """The SDK's Streamable HTTP transport, knowing what its session does on this worker.

    ``running``: ids of client requests POSTed here whose response has not been sent yet.
    ``outgoing``: ids of requests the session sent the client and still waits answers for.
    ``events``: the event store this transport was given.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running = _Ids()
        self.outgoing = _Ids()
        #: The event store given to this transport (``None``: not resumable).
        self.events: Any = None

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Any]:
        """The SDK's streams, the write stream watched (see the class docstring)."""
        async with super().connect() as (read_stream, write_stream):
            yield read_stream, _Watched(write_stream, self)


async def read_body(receive: Receive, limit: int) -> tuple[bytes | None, Receive]:
    """The whole request body (``None`` past ``limit`` bytes: then it is not kept, and the
    SDK's own size check answers), and a ``receive`` that yields what was read again, then
    what follows."""
    read: list[Message] = []
    size = 0
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > limit or not message.get("more_body", False):
            break
    complete = size <= limit and read[-1]["type"] == "http.request"
    body = b"".join(m.get("body", b"") for m in read) if complete else None

    async def replay() -> Message:
        return read.pop(0) if read else await receive()

    return body, replay


def messages_of(body: bytes) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a POST body (none when it is not JSON)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return []
    found = parsed if isinstance(parsed, list) else [parsed]
    return [m for m in found if isinstance(m, dict)]


def is_answer(message: dict[str, Any]) -> bool:
    """A response or an error to a request (no ``method``, an ``id``, a result or an error)."""
    return (
        "method" not in message
        and message.get("id") is not None
        and ("result" in message or "error" in message)
    )


def _answer_key(session_id: str, request_id: object) -> str:
    digest = hashlib.blake2b(str(request_id).encode(), digest_size=8).hexdigest()
    return f"a.{session_id}.{digest}"


async def relay_answer(
    events: AsyncSessionManager, session_id: str, message: dict[str, Any]
) -> None:
    """Keep ``message`` (an answer) for the worker of ``session_id`` that waits for it."""
    now = events.sync.clock()
    key = _answer_key(session_id, message["id"])
    await events.store(Session(key, now, now, ANSWER_TTL_MS, {"m": message}))


async def take_answer(
    events: AsyncSessionManager, session_id: str, request_id: object
) -> dict[str, Any] | None:
    """The relayed answer to ``request_id`` of ``session_id``, removed (one taker), or ``None``."""
    key = _answer_key(session_id, request_id)
    try:
        try:
            record = await events.take(key)
        except Unsupported:  # zmq: read, then delete
            record = await events.peek(key)
            if not await events.delete(key):
                return None
    except (SessionNotFound, InvalidSession):
        return None
    message = record.metadata.get("m")
    if not isinstance(message, dict) or str(message.get("id")) != str(request_id):
        return None
    return message


def misrouted(message: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The JSON-RPC error (no id) of a request this worker cannot serve, with
    :data:`MISROUTED_STATUS`."""
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}})
    return Response(body, status_code=MISROUTED_STATUS, media_type="application/json")


async def relay_or_refuse(
    events: AsyncSessionManager,
    session_id: str,
    answers: list[dict[str, Any]],
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Relay ``answers`` (none of them awaited here) to the worker that asked; the response
    to the client: 202, or a JSON-RPC error when the store could not keep them."""
    try:
        for answer in answers:
            await relay_answer(events, session_id, answer)
    except SessionKeeperError as exc:
        return misrouted(
            "this answers a request another worker sent, and it could not be relayed to that "
            f"worker ({exc}); send a session's requests to one worker (sticky sessions), or "
            "use protocol 2026-07-28"
        )
    return Response(status_code=202)


class RoamingRequests:
    """What a :class:`~sessionkeeper_mcp.PersistentSessionManager` does with the requests that
    belong to another worker (see the module docstring); one per manager.

    :param stores: relayed answers go to ``stores.events``.
    :param max_body: the largest POST body read to look for answers (the SDK's
        ``max_request_body_size``; larger ones are passed on unread).
    """

    def __init__(self, stores: McpStores, max_body: int | None = None) -> None:
        self.events = stores.events
        self.max_body = DEFAULT_MAX_BODY if max_body is None else max_body
        # The last request of each session held here (relayed answers are delivered like it).
        self._scopes: dict[str, Scope] = {}

    def forget(self, session_id: str) -> None:
        """The session is no longer held here."""
        self._scopes.pop(session_id, None)

    async def serve(
        self,
        session_id: str,
        transport: TrackingTransport,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> Receive | None:
        """Handle what belongs to another worker (see :mod:`sessionkeeper_mcp._roaming`);
        return the ``receive`` to serve the request with, or ``None`` when it was answered."""
        self._scopes[session_id] = scope
        method = scope.get("method")
        if method == "GET":
            last_event_id = header(scope, LAST_EVENT_HEADER)
            refusal = (
                None if last_event_id is None else await _unresumable(transport, last_event_id)
            )
            if refusal is not None:
                await refusal(scope, receive, send)
                return None
            return receive
        if method != "POST":
            return receive
        body, receive = await read_body(receive, self.max_body)
        found = [] if body is None else messages_of(body)
        answers = [m for m in found if is_answer(m)]
        if (
            answers
            and len(answers) == len(found)
            and not any(m["id"] in transport.outgoing for m in answers)
        ):
            log.info("session %s: relaying answers to another worker", session_id[:64])
            await (await relay_or_refuse(self.events, session_id, answers))(scope, receive, send)
            return None
        for message in found:
            if is_answer(message):
                transport.outgoing.discard(message["id"])
            elif message.get("id") is not None and "method" in message:
                transport.running.add(message["id"])
        return receive

    async def deliver(self, session_id: str, transport: TrackingTransport) -> None:
        """Deliver to ``transport`` the answers another worker relayed for its requests."""
        scope = self._scopes.get(session_id)
        if scope is None:
            return
        version = header(scope, PROTOCOL_VERSION_HEADER)
        for request_id in transport.outgoing:
            answer = await take_answer(self.events, session_id, request_id)
            if answer is None:
                continue
            transport.outgoing.discard(request_id)
            status = Status()
            await transport.handle_request(
                replay_scope(scope, session_id, version),
                body_once(json_rpc(answer), status),
                status.send,
            )
            log.info("session %s: delivered an answer relayed by another worker", session_id[:64])


async def _unresumable(
    transport: TrackingTransport, last_event_id: str
) -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
    """The error for a ``Last-Event-ID`` this worker cannot resume, or ``None``."""
    events: Any = transport.events
    if isinstance(events, SessionEventStore):
        return None  # shared: any worker replays (and ends the stream if not running it)
    if events is None:
        return misrouted(
            f"Last-Event-ID {last_event_id[:64]!r} cannot be resumed: this server keeps no "
            "events (serve it with resumable=True to resume on any worker)"
        )

    async def discard(_event: Any) -> None:
        return None

    if await events.replay_events_after(last_event_id, discard) is not None:
        return None
    return misrouted(
        f"Last-Event-ID {last_event_id[:64]!r} is unknown on this worker: its events are "
        "kept by the worker that sent them (serve with resumable=True to keep them in the "
        "shared store, or send a session's requests to one worker)"
    )
