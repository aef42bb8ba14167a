"""The drop-in Streamable HTTP session manager whose sessions live in sessionkeeper.

How a request is served (``_handle_stateful_request``):

1. No ``mcp-session-id``: the SDK opens the session as usual; before the response to the
   ``initialize`` request leaves, the session is recorded (:class:`SessionRecord`: the
   ``initialize`` params, the protocol version and the owning credential), so the client's next
   request finds it on any worker.
2. A session id: its record is fetched (which slides ``last_accessed``). No live record (never
   existed, expired, deleted by another worker): 404, and a copy held here is dropped. A record of
   another credential: 404. A live record this process does not hold: the session is brought back
   by replaying the client's handshake (``initialize`` with the stored params, then
   ``notifications/initialized``) into a fresh SDK transport with the same id; then the request
   is served.
3. ``DELETE`` removes the record, its events and its state everywhere.

A watch task re-checks the sessions held here every ``check_interval`` seconds, drops those whose
record went away (so an open GET stream of a deleted session ends), keeps the records of
sessions with a request in flight (a long GET stream) from expiring, and runs the stores' cleanup.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator
from typing import Any, Final
from uuid import uuid4

import anyio
from starlette.types import Message, Receive, Scope, Send

from sessionkeeper import InvalidSession, Session, SessionKeeperError, SessionNotFound

from ._asgi import (
    PROTOCOL_VERSION_HEADER,
    SESSION_HEADER,
    Status,
    body_once,
    error,
    header,
    initialize_params,
    json_rpc,
    no_body,
    replay_scope,
)
from ._compat import check_manager_attributes
from ._events import SessionEventStore, SessionKeeperEventStore, purge_session_events
from ._record import SessionRecord
from ._roaming import RoamingRequests, TrackingTransport
from ._state import purge_session_state
from ._stores import McpStores

from mcp.server.auth.middleware.bearer_auth import (  # isort: skip
    AuthenticatedUser,
    authorization_context,
)
from mcp.server.streamable_http import (  # isort: skip
    StreamableHTTPServerTransport,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager  # isort: skip

__all__ = ["PersistentSessionManager"]

log = logging.getLogger("sessionkeeper_mcp")

#: The JSON-RPC id of the replayed ``initialize`` request.
REHYDRATE_REQUEST_ID: Final = "sessionkeeper-rehydrate"


class PersistentSessionManager(StreamableHTTPSessionManager):
    """A ``StreamableHTTPSessionManager`` whose sessions survive restarts and roam across workers.

    Takes the SDK manager's arguments (``app``, ``event_store``, ``json_response``,
    ``security_settings``, ``retry_interval``, ``session_idle_timeout``, …) plus:

    :param stores: the sessionkeeper stores (:class:`McpStores`); every worker of a deployment
        must use the same store (sqlitedict for one process, zmq or redis for several).
    :param check_interval: seconds between re-checks of the sessions held by this process
        (``0`` turns the watch task off; requests are checked against the store either way).

    ``event_store`` may be a :class:`SessionKeeperEventStore` (resumable across workers: each
    session's transport gets a view scoped by its id) or any SDK ``EventStore`` (used as is).
    The stored session expires after ``session_idle_timeout`` seconds without a request on any
    worker (``None``: never).
    """

    def __init__(
        self,
        *args: Any,
        stores: McpStores,
        check_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_manager_attributes(self)
        if not (math.isfinite(check_interval) and check_interval >= 0):
            raise ValueError(
                f"check_interval must be a number of seconds >= 0, got {check_interval}"
            )
        self.stores = stores
        self.check_interval = check_interval
        self._restoring: dict[str, anyio.Lock] = {}
        self._in_flight: dict[str, int] = {}
        # Sessions admitted here whose record is not stored yet (their initialize is running).
        self._opening: set[str] = set()
        self._roaming = RoamingRequests(stores, getattr(self, "max_request_body_size", None))
        self._server_instances: dict[str, StreamableHTTPServerTransport]
        self._session_owners: dict[str, Any]

    # --- settings ---------------------------------------------------------------------------

    @property
    def timeout_ms(self) -> int | None:
        """The stored sessions' idle timeout in ms (from ``session_idle_timeout``)."""
        seconds = self.session_idle_timeout
        return None if seconds is None else max(1, math.ceil(seconds * 1000))

    def _now(self) -> int:
        return self.stores.sessions.sync.clock()

    # --- lifecycle --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Run the SDK manager and this manager's watch task (in the app's lifespan)."""
        async with super().run(), anyio.create_task_group() as tg:
            if self.check_interval:
                tg.start_soon(self._watch, name="sessionkeeper-mcp-watch")
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    async def _watch(self) -> None:
        cleanup_every = self.stores.sessions.config.cleanup_interval / 1000
        next_cleanup = anyio.current_time() + cleanup_every
        while True:
            await anyio.sleep(self.check_interval)
            try:
                await self.check_sessions()
                if cleanup_every and anyio.current_time() >= next_cleanup:
                    next_cleanup = anyio.current_time() + cleanup_every
                    await self.stores.cleanup_expired()
            except SessionKeeperError:
                log.exception("checking the sessions held by this worker failed; retrying")

    async def check_sessions(self) -> int:
        """Drop the sessions held here whose record is gone; keep busy ones alive.

        Returns how many were dropped. Called by the watch task; callable directly.
        """
        dropped = 0
        timeout = self.timeout_ms
        for session_id, transport in list(self._server_instances.items()):
            if session_id in self._opening:
                continue
            try:
                stored = await self.stores.sessions.peek(session_id)
            except (SessionNotFound, InvalidSession):
                await self._forget(session_id, transport)
                await self._purge(session_id)
                dropped += 1
                continue
            if isinstance(transport, TrackingTransport) and transport.outgoing:
                await self._roaming.deliver(session_id, transport)
            if (
                self._in_flight.get(session_id)
                and timeout is not None
                and self._now() - stored.last_accessed > timeout // 4
            ):
                with contextlib.suppress(SessionNotFound):
                    await self.stores.sessions.touch(session_id)
        return dropped

    # --- the request path -------------------------------------------------------------------

    async def _handle_stateful_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = header(scope, SESSION_HEADER)
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        if session_id is None:
            await self._open_session(requestor, scope, receive, send)
            return

        transport = self._server_instances.get(session_id)
        try:
            stored = await self.stores.sessions.fetch(session_id)
        except (SessionNotFound, InvalidSession):
            stored = None
        except SessionKeeperError:
            log.exception("session store failed reading session %s", session_id[:64])
            await error(503, "Session store unavailable")(scope, receive, send)
            return
        record = SessionRecord.from_session(stored) if stored is not None else None
        if record is None:
            if transport is not None:
                log.info("session %s ended elsewhere; dropping it here", session_id)
                await self._forget(session_id, transport)
                await self._purge(session_id)
            await error(404, "Session not found")(scope, receive, send)
            return
        if not record.owned_by(requestor):
            log.warning(
                "Rejecting request for session %s: credential does not match the one that "
                "created the session",
                session_id[:64],
            )
            await error(404, "Session not found")(scope, receive, send)
            return
        if transport is None:
            transport = await self._restore(session_id, record, requestor, scope)
            if transport is None:
                await error(503, "Could not restore the session")(scope, receive, send)
                return

        if isinstance(transport, TrackingTransport):
            served = await self._roaming.serve(session_id, transport, scope, receive, send)
            if served is None:
                return
            receive = served
        if scope.get("method") == "DELETE":
            send = self._deleting_send(session_id, send)
        self._in_flight[session_id] = self._in_flight.get(session_id, 0) + 1
        try:
            await transport.handle_request(scope, receive, send)
        finally:
            left = self._in_flight.get(session_id, 1) - 1
            if left > 0:
                self._in_flight[session_id] = left
            else:
                self._in_flight.pop(session_id, None)
        if transport.is_terminated:
            await self._discard_session(session_id, transport)

    def _deleting_send(self, session_id: str, send: Send) -> Send:
        """``send`` that deletes the session everywhere before a successful DELETE is answered.

        Deleting first means no client can see the 200 and then reach a worker that still
        finds the record.
        """

        async def deleting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 300:
                await self.stores.sessions.delete(session_id)
                await self._purge(session_id)
            await send(message)

        return deleting_send

    async def _open_session(
        self, requestor: Any, scope: Scope, receive: Receive, send: Send
    ) -> None:
        async with self._session_creation_lock:
            transport = self._admit_session(requestor)
        if transport is None:
            log.warning("Refusing to open a new session: %d sessions are open", self.max_sessions)
            await error(503, "Too many open sessions", -32603)(scope, receive, send)
            return
        session_id = transport.mcp_session_id
        assert session_id is not None
        body = bytearray()

        async def capturing_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        recorded = False
        refused = False

        async def recording_send(message: Message) -> None:
            nonlocal recorded, refused
            if refused:
                return
            if message["type"] == "http.response.start" and message["status"] < 400:
                headers = dict(message.get("headers", []))
                if headers.get(SESSION_HEADER, b"").decode("latin-1") == session_id:
                    try:
                        recorded = await self._record(session_id, bytes(body), requestor)
                    except SessionKeeperError:
                        log.exception("could not record new session %s", session_id)
                        refused = True
                        await error(503, "Session store unavailable")(scope, no_body, send)
                        return
            await send(message)

        self._opening.add(session_id)
        try:
            await self._serve_opening_request(transport, scope, capturing_receive, recording_send)
        finally:
            self._opening.discard(session_id)
        if refused:
            await self._forget(session_id, transport)
        elif not recorded and session_id in self._server_instances:
            log.warning("session %s opened without an initialize request to record", session_id)

    async def _record(self, session_id: str, body: bytes, requestor: Any) -> bool:
        """Store the record of a session whose opening request was ``body``."""
        params = initialize_params(body)
        if params is None:
            return False
        version = params.get("protocolVersion")
        record = SessionRecord(
            initialize=params,
            protocol_version=version if isinstance(version, str) else "",
            owner=dict(requestor) if requestor is not None else None,
        )
        now = self._now()
        await self.stores.sessions.store(
            Session(session_id, now, now, self.timeout_ms, record.to_metadata())
        )
        return True

    # --- bringing a session back ------------------------------------------------------------

    async def _restore(
        self, session_id: str, record: SessionRecord, requestor: Any, scope: Scope
    ) -> StreamableHTTPServerTransport | None:
        lock = self._restoring.setdefault(session_id, anyio.Lock())
        try:
            async with lock:
                transport = self._server_instances.get(session_id)
                if transport is not None:
                    return transport
                return await self._replay_handshake(session_id, record, requestor, scope)
        finally:
            if not lock.statistics().tasks_waiting:
                self._restoring.pop(session_id, None)

    async def _replay_handshake(
        self, session_id: str, record: SessionRecord, requestor: Any, scope: Scope
    ) -> StreamableHTTPServerTransport | None:
        if self.max_sessions is not None and len(self._server_instances) >= self.max_sessions:
            log.warning("Refusing to restore session %s: too many sessions open", session_id)
            return None
        events = self._event_view(session_id)
        if events is not None:
            events.muted = True
        transport = self._new_transport(session_id, events)
        self._server_instances[session_id] = transport
        if requestor is not None:
            self._session_owners[session_id] = requestor

        initialize = json_rpc(
            {
                "jsonrpc": "2.0",
                "id": REHYDRATE_REQUEST_ID,
                "method": "initialize",
                "params": record.initialize,
            }
        )
        status = Status()
        await self._serve_opening_request(
            transport, replay_scope(scope, None, None), body_once(initialize, status), status.send
        )
        if self._server_instances.get(session_id) is not transport or not status.ok:
            log.warning(
                "could not restore session %s (initialize answered %s)", session_id, status.code
            )
            return None
        version = header(scope, PROTOCOL_VERSION_HEADER) or record.protocol_version or None
        initialized = json_rpc({"jsonrpc": "2.0", "method": "notifications/initialized"})
        status = Status()
        await transport.handle_request(
            replay_scope(scope, session_id, version), body_once(initialized, status), status.send
        )
        if not status.ok:
            log.warning(
                "could not restore session %s (initialized answered %s)", session_id, status.code
            )
            await self._forget(session_id, transport)
            return None
        if events is not None:
            events.muted = False
        log.info("restored session %s from the store", session_id)
        return transport

    # --- SDK hooks --------------------------------------------------------------------------

    def _admit_session(self, requestor: Any) -> StreamableHTTPServerTransport | None:
        """The SDK's admission, with a transport whose event store is scoped by the session."""
        if self.max_sessions is not None and len(self._server_instances) >= self.max_sessions:
            return None
        session_id = uuid4().hex
        transport = self._new_transport(session_id)
        if requestor is not None:
            self._session_owners[session_id] = requestor
        self._server_instances[session_id] = transport
        log.info("Created new transport with session ID: %s", session_id)
        return transport

    def _event_view(self, session_id: str) -> SessionEventStore | None:
        store: object = self.event_store  # the SDK types it as its own EventStore only
        if isinstance(store, SessionKeeperEventStore):
            return store.for_session(session_id)
        return None

    def _new_transport(
        self, session_id: str, view: SessionEventStore | None = None
    ) -> TrackingTransport:
        event_store: Any = view if view is not None else self._event_view(session_id)
        if event_store is None:
            event_store = self.event_store
        transport = TrackingTransport(
            mcp_session_id=session_id,
            is_json_response_enabled=self.json_response,
            event_store=event_store,
            security_settings=self.security_settings,
            retry_interval=self.retry_interval,
            idle_timeout=self.session_idle_timeout,
        )
        transport.events = event_store
        if isinstance(event_store, SessionEventStore):
            event_store.running = transport.running
        return transport

    async def _discard_session(
        self, session_id: str, transport: StreamableHTTPServerTransport
    ) -> None:
        """Forget a session here (idle here, crashed, shut down); its record stays in the store.

        Only this transport is forgotten: a newer copy restored under the same id stays.
        """
        if self._server_instances.get(session_id) is transport:
            self._roaming.forget(session_id)
            await super()._discard_session(session_id, transport)
        elif not transport.is_terminated:
            with anyio.CancelScope(shield=True):
                await transport.terminate()

    async def _forget(self, session_id: str, transport: StreamableHTTPServerTransport) -> None:
        if not transport.is_terminated:
            with anyio.CancelScope(shield=True):
                await transport.terminate()
        await self._discard_session(session_id, transport)

    # --- ending sessions --------------------------------------------------------------------

    async def end_session(self, session_id: str) -> bool:
        """Delete ``session_id``'s record, events and state everywhere; True if it was stored.

        Workers that hold the session stop serving it at their next request for it (or their
        next watch round).
        """
        deleted = await self.stores.sessions.delete(session_id)
        await self._purge(session_id)
        transport = self._server_instances.get(session_id)
        if transport is not None:
            await self._forget(session_id, transport)
        return deleted

    async def _purge(self, session_id: str) -> None:
        try:
            await purge_session_events(self.stores.events, session_id)
            await purge_session_state(self.stores.state, session_id)
        except SessionKeeperError:
            log.exception("could not purge the events and state of session %s", session_id)
