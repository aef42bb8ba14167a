"""A node's sockets: how messages leave and arrive, and who may send them.

ZeroMQ sockets are not thread-safe, so only the agent thread (:mod:`._node`) calls into a
:class:`Transport` (except :meth:`Transport.wake`, which any thread may call), and that thread
also closes them (:meth:`Transport.close`, at the end of its loop): a socket closed or a
context destroyed by another thread while the agent is inside libzmq aborts the process.

- one ROUTER, bound to this node's endpoint, CURVE server: receives every request from peers
  and answers on the same connection;
- one DEALER per peer (:class:`Peer`), connected to the peer's ROUTER with the peer's public key
  pinned: sends this node's requests and receives the answers;
- a pipe that application threads write a byte to (:meth:`Transport.wake`), so that the agent
  looks at its queues now rather than at its next poll timeout;
- the ZAP handler (:class:`NodeAuthenticator`), which admits exactly the configured nodes' keys
  and names each connection by its node id (the ``User-Id`` checked on every request).

Every send is non-blocking: a send that would block marks the peer disconnected (it is caught
up later by the stream's resend or by anti-entropy), and the agent never waits on a slow or
stopped peer. Received frames are decoded into typed messages (:mod:`._messages`) and handed
to the agent's dispatch; a frame that fails a check is dropped and counted, and a handler that
raises is logged and counted without taking the node down. :class:`MessageFaults` is the
test-only hook that drops or duplicates outgoing messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from ._messages import Bye, Message, decode
from ._options import NodeSpec, ZmqOptions
from ._wire import MAX_MESSAGE, WireError, encode

__all__ = ["MessageFaults", "NodeAuthenticator", "Peer", "Transport", "mono"]

log = logging.getLogger("sessionkeeper.zmq")

#: Messages taken from one socket per loop iteration (the others get their turn).
_DRAIN: Final = 2_000
_HWM: Final = 100_000
#: The ceiling of ZeroMQ's reconnect back-off towards a peer that is down.
_RECONNECT_MAX_MS: Final = 500

#: What handles a message from a peer.
Handler = Callable[["Peer", Message], None]


def mono() -> float:
    """The agent's clock: monotonic seconds."""
    return time.monotonic()


class MessageFaults:
    """Test-only fault injection: drop or duplicate this node's outgoing messages.

    Set :attr:`Agent.faults <._node.Agent.faults>` to an instance (the chaos harness does,
    through its control channel); every message the agent sends to a peer (requests and replies
    alike) is then dropped with probability ``drop``, or else sent twice with probability
    ``duplicate``. ZeroMQ over TCP never loses or repeats a message on a live connection, so
    this is how the tests exercise gap repair and idempotence. ``None`` (the default) costs one
    attribute test.
    """

    __slots__ = ("drop", "dropped", "duplicate", "duplicated", "rng")

    def __init__(self, drop: float = 0.0, duplicate: float = 0.0, seed: int | None = None) -> None:
        if not (0.0 <= drop < 1.0 and 0.0 <= duplicate <= 1.0):
            raise ValueError("drop must be in [0, 1) and duplicate in [0, 1]")
        self.drop = drop
        self.duplicate = duplicate
        self.rng = random.Random(seed)  # noqa: S311 - fault injection, not security
        self.dropped = 0
        self.duplicated = 0

    def copies(self) -> int:
        """How many times to send the next message: 0, 1 or 2."""
        roll = self.rng.random()
        if roll < self.drop:
            self.dropped += 1
            return 0
        if roll < self.drop + self.duplicate * (1.0 - self.drop):
            self.duplicated += 1
            return 2
        return 1


