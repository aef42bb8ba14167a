"""One cluster node's I/O agent: a thread that owns every ZeroMQ socket.

Sockets (ZeroMQ sockets are not thread-safe, so only the agent thread touches them):

- one ROUTER, bound to this node's endpoint, CURVE server: receives every request from peers
  (``PING``, ``REPL``, ``DELTA``, ``SYNC``/``CREDIT``, ``AE``, ``PULL``, ``READ``, ``BYE``) and
  answers on the same connection (``PONG``, ``ACK``, ``DELTAOK``/``DELTANO``, ``CHUNK``/``END``,
  ``AEKEYS``, ``PUSH``, ``RREP``);
- one DEALER per peer, connected to the peer's ROUTER with the peer's public key pinned:
  sends this node's requests and receives the answers.

Application threads never touch a socket: they apply a write to the replica under its lock,
which appends it to the backlog, then wake the agent through a pipe; for acknowledged writes they
wait on a :class:`Waiter` that the agent completes when enough peers have acknowledged.

Replication: each peer has a ``sent_upto`` into this node's backlog; every loop iteration sends
the ops after it, batched. Peers acknowledge cumulatively (highest contiguous sequence applied).
A peer whose acknowledgement stalls is rewound to resend from it; a peer behind the backlog is
told ``NEEDSYNC`` and takes a snapshot. Catch-up: a node that starts takes a chunked snapshot
from one peer under credit flow control, then runs one anti-entropy round with every other peer,
then it is ready. A ``disc_copies`` node that restarts with the positions it held in each peer's
stream asks every peer to resend from there out of its backlog (``DELTA``) instead, and takes
the snapshot only when a peer's backlog no longer reaches back that far. Anti-entropy compares
256 bucket hashes, then the entries of differing buckets.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from sessionkeeper import Session

from ._options import NodeSpec, ZmqOptions
from ._replica import BUCKETS, HLC, Entry, Replica
from ._wire import MAX_MESSAGE, WireError, decode, encode

__all__ = ["Agent", "MessageFaults", "Waiter"]

log = logging.getLogger("sessionkeeper.zmq")

_BATCH_OPS: Final = 2_000
_CHUNK: Final = 2_000
_SYNC_CREDIT: Final = 4
_DRAIN: Final = 2_000
_HWM: Final = 100_000
_READ_TIMEOUT_S: Final = 0.2
#: The granularity of the timers (pings, suspicion, resends, catch-up, anti-entropy).
_TICK_S: Final = 0.005
#: The ceiling of ZeroMQ's reconnect back-off towards a peer that is down.
_RECONNECT_MAX_MS: Final = 500
#: A delta catch-up that makes no progress for this long (or suspect_after_ms, if longer)
#: falls back to a snapshot.
_DELTA_STALL_S: Final = 2.0
#: Requests a node answers from what it holds (refused while it may be stale).
_SERVES: Final = frozenset((b"SYNC", b"CREDIT", b"DELTA", b"AE", b"PULL", b"READ"))


def _mono() -> float:
    return time.monotonic()


class MessageFaults:
    """Test-only fault injection: drop or duplicate this node's outgoing messages.

    Set :attr:`Agent.faults` to an instance (the chaos harness does, through its control
    channel); every message the agent sends to a peer (requests and replies alike) is then
    dropped with probability ``drop``, or else sent twice with probability ``duplicate``.
    ZeroMQ over TCP never loses or repeats a message on a live connection, so this is how the
    tests exercise gap repair and idempotence. ``None`` (the default) costs one attribute test.
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


class Waiter:
    """An acknowledged write waiting for ``needed`` nodes (itself included)."""

    __slots__ = ("acks", "created", "event", "needed", "seq")

    def __init__(self, seq: int, needed: int) -> None:
        self.created = _mono()
        self.seq = seq
        self.needed = needed
        self.acks: set[str] = set()
        self.event = threading.Event()


class _ReadRequest:
    __slots__ = ("answers", "event", "key", "pending", "req")

    def __init__(self, req: int, key: str, pending: int) -> None:
        self.req = req
        self.key = key
        self.pending = pending
        self.answers: list[tuple[Entry, Session | None]] = []
        self.event = threading.Event()


class Peer:
    """What this node knows of one peer."""

    def __init__(self, spec: NodeSpec, dealer: zmq.Socket[bytes], started: float) -> None:
        self.spec = spec
        self.id = spec.id
        self.ident = spec.id.encode()
        self.dealer = dealer
        self.inc = 0
        self.last_heard = started  # optimistic until the first timeout
        self.heard_ever = False
        self.connected = False
        self.acked = 0  # of this node's stream (current incarnation)
        self.acked_at = started
        self.sent_upto = 0
        self.seq = 0
        self.root = b""
        self.ready = False
        self.next_ping = 0.0
        self.needsync_sent = 0.0


class _SyncJob:
    """A snapshot being streamed to a peer (the server side of SYNC)."""

    def __init__(
        self, peer: bytes, req: int, keys: list[str], seen: dict[str, list[int]], credit: int
    ) -> None:
        self.peer = peer
        self.req = req
        self.keys = keys
        self.seen = seen
        self.credit = credit
        self.position = 0
        self.sent = 0
        self.touched = _mono()


class _NodeAuthenticator(ThreadAuthenticator):
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


