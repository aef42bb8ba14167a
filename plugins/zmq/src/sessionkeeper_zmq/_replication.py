"""The replication stream: this node's operations out to its peers, theirs in, and the acks.

Out: application threads apply a write to the replica under its lock, which appends it to the
backlog with the next sequence number, and wake the agent. Each peer has a ``sent_upto`` into
this node's backlog; every loop iteration :meth:`Stream.replicate` sends the ops after it as
:class:`~._messages.Repl` batches (one encoding for every peer at the same position). Peers
acknowledge cumulatively (:class:`~._messages.Ack`: highest contiguous sequence applied); a
write acknowledged at W > 1 waits on a :class:`Waiter` that the agent completes when W nodes
hold it. A peer whose acknowledgement stalls is rewound to resend from it; a peer behind the
backlog is told :class:`~._messages.NeedSync` and takes a snapshot.

In: :meth:`Stream.on_repl` merges a peer's ops and advances :attr:`Stream.seen`, how far this
node holds each origin's stream (the position a disc node records, and a restarted one asks a
delta from). Merges are idempotent, so ops are applied whatever their order; only the
contiguous position is acknowledged.

Remote reads: a local miss while this node catches up asks the live peers
(:class:`~._messages.Read`) and waits briefly for their answers (:class:`ReadRequest`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from sessionkeeper import Session

from ._catchup import Phase
from ._messages import Ack, NeedSync, Read, ReadReply, Repl
from ._replica import Entry
from ._transport import Peer, mono
from ._wire import Checked, WireError, encode

if TYPE_CHECKING:
    from ._node import Agent

__all__ = ["ReadRequest", "Stream", "Waiter"]

#: Ops per REPL message.
_BATCH_OPS: Final = 2_000
#: How long a local miss waits for the peers' answers.
_READ_TIMEOUT_S: Final = 0.2


class Waiter:
    """An acknowledged write waiting for ``needed`` nodes (itself included)."""

    __slots__ = ("acks", "created", "event", "needed", "seq")

    def __init__(self, seq: int, needed: int) -> None:
        self.created = mono()
        self.seq = seq
        self.needed = needed
        self.acks: set[str] = set()
        self.event = threading.Event()


class ReadRequest:
    """A local miss asked of the peers: their answers, and how many are still due."""

    __slots__ = ("answers", "event", "key", "pending", "req")

    def __init__(self, req: int, key: str, pending: int) -> None:
        self.req = req
        self.key = key
        self.pending = pending
        self.answers: list[Checked] = []
        self.event = threading.Event()


class Stream:
    """The stream state of one node: where each peer is in ours, where we are in theirs."""

    def __init__(self, node: Agent) -> None:
        self.node = node
        #: Receiver side: origin -> [inc, contiguous seq] of its stream held here.
        self.seen: dict[str, list[int]] = {}
        #: Origins whose position moved since the last ACK this node sent them.
        self.ack_due: set[str] = set()
        self._new_waiters: deque[Waiter] = deque()
        self.pending: dict[int, Waiter] = {}
        self._reads: deque[ReadRequest] = deque()
        self.read_pending: dict[int, ReadRequest] = {}

    # -- what application threads ask ---------------------------------------------------------

    def watch(self, seq: int, needed: int) -> Waiter:
        """Start counting the nodes that hold op ``seq`` (its event is set at ``needed``)."""
        waiter = Waiter(seq, needed)
        self._new_waiters.append(waiter)
        self.node.wake()
        return waiter

    def remote_read(self, key: str) -> list[Checked]:
        """Ask the live peers for ``key``; their answers within a short wait."""
        peers = [p for p in self.node.peers.values() if p.connected]
        if not peers:
            return []
        request = ReadRequest(self.node.next_req(), key, len(peers))
        self._reads.append(request)
        self.node.wake()
        request.event.wait(_READ_TIMEOUT_S)
        return list(request.answers)

    def release_waiters(self) -> None:
        """Wake every writer still waiting, the node stopping (they see too few acks)."""
        for waiter in list(self.pending.values()) + list(self._new_waiters):
            waiter.event.set()

    # -- out: this node's stream ----------------------------------------------------------------

    def busy(self) -> bool:
        """Some connected peer has ops of ours not sent yet."""
        top = self.node.replica.seq
        return any(p.sent_upto < top and p.connected for p in self.node.peers.values())

    def replicate(self) -> None:
        """Send each connected peer the ops after its ``sent_upto`` (a batch per iteration)."""
        node = self.node
        if node.isolation.stale:
            return  # its backlog may touch sessions deleted elsewhere: see _isolation
        replica = node.replica
        top = replica.seq
        groups: dict[int, list[Peer]] = {}
        for peer in node.peers.values():
            if peer.connected and peer.sent_upto < top:
                groups.setdefault(peer.sent_upto, []).append(peer)
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
                self._behind_backlog(peers, top)
            elif ops:
                self._send_ops(peers, ops)

    def _behind_backlog(self, peers: Iterable[Peer], top: int) -> None:
        for peer in peers:
            now = mono()
            if now - peer.needsync_sent > 2.0:
                peer.needsync_sent = now
                self.node.transport.send(peer, NeedSync(peer.inc))
            peer.sent_upto = top  # stream new ops; the snapshot brings the rest

    def _send_ops(self, peers: Iterable[Peer], ops: list[tuple[int, Entry]]) -> None:
        node = self.node
        body = encode(Repl(node.node_id, node.inc, ops).to_wire())
        last = ops[-1][0]
        for peer in peers:
            if node.transport.send_encoded(peer, Repl.KIND, body):
                peer.sent_upto = last
                node.counters["repl_ops_sent"] += len(ops)

    def check_stalled(self, peer: Peer, now: float, interval: float) -> None:
        """A connected peer whose acknowledgement stalls: resend from what it has."""
        if (
            peer.connected
            and peer.acked < peer.sent_upto
            and now - peer.acked_at > max(2 * interval, 0.5)
        ):
            peer.sent_upto = peer.acked
            peer.acked_at = now
            self.node.counters["resends"] += 1

    def on_ack(self, peer: Peer, message: Ack) -> None:
        """An ACK: the peer is alive, and holds our stream up to ``seq``."""
        peer.last_heard = mono()
        self.acked(peer, message.inc, message.seq)

    def acked(self, peer: Peer, inc: int, seq: int) -> None:
        """``peer`` holds this node's stream ``inc`` up to ``seq``: complete the waiters."""
        if inc != self.node.inc or seq <= peer.acked:
            return
        peer.acked = seq
        peer.acked_at = mono()
        if peer.sent_upto < seq:
            peer.sent_upto = seq
        pending = self.pending
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

    def take_waiters(self) -> None:
        """Take the waiters handed over by writers (some already held by enough peers)."""
        peers = self.node.peers.values()
        while self._new_waiters:
            waiter = self._new_waiters.popleft()
            for peer in peers:
                if peer.acked >= waiter.seq:
                    waiter.acks.add(peer.id)
            if len(waiter.acks) + 1 >= waiter.needed:
                waiter.event.set()
            else:
                self.pending[waiter.seq] = waiter

    def expire_waiters(self, now: float) -> None:
        """Forget the waiters of writers that timed out (they stopped waiting by themselves)."""
        limit = self.node.options.write_timeout_ms / 1000 + 1
        for seq, waiter in list(self.pending.items()):
            if now - waiter.created <= limit:
                break
            del self.pending[seq]

    def restart(self) -> None:
        """A new incarnation of this node's stream: every peer starts it from scratch, every
        position held of theirs is forgotten, and the writers waiting on acks are released."""
        self.seen.clear()
        self.ack_due.clear()
        now = mono()
        for peer in self.node.peers.values():
            peer.acked = 0
            peer.acked_at = now
            peer.sent_upto = 0
        for waiter in self.pending.values():
            waiter.event.set()  # their outcome is undetermined: the writers time out
        self.pending.clear()

    # -- in: the peers' streams -----------------------------------------------------------------

    def on_repl(self, peer: Peer, message: Repl) -> None:
        """Ops of ``peer``'s stream: merge them, advance its position, acknowledge later."""
        if message.origin != peer.id:
            self.node.counters["identity_mismatch"] += 1
            raise WireError(f"REPL from {peer.id} claims origin {message.origin}")
        self.node.heard(peer, message.inc, request=True)
        origin, inc = message.origin, message.inc
        seen = self.seen.get(origin)
        if seen is None or seen[0] < inc:
            seen = self.seen[origin] = [inc, 0]
        current = seen[0] == inc
        merge = self.node.replica.merge
        for (seq, entry), session in zip(message.ops, message.sessions, strict=True):
            merge(entry, session)
            if current and seq == seen[1] + 1:
                seen[1] = seq
        self.node.counters["repl_ops_received"] += len(message.ops)
        if current:
            self.ack_due.add(origin)

    def flush_acks(self) -> None:
        """Acknowledge the positions that moved (not while a snapshot is being taken: its
        entries are not all here yet)."""
        node = self.node
        if not self.ack_due or node.catchup.phase is Phase.SYNC:
            return
        for origin in self.ack_due:
            seen = self.seen.get(origin)
            peer = node.peers.get(origin)
            if seen is not None and peer is not None:
                node.transport.reply(peer.ident, Ack(seen[0], seen[1]))
        self.ack_due.clear()

    def merge_late(self, pairs: Iterable[tuple[Entry, Session | None]]) -> None:
        """Merge entries that are not writes being acknowledged (snapshot, anti-entropy, read
        repair): see :meth:`~._replica.Replica.merge`'s ``late``."""
        merge = self.node.replica.merge
        for entry, session in pairs:
            merge(entry, session, late=True)

    # -- remote reads ---------------------------------------------------------------------------

    def take_reads(self) -> None:
        """Send the local misses handed over by readers to every connected peer."""
        node = self.node
        while self._reads:
            request = self._reads.popleft()
            sent = 0
            for peer in node.peers.values():
                if peer.connected and node.transport.send(peer, Read(request.req, [request.key])):
                    sent += 1
            if sent:
                request.pending = sent
                self.read_pending[request.req] = request
                node.counters["remote_reads"] += 1
            else:
                request.event.set()

    def forget_answered_reads(self) -> None:
        """Drop the reads whose reader stopped waiting."""
        for req, request in list(self.read_pending.items()):
            if request.event.is_set():
                del self.read_pending[req]

    def on_read_reply(self, peer: Peer, message: ReadReply) -> None:
        """A peer's answer to a local miss."""
        request = self.read_pending.get(message.req)
        if request is not None:
            request.answers.extend(message.pairs())
            request.pending -= 1
            if request.pending <= 0:
                del self.read_pending[message.req]
                request.event.set()