class Peer:
    """What this node knows of one peer, and the DEALER connected to it."""

    def __init__(self, spec: NodeSpec, dealer: zmq.Socket[bytes], started: float) -> None:
        self.spec = spec
        self.id = spec.id
        self.ident = spec.id.encode()
        self.dealer = dealer
        #: The peer's incarnation (0: not heard yet).
        self.inc = 0
        self.last_heard = started  # optimistic until the first timeout
        self.heard_ever = False
        #: It answers our requests (a PONG came back): our sends to it may go through.
        self.connected = False
        self.acked = 0  # of this node's stream (current incarnation)
        self.acked_at = started
        #: This node's stream has been sent to it up to here.
        self.sent_upto = 0
        #: The last seq of the peer's own stream, as it told.
        self.seq = 0
        #: The digest root of the peer's replica, as it told.
        self.root = b""
        self.ready = False
        self.next_ping = 0.0
        self.needsync_sent = 0.0


class NodeAuthenticator(ThreadAuthenticator):
    """ZAP handler: accepts exactly the configured nodes' public keys; User-Id = node id."""

    def __init__(self, context: zmq.Context[Any], ids_by_key: dict[bytes, str]) -> None:
        super().__init__(context)
        self.ids_by_key = ids_by_key
        self.rejected = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.ids_by_key:
            return True
        self.rejected += 1
        log.warning("refused a CURVE connection from an unknown key")
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.ids_by_key.get(z85.encode(client_public_key), "")