class Agent:
    """The node's I/O thread and the protocol state it owns.

    :param options: the validated options.
    :param replica: the node's replica (shared with the application threads).
    :param secret_key: this node's CURVE secret key (Z85), ``None`` without CURVE.
    :param on_error: called with a message when the agent thread dies of a bug.
    """

    def __init__(
        self,
        options: ZmqOptions,
        replica: Replica,
        *,
        public_key: bytes | None,
        secret_key: bytes | None,
    ) -> None:
        self.options = options
        self.replica = replica
        self.node_id = options.node_id
        self.node_ids = frozenset(node.id for node in options.nodes)
        #: This process's incarnation: its start stamp, larger than any earlier one's.
        self.inc = HLC().now()
        self.started = _mono()
        #: A node that hears from no peer for this long serves alone (the first of a cluster).
        self._alone_after = max(options.ready_timeout_ms, 3 * options.suspect_after_ms) / 1000
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.auth: _NodeAuthenticator | None = None
        self._public_key = public_key
        self._secret_key = secret_key
        self.router: zmq.Socket[bytes] = self.ctx.socket(zmq.ROUTER)
        self.peers: dict[str, Peer] = {}
        self.by_ident: dict[bytes, Peer] = {}
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._signalled = False
        self._new_waiters: deque[Waiter] = deque()
        self._pending: dict[int, Waiter] = {}
        self._reads: deque[_ReadRequest] = deque()
        self._read_pending: dict[int, _ReadRequest] = {}
        self._stop = False
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        # Receiver side: origin -> [inc, contiguous seq]; None while unknown (before a sync).
        self.seen: dict[str, list[int]] = {}
        self._ack_due: set[str] = set()
        self._jobs: dict[tuple[bytes, int], _SyncJob] = {}
        self._req = itertools.count(1)
        # Catch-up state.
        self._phase = "sync"  # (delta or sync) -> ae -> ready
        # Delta catch-up (a restarted disc node): peer id -> the peer's seq when it agreed to
        # resend from its backlog (None: asked, no answer yet).
        self._delta: dict[str, int | None] = {}
        self._delta_at = 0.0
        self._delta_progress = 0
        self._delta_req = 0
        self._sync_from: Peer | None = None
        self._sync_req = 0
        self._sync_at = 0.0
        self._ae_waiting: dict[int, Peer] = {}
        self._ae_started: dict[int, float] = {}
        self._next_ae = 0.0
        self._timers_due = 0.0
        self._ae_turn = 0
        # Jitter only (not security); a private generator keeps the global one untouched.
        self._rng = random.Random()  # noqa: S311
        # Isolation: since when (monotonic, and wall ms) no peer was heard; past the tombstone
        # horizon the node is "stale" until a peer's PING or PONG decides (see _judge_isolation).
        self._alone_since: float | None = None
        self._alone_wall = 0
        self._stale = False
        #: Called with the wall ms the node went alone, under the replica's lock, when the node
        #: forgets what it held from before an isolation past the horizon (the log restarts).
        self.on_restart: Callable[[int], None] | None = None
        self.failure: str | None = None
        #: Test-only: drop or duplicate outgoing messages (see :class:`MessageFaults`).
        self.faults: MessageFaults | None = None
        self.counters: dict[str, int] = {
            "dropped_frames": 0,
            "identity_mismatch": 0,
            "repl_ops_received": 0,
            "repl_ops_sent": 0,
            "resends": 0,
            "syncs_served": 0,
            "syncs_taken": 0,
            "ae_rounds": 0,
            "ae_entries_pulled": 0,
            "ae_entries_pushed": 0,
            "clock_skew_alarms": 0,
            "send_would_block": 0,
            "remote_reads": 0,
            "handler_errors": 0,
            "isolation_restarts": 0,
            "deltas_taken": 0,
            "deltas_served": 0,
            "peer_reconnects": 0,
        }

    # -- lifecycle --------------------------------------------------------------------------------

    def _heartbeat(self, sock: zmq.Socket[bytes]) -> None:
        hb = self.options.heartbeat_ms
        sock.setsockopt(zmq.HEARTBEAT_IVL, hb)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * hb)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 6 * hb)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        sock.setsockopt(zmq.SNDHWM, _HWM)
        sock.setsockopt(zmq.RCVHWM, _HWM)

    def restore_seen(self, seen: dict[str, tuple[int, int]]) -> None:
        """Before :meth:`start`: the positions in the peers' streams that this node's disc copy
        holds (``origin -> (incarnation, seq)``). The node then catches up by asking each peer to
        resend from there out of its backlog (delta) instead of taking a snapshot."""
        restored = {o: [inc, seq] for o, (inc, seq) in seen.items() if o in self.node_ids}
        restored.pop(self.node_id, None)
        if restored:
            self.seen.update(restored)
            self._phase = "delta"

    def positions(self) -> dict[str, list[int]]:
        """How far this node holds each peer's stream (any thread): ``origin -> [inc, seq]``."""
        return {origin: list(position) for origin, position in dict(self.seen).items()}

    def start(self) -> None:
        """Bind, connect and start the agent thread (raises ``zmq.ZMQError`` on bind)."""
        options = self.options
        router = self.router
        self._heartbeat(router)
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if options.curve:
            assert self._secret_key is not None
            assert self._public_key is not None
            ids = {node.public_key.encode(): node.id for node in options.peers}
            self.auth = _NodeAuthenticator(self.ctx, ids)
            self.auth.start()
            self.auth.configure_curve_callback(
                domain=options.cluster_id, credentials_provider=self.auth
            )
            router.curve_secretkey = self._secret_key
            router.curve_publickey = self._public_key
            router.curve_server = True
            router.zap_domain = options.cluster_id.encode()
        router.bind(options.bind or options.me.endpoint)
        for spec in options.peers:
            dealer: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
            self._heartbeat(dealer)
            dealer.setsockopt(zmq.ROUTING_ID, self.node_id.encode())
            dealer.setsockopt(zmq.IMMEDIATE, 1)
            dealer.setsockopt(zmq.RECONNECT_IVL, 100)
            # A short back-off ceiling (ZeroMQ's grows to 2 s here otherwise); a peer heard
            # again after a restart is also reconnected at once (see _heard).
            dealer.setsockopt(zmq.RECONNECT_IVL_MAX, _RECONNECT_MAX_MS)
            if options.curve:
                assert self._secret_key is not None
                assert self._public_key is not None
                dealer.curve_secretkey = self._secret_key
                dealer.curve_publickey = self._public_key
                dealer.curve_serverkey = spec.public_key.encode()
            dealer.connect(spec.endpoint)
            peer = Peer(spec, dealer, self.started)
            self.peers[spec.id] = peer
            self.by_ident[peer.ident] = peer
        if not self.peers:
            self._phase = "ready"
            self.ready.set()
        self._thread = threading.Thread(
            target=self._run, name=f"sessionkeeper-zmq-{self.node_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Say goodbye to the peers, stop the thread, close the sockets. Idempotent."""
        if self._stop:
            return
        self._stop = True
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.destroy(linger=0)
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)
        for waiter in list(self._pending.values()) + list(self._new_waiters):
            waiter.event.set()

    def wake(self) -> None:
        """Make the agent look at the backlog and its queues (any thread)."""
        if not self._signalled:
            self._signalled = True
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wfd, b"\0")

    # -- what application threads ask -------------------------------------------------------------

    def in_contact(self) -> bool:
        """True while some peer is heard from (or the cluster is this node alone)."""
        return not self.peers or self._hears_a_peer()

    def _hears_a_peer(self, besides: Peer | None = None) -> bool:
        """True while a peer (other than ``besides``) was heard within ``suspect_after_ms``;
        told in PING and PONG as "accompanied" (see :meth:`_judge_isolation`)."""
        limit = _mono() - self.options.suspect_after_ms / 1000
        return any(
            p is not besides and p.heard_ever and p.last_heard >= limit for p in self.peers.values()
        )

    def alive_peers(self) -> int:
        """Peers heard from within ``suspect_after_ms``."""
        limit = _mono() - self.options.suspect_after_ms / 1000
        return sum(1 for peer in self.peers.values() if peer.last_heard >= limit)

    def watch(self, seq: int, needed: int) -> Waiter:
        """Start counting the nodes that hold op ``seq`` (its event is set at ``needed``)."""
        waiter = Waiter(seq, needed)
        self._new_waiters.append(waiter)
        self.wake()
        return waiter

    def wait_acks(self, seq: int, needed: int, timeout_s: float) -> int:
        """Block until ``needed`` nodes hold op ``seq``; return how many did (timeout)."""
        waiter = self.watch(seq, needed)
        waiter.event.wait(timeout_s)
        return len(waiter.acks) + 1

    def remote_read(self, key: str) -> list[tuple[Entry, Session | None]]:
        """Ask the live peers for ``key`` (a local miss while catching up)."""
        peers = [p for p in self.peers.values() if p.connected]
        if not peers:
            return []
        request = _ReadRequest(next(self._req), key, len(peers))
        self._reads.append(request)
        self.wake()
        request.event.wait(_READ_TIMEOUT_S)
        return list(request.answers)

    # -- the loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        for peer in self.peers.values():
            poller.register(peer.dealer, zmq.POLLIN)
        poller.register(self._rfd, zmq.POLLIN)
        dealers = {peer.dealer: peer for peer in self.peers.values()}
        try:
            while not self._stop:
                busy = bool(self._jobs) or any(
                    p.sent_upto < self.replica.seq and p.connected for p in self.peers.values()
                )
                events = dict(poller.poll(0 if busy else 50))
                if self._rfd in events:
                    with contextlib.suppress(BlockingIOError, OSError):
                        os.read(self._rfd, 4096)
                    # Only now, after draining: a wake() seen as already signalled before this
                    # line is one whose work is processed below. Cleared first, a wake()
                    # landing between the clear and the read lost its byte and left the flag
                    # set, and every later wake() was lost with it.
                    self._signalled = False
                if self.router in events:
                    self._drain_router()
                for sock in events:
                    found = dealers.get(sock) if isinstance(sock, zmq.Socket) else None
                    if found is not None:
                        self._drain_dealer(found)
                self._take_waiters()
                self._take_reads()
                self._flush_acks()
                self._replicate()
                self._serve_syncs()
                self._timers()
        except Exception as exc:  # a bug: make it visible, fail writes instead of hanging
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("the zmq node agent of %s stopped", self.node_id)
        finally:
            if not self.ctx.closed:
                for peer in self.peers.values():
                    with contextlib.suppress(zmq.ZMQError):
                        peer.dealer.send_multipart(
                            [b"BYE", encode([self.node_id, self.inc])], flags=zmq.NOBLOCK
                        )

    # -- sending ----------------------------------------------------------------------------------

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

    def _send_peer(self, peer: Peer, kind: bytes, body: Any) -> bool:
        try:
            self._emit(peer.dealer, [kind, encode(body)])
            return True
        except zmq.Again:
            self.counters["send_would_block"] += 1
            peer.connected = False
            return False
        except zmq.ZMQError:
            peer.connected = False
            return False

    def _reply(self, ident: bytes, kind: bytes, body: Any) -> bool:
        try:
            self._emit(self.router, [ident, kind, encode(body)])
            return True
        except zmq.ZMQError:  # gone (ROUTER_MANDATORY) or full
            self.counters["send_would_block"] += 1
            return False

    # -- receiving --------------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self.counters["dropped_frames"] += 1
        if self.counters["dropped_frames"] <= 10 or self.counters["dropped_frames"] % 1000 == 0:
            log.warning("node %s dropped a frame: %s", self.node_id, reason)

    def _handler_failed(self, kind: bytes) -> None:
        self.counters["handler_errors"] += 1
        log.exception("node %s: handling a %r message failed", self.node_id, kind[:16])

    def _drain_router(self) -> None:
        router = self.router
        for _ in range(_DRAIN):
            try:
                frames = router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) != 3:
                self._drop(f"{len(frames)} frames")
                continue
            ident = frames[0].bytes
            peer = self.by_ident.get(ident)
            if peer is None:
                self._drop("a routing id that is no configured peer")
                continue
            if self.options.curve:
                user = frames[1].get("User-Id")
                if user != peer.id:
                    self.counters["identity_mismatch"] += 1
                    self._drop(f"CURVE identity {user!r} claims to be node {peer.id!r}")
                    continue
            kind = frames[1].bytes
            try:
                fields = decode(kind, frames[2].bytes, self.node_ids)
                self._on_request(peer, kind, fields)
            except WireError as exc:
                self._drop(str(exc))
            except Exception:  # a bug in a handler must not take the node down
                self._handler_failed(kind)

    def _drain_dealer(self, peer: Peer) -> None:
        dealer = peer.dealer
        for _ in range(_DRAIN):
            try:
                frames = dealer.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self._drop(f"{len(frames)} frames from {peer.id}")
                continue
            kind, body = frames
            try:
                fields = decode(kind, body, self.node_ids)
                self._on_reply(peer, kind, fields)
            except WireError as exc:
                self._drop(str(exc))
            except Exception:  # a bug in a handler must not take the node down
                self._handler_failed(kind)

    def _heard(self, peer: Peer, inc: int, request: bool = False) -> None:
        peer.last_heard = _mono()
        peer.heard_ever = True
        if self._alone_since is not None and not self._stale:
            self._alone_since = None  # back in touch within the horizon: nothing was collected
        if inc != peer.inc:
            if peer.inc:
                log.info("node %s: peer %s restarted", self.node_id, peer.id)
                if request:
                    self._reconnect(peer)
            peer.inc = inc
            # It lost whatever it had of our stream: stream new ops; it catches up by sync.
            peer.acked = 0
            peer.acked_at = _mono()
            peer.sent_upto = self.replica.seq
            seen = self.seen.get(peer.id)
            if seen is None or seen[0] < inc:
                self.seen[peer.id] = [inc, 0]

    def _reconnect(self, peer: Peer) -> None:
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

    def _check_skew(self, peer: Peer, hlc: int) -> None:
        ahead = HLC.physical(hlc) - self.replica.hlc.wall()
        if ahead > self.options.max_clock_skew_ms:
            self.counters["clock_skew_alarms"] += 1
            if self.counters["clock_skew_alarms"] % 100 == 1:
                log.warning(
                    "node %s: clock of peer %s is %d ms ahead (max_clock_skew_ms=%d)",
                    self.node_id,
                    peer.id,
                    ahead,
                    self.options.max_clock_skew_ms,
                )

    def _on_request(self, peer: Peer, kind: bytes, f: Any) -> None:
        if kind == b"REPL":
            origin, inc, ops = f
            if origin != peer.id:
                self.counters["identity_mismatch"] += 1
                raise WireError(f"REPL from {peer.id} claims origin {origin}")
            self._heard(peer, inc, request=True)
            self._apply_stream(peer.id, inc, ops)
        elif kind == b"PING":
            node, inc, seq, hlc, root, ready, accompanied = f
            if node != peer.id:
                self.counters["identity_mismatch"] += 1
                raise WireError(f"PING from {peer.id} claims to be {node}")
            self._heard(peer, inc, request=True)
            self._check_skew(peer, hlc)
            peer.seq, peer.root, peer.ready = seq, root, ready
            if self._stale:
                self._judge_isolation(peer, ready and accompanied)
            seen = self.seen.get(peer.id)
            acked_inc, acked = (seen[0], seen[1]) if seen is not None else (0, 0)
            self._reply(
                peer.ident,
                b"PONG",
                [
                    self.node_id,
                    self.inc,
                    self.replica.seq,
                    self.replica.hlc.last,
                    acked_inc,
                    acked,
                    self.replica.root(),
                    self._phase == "ready",
                    self._hears_a_peer(besides=peer),
                ],
            )
        elif self._stale and kind in _SERVES:
            return  # what this node holds may be stale: serve nothing until a peer decides
        elif kind == b"DELTA":
            req, inc, seq = f
            self._serve_delta(peer, req, inc, seq)
        elif kind == b"SYNC":
            req, credit = f
            self._start_job(peer, req, credit)
        elif kind == b"CREDIT":
            req, credit = f
            job = self._jobs.get((peer.ident, req))
            if job is not None:
                job.credit += credit
                job.touched = _mono()
        elif kind == b"AE":
            req, hashes = f
            mine = self.replica.digest
            differing = [b for b in range(BUCKETS) if mine[b] != hashes[b]]
            summaries = self.replica.summaries(differing) if differing else []
            self._reply(peer.ident, b"AEKEYS", [req, differing, summaries])
        elif kind in (b"PULL", b"READ"):
            req, keys = f
            entries = [e for e in map(self.replica.entry, keys) if e is not None]
            self._reply(peer.ident, b"PUSH" if kind == b"PULL" else b"RREP", [req, entries])
        elif kind == b"PUSH":  # entries the peer found newer than ours during anti-entropy
            _req, entries = f
            self._merge_all(entries)
        elif kind == b"NEEDSYNC":
            inc = f
            if self._phase == "ready" and inc == self.inc:
                log.info("node %s is too far behind %s: resyncing", self.node_id, peer.id)
                self._begin_sync(prefer=peer)
        elif kind == b"BYE":
            node, inc = f
            if inc == peer.inc:
                peer.last_heard = 0.0
                peer.connected = False
        else:
            raise WireError(f"{kind.decode()} is not a request")

    def _on_reply(self, peer: Peer, kind: bytes, f: Any) -> None:
        if kind == b"ACK":
            inc, seq = f
            peer.last_heard = _mono()
            self._acked(peer, inc, seq)
        elif kind == b"PONG":
            node, inc, seq, hlc, acked_inc, acked, root, ready, accompanied = f
            if node != peer.id:
                raise WireError(f"PONG from {peer.id} claims to be {node}")
            self._heard(peer, inc)
            self._check_skew(peer, hlc)
            peer.connected = True
            peer.seq, peer.root, peer.ready = seq, root, ready
            if self._stale:
                self._judge_isolation(peer, ready and accompanied)
            self._acked(peer, acked_inc, acked)
        elif kind == b"DELTAOK":
            req, top = f
            if self._phase == "delta" and req == self._delta_req and peer.id in self._delta:
                self._delta[peer.id] = top
        elif kind == b"DELTANO":
            req = f
            if self._phase == "delta" and req == self._delta_req:
                log.info(
                    "node %s: %s cannot resend from its backlog; snapshot", self.node_id, peer.id
                )
                self._begin_sync(prefer=peer)
        elif kind == b"CHUNK":
            req, entries = f
            if req == self._sync_req and self._sync_from is peer:
                self._merge_all(entries)
                self._sync_at = _mono()
                self._send_peer(peer, b"CREDIT", [req, 1])
        elif kind == b"END":
            req, _total, seen = f
            if req == self._sync_req and self._sync_from is peer:
                self._finish_sync(peer, seen)
        elif kind == b"AEKEYS":
            req, buckets, summaries = f
            self._ae_compare(peer, req, buckets, summaries)
        elif kind == b"PUSH":
            req, entries = f
            self._merge_all(entries)
            self.counters["ae_entries_pulled"] += len(entries)
            self._ae_done(req)
        elif kind == b"RREP":
            req, entries = f
            request = self._read_pending.get(req)
            if request is not None:
                request.answers.extend(entries)
                request.pending -= 1
                if request.pending <= 0:
                    del self._read_pending[req]
                    request.event.set()
        else:
            raise WireError(f"{kind.decode()} is not a reply")

    # -- replication ------------------------------------------------------------------------------

    def _merge_all(self, entries: list[tuple[Entry, Session | None]]) -> None:
        merge = self.replica.merge
        for entry, session in entries:
            merge(entry, session, late=True)

    def _apply_stream(
        self, origin: str, inc: int, ops: list[tuple[int, Entry, Session | None]]
    ) -> None:
        seen = self.seen.get(origin)
        if seen is None or seen[0] < inc:
            seen = self.seen[origin] = [inc, 0]
        current = seen[0] == inc
        merge = self.replica.merge
        for seq, entry, session in ops:
            merge(entry, session)
            if current and seq == seen[1] + 1:
                seen[1] = seq
        self.counters["repl_ops_received"] += len(ops)
        if current:
            self._ack_due.add(origin)

    def _flush_acks(self) -> None:
        if not self._ack_due or self._phase == "sync":
            return
        for origin in self._ack_due:
            seen = self.seen.get(origin)
            peer = self.peers.get(origin)
            if seen is not None and peer is not None:
                self._reply(peer.ident, b"ACK", [seen[0], seen[1]])
        self._ack_due.clear()

    def _acked(self, peer: Peer, inc: int, seq: int) -> None:
        if inc != self.inc or seq <= peer.acked:
            return
        peer.acked = seq
        peer.acked_at = _mono()
        if peer.sent_upto < seq:
            peer.sent_upto = seq
        pending = self._pending
        if not pending:
            return
        done = []
        # Waiters are in the order writers handed them over, not in sequence order: look at
        # every one (a cumulative ACK may be the last this peer ever sends).
        for wseq, waiter in pending.items():
            if wseq > seq:
                continue
            waiter.acks.add(peer.id)
            if len(waiter.acks) + 1 >= waiter.needed:
                done.append(wseq)
                waiter.event.set()
        for wseq in done:
            del pending[wseq]

    def _take_waiters(self) -> None:
        while self._new_waiters:
            waiter = self._new_waiters.popleft()
            for peer in self.peers.values():
                if peer.acked >= waiter.seq:
                    waiter.acks.add(peer.id)
            if len(waiter.acks) + 1 >= waiter.needed:
                waiter.event.set()
            else:
                self._pending[waiter.seq] = waiter

    def _replicate(self) -> None:
        if self._stale:
            return  # its backlog may touch sessions deleted elsewhere: see _judge_isolation
        replica = self.replica
        top = replica.seq
        groups: dict[int, list[Peer]] = {}
        for peer in self.peers.values():
            if peer.connected and peer.sent_upto < top:
                groups.setdefault(peer.sent_upto, []).append(peer)
        if not groups:
            return
        for start, peers in groups.items():
            with replica.lock:
                backlog = replica.backlog
                first = replica.seq - len(backlog) + 1
                if start + 1 < first:
                    ops = None
                else:
                    begin = start + 1 - first
                    end = min(len(backlog), begin + _BATCH_OPS)
                    ops = [backlog[i] for i in range(begin, end)]
            if ops is None:
                for peer in peers:
                    now = _mono()
                    if now - peer.needsync_sent > 2.0:
                        peer.needsync_sent = now
                        self._send_peer(peer, b"NEEDSYNC", [peer.inc])
                    peer.sent_upto = top  # stream new ops; the snapshot brings the rest
                continue
            if not ops:
                continue
            body = encode([self.node_id, self.inc, [[seq, list(entry)] for seq, entry in ops]])
            last = ops[-1][0]
            for peer in peers:
                try:
                    self._emit(peer.dealer, [b"REPL", body])
                except zmq.ZMQError:
                    self.counters["send_would_block"] += 1
                    peer.connected = False
                    continue
                peer.sent_upto = last
                self.counters["repl_ops_sent"] += len(ops)

    # -- snapshots (catch-up) ---------------------------------------------------------------------

    def _start_job(self, peer: Peer, req: int, credit: int) -> None:
        with self.replica.lock:
            keys = list(self.replica.versions)
            seen = {origin: list(position) for origin, position in self.seen.items()}
            seen[self.node_id] = [self.inc, self.replica.seq]
        self._jobs[(peer.ident, req)] = _SyncJob(peer.ident, req, keys, seen, min(credit, 64))
        self.counters["syncs_served"] += 1

    def _serve_syncs(self) -> None:
        if not self._jobs:
            return
        now = _mono()
        for key, job in list(self._jobs.items()):
            if job.credit <= 0:
                if now - job.touched > 30:
                    del self._jobs[key]  # the taker went away
                continue
            chunk = job.keys[job.position : job.position + _CHUNK]
            job.position += len(chunk)
            if chunk:
                entries = [e for e in map(self.replica.entry, chunk) if e is not None]
                if not self._reply(job.peer, b"CHUNK", [job.req, entries]):
                    del self._jobs[key]
                    continue
                job.sent += len(entries)
                job.credit -= 1
            if job.position >= len(job.keys):
                self._reply(job.peer, b"END", [job.req, job.sent, job.seen])
                del self._jobs[key]

    # -- delta catch-up (a restarted disc node) ----------------------------------------------------

    def _serve_delta(self, peer: Peer, req: int, inc: int, seq: int) -> None:
        """A restarted peer holds this node's stream up to ``(inc, seq)``: resend from there if
        the backlog still has it."""
        replica = self.replica
        with replica.lock:
            top = replica.seq
            first = top - len(replica.backlog) + 1
        if inc != self.inc or not first - 1 <= seq <= top:
            self._reply(peer.ident, b"DELTANO", [req])
            return
        peer.sent_upto = seq
        peer.acked = seq
        peer.acked_at = _mono()
        self.counters["deltas_served"] += 1
        self._reply(peer.ident, b"DELTAOK", [req, top])

    def _drive_delta(self, now: float) -> None:
        live = [p for p in self.peers.values() if p.connected]
        if not self._delta:
            if not live:
                self._maybe_alone(now)
                return
            missing = [p for p in live if p.id not in self.seen]
            if missing:
                self._begin_sync(prefer=missing[0])  # its stream is not on disc here
                return
            self._delta_req = next(self._req)
            self._delta_at = now
            self._delta_progress = -1
            for peer in live:
                inc, seq = self.seen[peer.id]
                if self._send_peer(peer, b"DELTA", [self._delta_req, inc, seq]):
                    self._delta[peer.id] = None
            return
        # Done first: reaching the target just as the deadline passes is success.
        reached = all(
            top is not None and self.seen[origin][1] >= top for origin, top in self._delta.items()
        )
        if reached:
            self.counters["deltas_taken"] += 1
            self._start_ae_round(exclude=None)
            return
        # The deadline counts from the last progress (an answer, or ops received), so a long
        # resend under write load is not cut short while it moves.
        progress = sum(self.seen[origin][1] for origin in self._delta) + sum(
            1 for top in self._delta.values() if top is not None
        )
        if progress != self._delta_progress:
            self._delta_progress = progress
            self._delta_at = now
        elif now - self._delta_at > max(self.options.suspect_after_ms / 1000, _DELTA_STALL_S):
            log.info("node %s: delta catch-up stalled; snapshot", self.node_id)
            self._begin_sync()

    def _start_ae_round(self, exclude: Peer | None) -> None:
        """After a snapshot or a delta: one anti-entropy round with every other live peer,
        then ready."""
        self._phase = "ae"
        self._ae_waiting.clear()
        for peer in self.peers.values():
            if peer is not exclude and peer.connected:
                self._start_ae(peer)
        self._maybe_ready()

    def _begin_sync(self, prefer: Peer | None = None) -> None:
        candidates = [p for p in self.peers.values() if p.connected]
        if prefer is not None and prefer.connected:
            candidates = [prefer]
        ready_ones = [p for p in candidates if p.ready]
        pool = ready_ones or candidates
        choice: Peer | None = pool[0] if pool else None
        self._phase = "sync"
        self._delta.clear()
        self.ready.clear()
        if choice is None:
            self._sync_from = None
            return
        self._sync_from = choice
        self._sync_req = next(self._req)
        self._sync_at = _mono()
        self._send_peer(choice, b"SYNC", [self._sync_req, _SYNC_CREDIT])

    def _finish_sync(self, source: Peer, seen: dict[str, tuple[int, int]]) -> None:
        for origin, (inc, seq) in seen.items():
            if origin == self.node_id:
                continue
            mine = self.seen.get(origin)
            if mine is None or mine[0] < inc or (mine[0] == inc and mine[1] < seq):
                self.seen[origin] = [inc, seq]
            self._ack_due.add(origin)
        self.counters["syncs_taken"] += 1
        self._sync_from = None
        self._start_ae_round(exclude=source)

    def _maybe_ready(self) -> None:
        if self._phase == "ae" and not self._ae_waiting:
            self._phase = "ready"
            self.ready.set()
            log.info("node %s is ready", self.node_id)

    # -- anti-entropy -----------------------------------------------------------------------------

    def _start_ae(self, peer: Peer) -> None:
        req = next(self._req)
        if self._send_peer(peer, b"AE", [req, list(self.replica.digest)]):
            self._ae_waiting[req] = peer
            self._ae_started[req] = _mono()
            self.counters["ae_rounds"] += 1

    def _ae_compare(
        self, peer: Peer, req: int, buckets: list[int], summaries: list[tuple[str, int, str, int]]
    ) -> None:
        if req not in self._ae_waiting:
            return
        replica = self.replica
        theirs = {key: (hlc, node, la) for key, hlc, node, la in summaries}
        pull = []
        for key, state in theirs.items():
            entry = replica.entry(key)
            if entry is None or state > (entry[1], entry[2], entry[3]):
                pull.append(key)
        push = []
        if buckets:
            for key, hlc, node, la in replica.summaries(buckets):
                known = theirs.get(key)
                if known is None or known < (hlc, node, la):
                    entry = replica.entry(key)
                    if entry is not None:
                        push.append(entry)
        for start in range(0, len(push), _CHUNK):
            self._send_peer(peer, b"PUSH", [req, push[start : start + _CHUNK]])
        self.counters["ae_entries_pushed"] += len(push)
        if pull:
            for start in range(0, len(pull), _CHUNK):
                last = start + _CHUNK >= len(pull)
                sub = req if last else next(self._req)
                self._send_peer(peer, b"PULL", [sub, pull[start : start + _CHUNK]])
        else:
            self._ae_done(req)

    def _ae_done(self, req: int) -> None:
        if self._ae_waiting.pop(req, None) is not None:
            self._ae_started.pop(req, None)
            self._maybe_ready()

    # -- reads of a local miss --------------------------------------------------------------------

    def _take_reads(self) -> None:
        while self._reads:
            request = self._reads.popleft()
            sent = 0
            for peer in self.peers.values():
                if peer.connected and self._send_peer(peer, b"READ", [request.req, [request.key]]):
                    sent += 1
            if sent:
                request.pending = sent
                self._read_pending[request.req] = request
                self.counters["remote_reads"] += 1
            else:
                request.event.set()

    # -- timers -----------------------------------------------------------------------------------

    def _timers(self) -> None:
        now = _mono()
        if now < self._timers_due:
            return  # every loop runs it: keep its work to one round per _TICK_S
        self._timers_due = now + _TICK_S
        options = self.options
        interval = options.heartbeat_ms / 1000
        suspect = options.suspect_after_ms / 1000
        for peer in self.peers.values():
            if now >= peer.next_ping:
                fast = not peer.connected
                peer.next_ping = now + (min(0.1, interval) if fast else interval)
                self._send_peer(
                    peer,
                    b"PING",
                    [
                        self.node_id,
                        self.inc,
                        self.replica.seq,
                        self.replica.hlc.last,
                        self.replica.root(),
                        self._phase == "ready",
                        self._hears_a_peer(besides=peer),
                    ],
                )
            if now - peer.last_heard > suspect:
                peer.connected = False
            # Stalled acknowledgements: resend from what the peer has.
            if (
                peer.connected
                and peer.acked < peer.sent_upto
                and now - peer.acked_at > max(2 * interval, 0.5)
            ):
                peer.sent_upto = peer.acked
                peer.acked_at = now
                self.counters["resends"] += 1
        self._watch_isolation(now)
        if self._pending:
            self._expire_waiters(now)
        if self._read_pending:
            for req, request in list(self._read_pending.items()):
                if request.event.is_set():
                    del self._read_pending[req]
        # Catch-up.
        if self._phase == "delta":
            self._drive_delta(now)
        elif self._phase == "sync":
            if self._sync_from is None:
                if any(p.connected for p in self.peers.values()):
                    self._begin_sync()
                else:
                    self._maybe_alone(now)
            elif now - self._sync_at > max(suspect, 2.0):
                self._begin_sync()  # the source went quiet: start over with another
        elif self._phase == "ae":
            for req, started in list(self._ae_started.items()):
                if now - started > max(suspect, 2.0):
                    self._ae_done(req)  # gave up on that peer; the periodic round will retry
        # Periodic anti-entropy with one peer at a time.
        if (
            options.anti_entropy_ms
            and self._phase == "ready"
            and not self._stale
            and now >= self._next_ae
        ):
            period = options.anti_entropy_ms / 1000
            self._next_ae = now + period * self._rng.uniform(0.8, 1.2)
            live = [p for p in self.peers.values() if p.connected]
            if live:
                self._ae_turn = (self._ae_turn + 1) % len(live)
                peer = live[self._ae_turn]
                if peer.root != self.replica.root():
                    self._start_ae(peer)
            for req, started in list(self._ae_started.items()):
                if now - started > 10 * max(suspect, 2.0):
                    self._ae_done(req)

    # -- isolation past the tombstone horizon -----------------------------------------------------

    def _watch_isolation(self, now: float) -> None:
        if self._alone_since is None:
            if self._phase == "ready" and self.peers and not self.in_contact():
                suspect = self.options.suspect_after_ms
                self._alone_since = now - suspect / 1000
                self._alone_wall = self.replica.hlc.wall() - suspect
        elif not self._stale and now - self._alone_since > self.options.tombstone_ttl_ms / 1000:
            self._stale = True
            log.warning(
                "node %s has heard no peer for longer than tombstone_ttl_ms (%d s): it serves "
                "its peers nothing until one tells whether the rest of the cluster went on",
                self.node_id,
                self.options.tombstone_ttl_ms // 1000,
            )

    def _judge_isolation(self, peer: Peer, went_on: bool) -> None:
        """The first peer heard after an isolation past the horizon decides what to keep.

        ``went_on``: that peer is ready and hears another node, so the cluster went on without
        this node and may have collected tombstones of deletes it never saw: this node then
        forgets what it held from before (keeping what it stored or deleted itself while
        alone), restarts its stream as a new incarnation and resyncs from that peer. Otherwise
        (a peer alone too, or one that restarted and is catching up) there is no fresher view,
        and the node keeps its copy.
        """
        self._stale = False
        self._alone_since = None
        if not went_on:
            log.warning(
                "node %s: back in touch with %s, which has no fresher view; keeping its copy",
                self.node_id,
                peer.id,
            )
            return
        replica = self.replica
        since = self._alone_wall
        with replica.lock:
            if self.on_restart is not None:
                self.on_restart(since)
            forgotten = replica.restart_keeping_own(since)
        self.inc = max(self.inc + 1, HLC().now())
        self.seen.clear()
        self._ack_due.clear()
        now = _mono()
        for other in self.peers.values():
            other.acked = 0
            other.acked_at = now
            other.sent_upto = 0
        for waiter in self._pending.values():
            waiter.event.set()  # their outcome is undetermined: the writers time out
        self._pending.clear()
        self.counters["isolation_restarts"] += 1
        log.warning(
            "node %s was cut off from its cluster past the tombstone horizon: forgot %d "
            "entries held from before, kept %d of its own, resyncing from %s",
            self.node_id,
            forgotten,
            replica.seq,
            peer.id,
        )
        self._begin_sync(prefer=peer)

    def _maybe_alone(self, now: float) -> None:
        """Catching up with no peer connected: once none has answered for long enough, this
        is the first node of its cluster to start, and it serves what it has."""
        if now - self.started > self._alone_after and not any(
            p.heard_ever for p in self.peers.values()
        ):
            log.warning(
                "node %s: no peer answered within %.1f s; serving what it has",
                self.node_id,
                self._alone_after,
            )
            self._phase = "ready"
            self.ready.set()

    def _expire_waiters(self, now: float) -> None:
        # A writer that timed out stopped waiting by itself; forget its waiter.
        limit = self.options.write_timeout_ms / 1000 + 1
        for seq, waiter in list(self._pending.items()):
            if now - waiter.created <= limit:
                break
            del self._pending[seq]

    # -- figures ----------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """This node's view of the cluster (JSON-compatible)."""
        now = _mono()
        suspect = self.options.suspect_after_ms / 1000
        peers = {}
        for peer in self.peers.values():
            seen = self.seen.get(peer.id)
            peers[peer.id] = {
                "alive": now - peer.last_heard <= suspect and peer.heard_ever,
                "connected": peer.connected,
                "ready": peer.ready,
                "last_heard_ms_ago": None
                if not peer.heard_ever
                else round((now - peer.last_heard) * 1000),
                "acked_seq": peer.acked,
                "unacked_ops": max(0, self.replica.seq - peer.acked),
                "lag_ops": max(0, peer.seq - seen[1]) if seen is not None else None,
                "digest_equal": peer.root == self.replica.root(),
            }
        return {
            "phase": self._phase,
            "alone_for_ms": None
            if self._alone_since is None
            else round((now - self._alone_since) * 1000),
            "stale": self._stale,
            "peers": peers,
            "incarnation": self.inc,
            "auth_rejected": self.auth.rejected if self.auth is not None else 0,
            "failure": self.failure,
            "faults": None
            if self.faults is None
            else {"dropped": self.faults.dropped, "duplicated": self.faults.duplicated},
            **self.counters,
        }
