"""One cluster node's I/O agent: a thread that owns the sockets and the protocol state.

The agent is the one thread that touches a ZeroMQ socket. Application threads apply a write to
the replica under its lock (which appends it to the backlog) and wake the agent; for an
acknowledged write they wait on a :class:`~._replication.Waiter` that the agent completes.

Each loop iteration the agent polls its sockets, dispatches what arrived, sends what is due and
runs its timers. What it does is kept in rooms, one idea each, that :class:`Agent` puts
together:

- :mod:`._transport`: the sockets, send and reply, the authenticator, the fault hooks;
- :mod:`._messages`: the messages, one class per kind, decoded from the wire;
- :mod:`._replication`: this node's stream out, the peers' streams in, acks and remote reads;
- :mod:`._catchup`: the phases of catching up (delta, snapshot, anti-entropy) and serving them;
- :mod:`._isolation`: a node cut off past the tombstone horizon;
- this module: liveness (PING, PONG, BYE), the dispatch tables (message class -> handler, one
  table for requests on the ROUTER and one for replies on the DEALERs), the loop and timers,
  and what the backend asks of the node.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

from sessionkeeper import Session

from . import _messages as msg
from ._catchup import CatchUp, Phase, Source
from ._isolation import Isolation
from ._messages import Message
from ._options import ZmqOptions
from ._replica import HLC, Entry, Replica
from ._replication import Stream, Waiter
from ._transport import MessageFaults, NodeAuthenticator, Peer, Transport, mono
from ._wire import WireError

__all__ = ["Agent", "MessageFaults", "Waiter"]

log = logging.getLogger("sessionkeeper.zmq")

#: The granularity of the timers (pings, suspicion, resends, catch-up, anti-entropy).
_TICK_S: Final = 0.005
#: How long :meth:`Agent.stop` waits for the agent thread (which then closes its sockets).
STOP_WAIT_S = 5.0
#: Requests a node answers from what it holds (refused while it may be stale).
SERVES: Final = frozenset((msg.Sync, msg.Credit, msg.Delta, msg.Digest, msg.Pull, msg.Read))

M = TypeVar("M", bound=Message)
Handler = Callable[[Peer, Any], None]


class Agent:
    """The node's I/O thread and the protocol state it owns.

    :param options: the validated options.
    :param replica: the node's replica (shared with the application threads).
    :param public_key: this node's CURVE public key (Z85), ``None`` without CURVE.
    :param secret_key: this node's CURVE secret key (Z85), ``None`` without CURVE.
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
        #: This process's incarnation: its start stamp, larger than any earlier one's.
        self.inc = HLC().now()
        self.started = mono()
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
            "ae_buckets_deferred": 0,
            "clock_skew_alarms": 0,
            "send_would_block": 0,
            "remote_reads": 0,
            "handler_errors": 0,
            "isolation_restarts": 0,
            "deltas_taken": 0,
            "deltas_served": 0,
            "peer_reconnects": 0,
        }
        self.transport = Transport(
            options, self.counters, public_key=public_key, secret_key=secret_key
        )
        self.peers: dict[str, Peer] = {}
        self.stream = Stream(self)
        self.catchup = CatchUp(self)
        self.source = Source(self)
        self.isolation = Isolation(self)
        #: Set once caught up (and cleared while a resync runs).
        self.ready = threading.Event()
        #: Called with the wall ms the node went alone, under the replica's lock, when the node
        #: forgets what it held from before an isolation past the horizon (the log restarts).
        self.on_restart: Callable[[int], None] | None = None
        #: Why the agent thread died (a bug), or None.
        self.failure: str | None = None
        self._req = itertools.count(1)
        self._stop = False
        self._thread: threading.Thread | None = None
        self._timers_due = 0.0
        self._requests: dict[type[Message], Handler] = {}
        self._replies: dict[type[Message], Handler] = {}
        self._table()

    def _table(self) -> None:
        """The dispatch tables: which method handles each message, as a request (ROUTER) and
        as a reply (DEALER). A message of a class not in the table is refused."""
        stream, catchup, source = self.stream, self.catchup, self.source

        def request(cls: type[M], handler: Callable[[Peer, M], None]) -> None:
            self._requests[cls] = handler

        def reply(cls: type[M], handler: Callable[[Peer, M], None]) -> None:
            self._replies[cls] = handler

        request(msg.Ping, self._on_ping)
        request(msg.Repl, stream.on_repl)
        request(msg.Bye, self._on_bye)
        request(msg.NeedSync, catchup.on_need_sync)
        request(msg.Push, source.on_push)
        request(msg.Delta, source.on_delta)
        request(msg.Sync, source.on_sync)
        request(msg.Credit, source.on_credit)
        request(msg.Digest, source.on_digest)
        request(msg.Pull, source.on_pull)
        request(msg.Read, source.on_read)
        reply(msg.Pong, self._on_pong)
        reply(msg.Ack, stream.on_ack)
        reply(msg.ReadReply, stream.on_read_reply)
        reply(msg.DeltaOk, catchup.on_delta_ok)
        reply(msg.DeltaNo, catchup.on_delta_no)
        reply(msg.Chunk, catchup.on_chunk)
        reply(msg.End, catchup.on_end)
        reply(msg.DigestKeys, catchup.on_digest_keys)
        reply(msg.Push, catchup.on_pushed)

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def faults(self) -> MessageFaults | None:
        """Test-only: drop or duplicate outgoing messages (see :class:`MessageFaults`)."""
        return self.transport.faults

    @faults.setter
    def faults(self, faults: MessageFaults | None) -> None:
        self.transport.faults = faults

    @property
    def auth(self) -> NodeAuthenticator | None:
        """The ZAP handler (``None`` without CURVE, or before :meth:`start`)."""
        return self.transport.auth

    def restore_seen(self, seen: dict[str, tuple[int, int]]) -> None:
        """Before :meth:`start`: the positions in the peers' streams that this node's disc copy
        holds (``origin -> (incarnation, seq)``). The node then catches up by asking each peer to
        resend from there out of its backlog (delta) instead of taking a snapshot."""
        node_ids = self.transport.node_ids
        restored = {o: [inc, seq] for o, (inc, seq) in seen.items() if o in node_ids}
        restored.pop(self.node_id, None)
        if restored:
            self.stream.seen.update(restored)
            self.catchup.phase = Phase.DELTA

    def positions(self) -> dict[str, list[int]]:
        """How far this node holds each peer's stream (any thread): ``origin -> [inc, seq]``."""
        return {origin: list(position) for origin, position in dict(self.stream.seen).items()}

    def start(self) -> None:
        """Bind, connect and start the agent thread (raises ``zmq.ZMQError`` on bind)."""
        self.peers.update(self.transport.start(self.started))
        if not self.peers:
            self.catchup.phase = Phase.READY
            self.ready.set()
        self._thread = threading.Thread(
            target=self._run, name=f"sessionkeeper-zmq-{self.node_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, which says goodbye to the peers and closes its sockets. Idempotent.

        Waits :data:`STOP_WAIT_S` at most: an agent thread still busy then (a handler waiting
        for the replica's lock across a slow fsync, a machine starved of CPU) closes its
        sockets itself when its loop ends; they are never closed under it from here (libzmq
        aborts the process on a socket closed while another thread is inside a call on it).
        """
        if self._stop:
            return
        self._stop = True
        thread = self._thread
        if thread is None:
            self.transport.close()  # never started: this thread owns the sockets
        else:
            self.wake()
            thread.join(timeout=STOP_WAIT_S)
            if thread.is_alive():
                log.warning(
                    "the zmq node agent of %s did not stop within %.0f s; it closes its "
                    "sockets when its current step ends",
                    self.node_id,
                    STOP_WAIT_S,
                )
        self.stream.release_waiters()

    def wake(self) -> None:
        """Make the agent look at the backlog and its queues (any thread)."""
        self.transport.wake()

    def next_req(self) -> int:
        """A fresh request id (agent thread, and readers handing over a local miss)."""
        return next(self._req)

    # -- what application threads ask -------------------------------------------------------------

    def in_contact(self) -> bool:
        """True while some peer is heard from (or the cluster is this node alone)."""
        return not self.peers or self._hears_a_peer()

    def _hears_a_peer(self, besides: Peer | None = None) -> bool:
        """True while a peer (other than ``besides``) was heard within ``suspect_after_ms``;
        told in PING and PONG as "accompanied" (see :mod:`._isolation`)."""
        limit = mono() - self.options.suspect_after_ms / 1000
        return any(
            p is not besides and p.heard_ever and p.last_heard >= limit for p in self.peers.values()
        )

    def alive_peers(self) -> int:
        """Peers heard from within ``suspect_after_ms``."""
        limit = mono() - self.options.suspect_after_ms / 1000
        return sum(1 for peer in self.peers.values() if peer.last_heard >= limit)

    def watch(self, seq: int, needed: int) -> Waiter:
        """Start counting the nodes that hold op ``seq`` (its event is set at ``needed``)."""
        return self.stream.watch(seq, needed)

    def wait_acks(self, seq: int, needed: int, timeout_s: float) -> int:
        """Block until ``needed`` nodes hold op ``seq``; return how many did (timeout)."""
        waiter = self.watch(seq, needed)
        waiter.event.wait(timeout_s)
        return len(waiter.acks) + 1

    def remote_read(self, key: str) -> list[tuple[Entry, Session | None]]:
        """Ask the live peers for ``key`` (a local miss while catching up)."""
        return self.stream.remote_read(key)

    # -- the loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        transport, stream, source = self.transport, self.stream, self.source
        try:
            while not self._stop:
                busy = source.busy() or stream.busy()
                router_ready, dealers_ready = transport.poll(0 if busy else 50)
                if router_ready:
                    transport.drain_router(self._on_request)
                for peer in dealers_ready:
                    transport.drain_dealer(peer, self._on_reply)
                stream.take_waiters()
                stream.take_reads()
                stream.flush_acks()
                stream.replicate()
                source.serve_syncs()
                self._timers()
        except Exception as exc:  # a bug: make it visible, fail writes instead of hanging
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("the zmq node agent of %s stopped", self.node_id)
        finally:
            try:
                transport.say_goodbye(self.inc)
            finally:
                transport.close()  # the sockets' one thread closes them

    # -- dispatch ---------------------------------------------------------------------------------

    def _on_request(self, peer: Peer, message: Message) -> None:
        handler = self._requests.get(type(message))
        if handler is None:
            raise WireError(f"{message.KIND.decode()} is not a request")
        if self.isolation.stale and type(message) in SERVES:
            return  # what this node holds may be stale: serve nothing until a peer decides
        handler(peer, message)

    def _on_reply(self, peer: Peer, message: Message) -> None:
        handler = self._replies.get(type(message))
        if handler is None:
            raise WireError(f"{message.KIND.decode()} is not a reply")
        handler(peer, message)

    # -- liveness ---------------------------------------------------------------------------------

    def heard(self, peer: Peer, inc: int, request: bool = False) -> None:
        """``peer`` (incarnation ``inc``) spoke: it is alive; a new incarnation restarted and
        lost whatever it had of our stream (``request``: it spoke on our ROUTER)."""
        peer.last_heard = mono()
        peer.heard_ever = True
        self.isolation.heard()
        if inc != peer.inc:
            if peer.inc:
                log.info("node %s: peer %s restarted", self.node_id, peer.id)
                if request:
                    self.transport.reconnect(peer)
            peer.inc = inc
            # It lost whatever it had of our stream: stream new ops; it catches up by sync.
            peer.acked = 0
            peer.acked_at = mono()
            peer.sent_upto = self.replica.seq
            seen = self.stream.seen.get(peer.id)
            if seen is None or seen[0] < inc:
                self.stream.seen[peer.id] = [inc, 0]

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

    def _on_ping(self, peer: Peer, message: msg.Ping) -> None:
        if message.node != peer.id:
            self.counters["identity_mismatch"] += 1
            raise WireError(f"PING from {peer.id} claims to be {message.node}")
        self.heard(peer, message.inc, request=True)
        self._check_skew(peer, message.hlc)
        peer.seq, peer.root, peer.ready = message.seq, message.root, message.ready
        if self.isolation.stale:
            self.isolation.judge(peer, message.ready and message.accompanied)
        seen = self.stream.seen.get(peer.id)
        acked_inc, acked = (seen[0], seen[1]) if seen is not None else (0, 0)
        replica = self.replica
        pong = msg.Pong(
            self.node_id,
            self.inc,
            replica.seq,
            replica.hlc.last,
            acked_inc,
            acked,
            replica.root(),
            self.catchup.ready,
            self._hears_a_peer(besides=peer),
        )
        self.transport.reply(peer.ident, pong)

    def _on_pong(self, peer: Peer, message: msg.Pong) -> None:
        if message.node != peer.id:
            raise WireError(f"PONG from {peer.id} claims to be {message.node}")
        self.heard(peer, message.inc)
        self._check_skew(peer, message.hlc)
        peer.connected = True
        peer.seq, peer.root, peer.ready = message.seq, message.root, message.ready
        if self.isolation.stale:
            self.isolation.judge(peer, message.ready and message.accompanied)
        self.stream.acked(peer, message.acked_inc, message.acked)

    def _on_bye(self, peer: Peer, message: msg.Bye) -> None:
        if message.inc == peer.inc:
            peer.last_heard = 0.0
            peer.connected = False

    def _ping(self, peer: Peer) -> None:
        replica = self.replica
        ping = msg.Ping(
            self.node_id,
            self.inc,
            replica.seq,
            replica.hlc.last,
            replica.root(),
            self.catchup.ready,
            self._hears_a_peer(besides=peer),
        )
        self.transport.send(peer, ping)

    # -- timers -----------------------------------------------------------------------------------

    def _timers(self) -> None:
        now = mono()
        if now < self._timers_due:
            return  # every loop runs it: keep its work to one round per _TICK_S
        self._timers_due = now + _TICK_S
        interval = self.options.heartbeat_ms / 1000
        suspect = self.options.suspect_after_ms / 1000
        stream = self.stream
        for peer in self.peers.values():
            if now >= peer.next_ping:
                fast = not peer.connected
                peer.next_ping = now + (min(0.1, interval) if fast else interval)
                self._ping(peer)
            if now - peer.last_heard > suspect:
                peer.connected = False
            stream.check_stalled(peer, now, interval)
        self.isolation.watch(now)
        if stream.pending:
            stream.expire_waiters(now)
        if stream.read_pending:
            stream.forget_answered_reads()
        self.catchup.drive(now)

    # -- figures ----------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """This node's view of the cluster (JSON-compatible)."""
        now = mono()
        suspect = self.options.suspect_after_ms / 1000
        root = self.replica.root()
        peers = {}
        for peer in self.peers.values():
            seen = self.stream.seen.get(peer.id)
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
                "digest_equal": peer.root == root,
            }
        faults = self.transport.faults
        return {
            "phase": self.catchup.phase.value,
            **self.isolation.describe(now),
            "peers": peers,
            "incarnation": self.inc,
            "auth_rejected": self.auth.rejected if self.auth is not None else 0,
            "failure": self.failure,
            "faults": None
            if faults is None
            else {"dropped": faults.dropped, "duplicated": faults.duplicated},
            **self.counters,
        }