class Transport:
    """The sockets, the wake-up pipe and the authenticator of one node.

    :param options: the validated options.
    :param counters: the node's counters (``dropped_frames``, ``identity_mismatch``,
        ``send_would_block``, ``handler_errors``, ``peer_reconnects`` are counted here).
    :param public_key: this node's CURVE public key (Z85), ``None`` without CURVE.
    :param secret_key: this node's CURVE secret key (Z85), ``None`` without CURVE.
    """

    def __init__(
        self,
        options: ZmqOptions,
        counters: dict[str, int],
        *,
        public_key: bytes | None,
        secret_key: bytes | None,
    ) -> None:
        self.options = options
        self.node_id = options.node_id
        self.node_ids = frozenset(node.id for node in options.nodes)
        self.counters = counters
        self._public_key = public_key
        self._secret_key = secret_key
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.auth: NodeAuthenticator | None = None
        self.router: zmq.Socket[bytes] = self.ctx.socket(zmq.ROUTER)
        self.by_ident: dict[bytes, Peer] = {}
        self._dealers: dict[zmq.Socket[bytes], Peer] = {}
        self._poller = zmq.Poller()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        #: Guards the pipe's descriptors against :meth:`close`: a wake() after it must not
        #: write to a descriptor number the process may have reused (a file, a socket).
        self._pipe_lock = threading.Lock()
        self._pipe_open = True
        #: A wake-up byte is in the pipe (or being written): later wake() calls write nothing.
        self.signalled = False
        #: Test-only: drop or duplicate outgoing messages (see :class:`MessageFaults`).
        self.faults: MessageFaults | None = None

    # -- set-up and tear-down -------------------------------------------------------------------

    def _tune(self, sock: zmq.Socket[bytes]) -> None:
        """Options every socket of the node gets.

        No ZMTP heartbeats (``ZMQ_HEARTBEAT_IVL``): with them, libzmq 4.3 aborts the whole
        process ("Assertion failed: !_io_error (src/stream_engine_base.cpp)") when a
        connection whose input it stopped ends before its next heartbeat, which is what a
        ROUTER does to a connection whose routing id another one took over
        (``ROUTER_HANDOVER``: a peer reconnecting after a restart, see :meth:`reconnect`)
        once that peer leaves. Liveness is the nodes' own PING and PONG
        (``heartbeat_ms``, ``suspect_after_ms``); a peer heard restarting is reconnected.
        """
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        sock.setsockopt(zmq.SNDHWM, _HWM)
        sock.setsockopt(zmq.RCVHWM, _HWM)

    def start(self, started: float) -> dict[str, Peer]:
        """Start the authenticator, bind the ROUTER, connect a DEALER to every peer; return
        the peers by id (raises ``zmq.ZMQError`` on bind)."""
        options = self.options
        router = self.router
        self._tune(router)
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if options.curve:
            assert self._secret_key is not None
            assert self._public_key is not None
            ids = {node.public_key.encode(): node.id for node in options.peers}
            self.auth = NodeAuthenticator(self.ctx, ids)
            self.auth.start()
            self.auth.configure_curve_callback(
                domain=options.cluster_id, credentials_provider=self.auth
            )
            router.curve_secretkey = self._secret_key
            router.curve_publickey = self._public_key
            router.curve_server = True
            router.zap_domain = options.cluster_id.encode()
        router.bind(options.bind or options.me.endpoint)
        peers: dict[str, Peer] = {}
        for spec in options.peers:
            dealer: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
            self._tune(dealer)
            dealer.setsockopt(zmq.ROUTING_ID, self.node_id.encode())
            dealer.setsockopt(zmq.IMMEDIATE, 1)
            dealer.setsockopt(zmq.RECONNECT_IVL, 100)
            # A short back-off ceiling (ZeroMQ's grows to 2 s here otherwise); a peer heard
            # again after a restart is also reconnected at once (see reconnect).
            dealer.setsockopt(zmq.RECONNECT_IVL_MAX, _RECONNECT_MAX_MS)
            if options.curve:
                assert self._secret_key is not None
                assert self._public_key is not None
                dealer.curve_secretkey = self._secret_key
                dealer.curve_publickey = self._public_key
                dealer.curve_serverkey = spec.public_key.encode()
            dealer.connect(spec.endpoint)
            peer = Peer(spec, dealer, started)
            peers[spec.id] = peer
            self.by_ident[peer.ident] = peer
            self._dealers[dealer] = peer
        self._poller.register(router, zmq.POLLIN)
        for dealer in self._dealers:
            self._poller.register(dealer, zmq.POLLIN)
        self._poller.register(self._rfd, zmq.POLLIN)
        return peers

    def say_goodbye(self, inc: int) -> None:
        """Tell every peer this node leaves (:class:`~._messages.Bye`), if the sockets live."""
        if self.ctx.closed:
            return
        body = encode(Bye(self.node_id, inc).to_wire())
        for peer in self.by_ident.values():
            with contextlib.suppress(zmq.ZMQError):
                peer.dealer.send_multipart([Bye.KIND, body], flags=zmq.NOBLOCK)

    def close(self) -> None:
        """Stop the authenticator, close the sockets and the pipe. Idempotent.

        Called by the thread that uses the sockets: the agent's, as its loop ends, or the one
        that built the transport when no agent thread ever ran (``ctx.destroy`` closes every
        socket from the calling thread: from any other, it races the agent inside libzmq).
        """
        if self.ctx.closed:
            return
        try:
            if self.auth is not None:
                self.auth.stop()
        finally:
            self.ctx.destroy(linger=0)
            with self._pipe_lock:
                self._pipe_open = False
                for fd in (self._rfd, self._wfd):
                    with contextlib.suppress(OSError):
                        os.close(fd)

    @property
    def closed(self) -> bool:
        """The sockets are closed (the agent thread ended, or never ran)."""
        return bool(self.ctx.closed)

    def reconnect(self, peer: Peer) -> None:
        """Connect the DEALER to ``peer`` again now: the peer restarted, and ZeroMQ would
        otherwise retry only after its back-off, while the peer waits for this node's stream
        to catch up (a delta goes through this socket)."""
        endpoint = peer.spec.endpoint
        with contextlib.suppress(zmq.ZMQError):  # not connected any more: connect is enough
            peer.dealer.disconnect(endpoint)
        peer.dealer.connect(endpoint)
        peer.connected = False
        peer.next_ping = 0.0
        self.counters["peer_reconnects"] += 1

    # -- waking and polling ---------------------------------------------------------------------

    def wake(self) -> None:
        """Make the agent look at its queues now (any thread; nothing once closed)."""
        if not self.signalled:
            with self._pipe_lock:
                if not self._pipe_open:
                    return
                self.signalled = True
                with contextlib.suppress(BlockingIOError, OSError):
                    os.write(self._wfd, b"\0")

    def poll(self, timeout_ms: int) -> tuple[bool, list[Peer]]:
        """Wait up to ``timeout_ms`` for input; return whether the ROUTER has some, and the
        peers whose DEALER has some. A wake-up is taken on the way."""
        events = dict(self._poller.poll(timeout_ms))
        if self._rfd in events:
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._rfd, 4096)
            # Only now, after draining: a wake() seen as already signalled before this line is
            # one whose work the agent does next. Cleared first, a wake() landing between the
            # clear and the read lost its byte and left the flag set, and every later wake()
            # was lost with it.
            self.signalled = False
        dealers = self._dealers
        ready = [
            dealers[sock] for sock in events if isinstance(sock, zmq.Socket) and sock in dealers
        ]
        return self.router in events, ready

    # -- sending --------------------------------------------------------------------------------

    def _emit(self, sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
        """Send one message without blocking (raises ``zmq.ZMQError``)."""
        faults = self.faults
        if faults is not None:
            copies = faults.copies()
            if copies == 0:
                return
            if copies == 2:
                sock.send_multipart(frames, flags=zmq.NOBLOCK)
        sock.send_multipart(frames, flags=zmq.NOBLOCK)

    def send(self, peer: Peer, message: Message) -> bool:
        """Send a request to ``peer``; False (and the peer marked disconnected) if it could not
        go now."""
        return self.send_encoded(peer, message.KIND, encode(message.to_wire()))

    def send_encoded(self, peer: Peer, kind: bytes, body: bytes) -> bool:
        """:meth:`send` of a body already encoded (one encoding sent to several peers)."""
        try:
            self._emit(peer.dealer, [kind, body])
            return True
        except zmq.Again:
            self.counters["send_would_block"] += 1
            peer.connected = False
            return False
        except zmq.ZMQError:
            peer.connected = False
            return False

    def reply(self, ident: bytes, message: Message) -> bool:
        """Answer the peer of routing id ``ident`` on its connection; False if it could not go
        now (the peer is gone, or its queue is full)."""
        try:
            self._emit(self.router, [ident, message.KIND, encode(message.to_wire())])
            return True
        except zmq.ZMQError:  # gone (ROUTER_MANDATORY) or full
            self.counters["send_would_block"] += 1
            return False

    # -- receiving ------------------------------------------------------------------------------

    def drop(self, reason: str) -> None:
        """Count a frame refused, and log the first ones (then one in a thousand)."""
        self.counters["dropped_frames"] += 1
        if self.counters["dropped_frames"] <= 10 or self.counters["dropped_frames"] % 1000 == 0:
            log.warning("node %s dropped a frame: %s", self.node_id, reason)

    def _handle(self, handler: Handler, peer: Peer, kind: bytes, body: bytes) -> None:
        try:
            handler(peer, decode(kind, body, self.node_ids))
        except WireError as exc:
            self.drop(str(exc))
        except Exception:  # a bug in a handler must not take the node down
            self.counters["handler_errors"] += 1
            log.exception("node %s: handling a %r message failed", self.node_id, kind[:16])

    def drain_router(self, on_request: Handler) -> None:
        """Hand the requests waiting on the ROUTER to ``on_request``, from configured peers
        whose CURVE identity matches their routing id."""
        router = self.router
        for _ in range(_DRAIN):
            try:
                frames = router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) != 3:
                self.drop(f"{len(frames)} frames")
                continue
            peer = self.by_ident.get(frames[0].bytes)
            if peer is None:
                self.drop("a routing id that is no configured peer")
                continue
            if self.options.curve:
                user = frames[1].get("User-Id")
                if user != peer.id:
                    self.counters["identity_mismatch"] += 1
                    self.drop(f"CURVE identity {user!r} claims to be node {peer.id!r}")
                    continue
            self._handle(on_request, peer, frames[1].bytes, frames[2].bytes)

    def drain_dealer(self, peer: Peer, on_reply: Handler) -> None:
        """Hand the replies waiting on ``peer``'s DEALER to ``on_reply``."""
        dealer = peer.dealer
        for _ in range(_DRAIN):
            try:
                frames = dealer.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.drop(f"{len(frames)} frames from {peer.id}")
                continue
            self._handle(on_reply, peer, frames[0], frames[1])
