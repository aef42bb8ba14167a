"""Catch-up: how a node that starts (or falls behind) gets what its peers hold, and serves them.

A node goes through the :class:`Phase` values in order, and is ready at the end:

- ``DELTA`` (a ``disc_copies`` node restarted with the positions it held in each peer's stream):
  it asks every peer to resend from there out of its backlog (:class:`~._messages.Delta`); a
  peer whose backlog no longer reaches back that far answers :class:`~._messages.DeltaNo`, and
  the node takes a snapshot instead. A resend that makes no progress for long falls back too.
- ``SYNC``: a chunked snapshot from one peer (a ready one if there is one) under credit flow
  control (:class:`~._messages.Sync`, :class:`~._messages.Chunk`, :class:`~._messages.Credit`,
  :class:`~._messages.End`); :class:`~._messages.End` carries the stream positions the
  snapshot holds. A source that goes quiet is replaced.
- ``AE``: one anti-entropy round with every other live peer (this catches what a peer that is
  down now wrote): 256 bucket hashes (:class:`~._messages.Digest`), the summaries of the
  entries in the buckets that differ (:class:`~._messages.DigestKeys`), then the entries each
  side lacks (:class:`~._messages.Pull` / :class:`~._messages.Push`).
- ``READY``: caught up. Anti-entropy goes on, with one peer at a time every
  ``anti_entropy_ms``.

A node that hears from no peer for long after it starts is the first of its cluster, and serves
what it has (:meth:`CatchUp.maybe_alone`).

:class:`CatchUp` is the taking side; :class:`Source` is the serving side — deltas from the
backlog, snapshots streamed in chunks a loop iteration at a time (so a large one never starves
the heartbeats), and the answers of anti-entropy.
"""

from __future__ import annotations

import enum
import logging
import random
from typing import TYPE_CHECKING, Final

from ._messages import (
    Chunk,
    Credit,
    Delta,
    DeltaNo,
    DeltaOk,
    Digest,
    DigestKeys,
    End,
    NeedSync,
    Pull,
    Push,
    Read,
    ReadReply,
    Sync,
)
from ._replica import BUCKETS, Entry
from ._transport import Peer, mono

if TYPE_CHECKING:
    from ._node import Agent

__all__ = ["CatchUp", "Phase", "Source"]

log = logging.getLogger("sessionkeeper.zmq")

#: Entries per snapshot chunk, and per anti-entropy PULL or PUSH.
_CHUNK: Final = 2_000
#: Chunks a snapshot's taker lets its source send ahead.
_SYNC_CREDIT: Final = 4
#: A delta catch-up that makes no progress for this long (or suspect_after_ms, if longer)
#: falls back to a snapshot.
_DELTA_STALL_S: Final = 2.0


class Phase(enum.StrEnum):
    """Where a node is in its catch-up (``stats`` shows the value)."""

    DELTA = "delta"
    SYNC = "sync"
    AE = "ae"
    READY = "ready"


class CatchUp:
    """This node's catch-up: the phase, and the state of the delta, snapshot and anti-entropy
    it is taking."""

    def __init__(self, node: Agent) -> None:
        self.node = node
        options = node.options
        self.phase = Phase.SYNC
        #: A node that hears from no peer for this long serves alone (the first of a cluster).
        self.alone_after = max(options.ready_timeout_ms, 3 * options.suspect_after_ms) / 1000
        # Delta: peer id -> the peer's seq when it agreed to resend from its backlog (None:
        # asked, no answer yet).
        self.delta: dict[str, int | None] = {}
        self.delta_at = 0.0
        #: When the delta began (late peers are waited for ``suspect_after_ms`` from then).
        self.delta_began = 0.0
        self.delta_progress = 0
        self.delta_req = 0
        # Snapshot.
        self.sync_from: Peer | None = None
        self.sync_req = 0
        self.sync_at = 0.0
        # Anti-entropy rounds this node started: req -> the peer, and when.
        self.ae_waiting: dict[int, Peer] = {}
        self.ae_started: dict[int, float] = {}
        self.next_ae = 0.0
        self.ae_turn = 0
        # Jitter only (not security); a private generator keeps the global one untouched.
        self._rng = random.Random()  # noqa: S311

    @property
    def ready(self) -> bool:
        """Caught up."""
        return self.phase is Phase.READY

    def _set_ready(self) -> None:
        self.phase = Phase.READY
        self.node.ready.set()

    # -- driven by the agent's timers -------------------------------------------------------------

    def drive(self, now: float) -> None:
        """Move the catch-up on (every timer round), and start the periodic anti-entropy."""
        node = self.node
        options = node.options
        suspect = options.suspect_after_ms / 1000
        phase = self.phase
        if phase is Phase.DELTA:
            self.drive_delta(now)
        elif phase is Phase.SYNC:
            if self.sync_from is None:
                if any(p.connected for p in node.peers.values()):
                    self.begin_sync()
                else:
                    self.maybe_alone(now)
            elif now - self.sync_at > max(suspect, 2.0):
                self.begin_sync()  # the source went quiet: start over with another
        elif phase is Phase.AE:
            for req, started in list(self.ae_started.items()):
                if now - started > max(suspect, 2.0):
                    self.ae_done(req)  # gave up on that peer; the periodic round will retry
        if (
            options.anti_entropy_ms
            and self.phase is Phase.READY
            and not node.isolation.stale
            and now >= self.next_ae
        ):
            self._periodic_ae(now, suspect)

    def _periodic_ae(self, now: float, suspect: float) -> None:
        node = self.node
        period = node.options.anti_entropy_ms / 1000
        self.next_ae = now + period * self._rng.uniform(0.8, 1.2)
        live = [p for p in node.peers.values() if p.connected]
        if live:
            self.ae_turn = (self.ae_turn + 1) % len(live)
            peer = live[self.ae_turn]
            if peer.root != node.replica.root():
                self.start_ae(peer)
        for req, started in list(self.ae_started.items()):
            if now - started > 10 * max(suspect, 2.0):
                self.ae_done(req)

    def maybe_alone(self, now: float) -> None:
        """Catching up with no peer connected: once none has answered for long enough, this
        is the first node of its cluster to start, and it serves what it has."""
        node = self.node
        if now - node.started > self.alone_after and not any(
            p.heard_ever for p in node.peers.values()
        ):
            log.warning(
                "node %s: no peer answered within %.1f s; serving what it has",
                node.node_id,
                self.alone_after,
            )
            self._set_ready()

    # -- delta ------------------------------------------------------------------------------------

    def drive_delta(self, now: float) -> None:
        """Ask every peer for a delta once it is connected, then wait for each to reach its
        target.

        The delta starts as soon as one peer answers, and a peer whose connection comes back
        later (its PONG lost while the connection was being made, a busy machine) is asked
        then, as long as the delta runs: it ends once every peer asked has reached its target
        and either every peer was asked or ``suspect_after_ms`` passed since the start (a peer
        silent that long counts as down; its part comes back by its own resends later).
        Ending as soon as the first peer's part was in used to leave the late peer's part to
        a resend after the node already said it was ready.
        """
        node = self.node
        seen = node.stream.seen
        live = [p for p in node.peers.values() if p.connected]
        if not self.delta:
            if not live:
                self.maybe_alone(now)
                return
            self.delta_req = node.next_req()
            self.delta_at = self.delta_began = now
            self.delta_progress = -1
        for peer in live:
            if peer.id in self.delta:
                continue
            if peer.id not in seen:
                self.begin_sync(prefer=peer)  # its stream is not on disc here
                return
            inc, seq = seen[peer.id]
            if node.transport.send(peer, Delta(self.delta_req, inc, seq)):
                self.delta[peer.id] = None
        if not self.delta:
            return  # nothing could be sent: start again next round
        # Done first: reaching the target just as the deadline passes is success.
        reached = all(
            top is not None and seen[origin][1] >= top for origin, top in self.delta.items()
        )
        waits_for_peers = (
            len(self.delta) < len(node.peers)
            and now - self.delta_began < node.options.suspect_after_ms / 1000
        )
        if reached and not waits_for_peers:
            node.counters["deltas_taken"] += 1
            self.start_ae_round(exclude=None)
            return
        # The deadline counts from the last progress (an answer, or ops received), so a long
        # resend under write load is not cut short while it moves.
        progress = sum(seen[origin][1] for origin in self.delta) + sum(
            1 for top in self.delta.values() if top is not None
        )
        if progress != self.delta_progress:
            self.delta_progress = progress
            self.delta_at = now
        elif now - self.delta_at > max(node.options.suspect_after_ms / 1000, _DELTA_STALL_S):
            log.info("node %s: delta catch-up stalled; snapshot", node.node_id)
            self.begin_sync()

    def on_delta_ok(self, peer: Peer, message: DeltaOk) -> None:
        """The peer resends from its backlog, up to at least ``top``."""
        if self.phase is Phase.DELTA and message.req == self.delta_req and peer.id in self.delta:
            self.delta[peer.id] = message.top

    def on_delta_no(self, peer: Peer, message: DeltaNo) -> None:
        """The peer's backlog does not reach: a snapshot from it."""
        if self.phase is Phase.DELTA and message.req == self.delta_req:
            log.info(
                "node %s: %s cannot resend from its backlog; snapshot", self.node.node_id, peer.id
            )
            self.begin_sync(prefer=peer)

    # -- snapshot ---------------------------------------------------------------------------------

    def begin_sync(self, prefer: Peer | None = None) -> None:
        """Take a snapshot from ``prefer`` if it is connected, else from a connected peer (a
        ready one first); with none connected, wait for one."""
        node = self.node
        candidates = [p for p in node.peers.values() if p.connected]
        if prefer is not None and prefer.connected:
            candidates = [prefer]
        ready_ones = [p for p in candidates if p.ready]
        pool = ready_ones or candidates
        choice: Peer | None = pool[0] if pool else None
        self.phase = Phase.SYNC
        self.delta.clear()
        node.ready.clear()
        if choice is None:
            self.sync_from = None
            return
        self.sync_from = choice
        self.sync_req = node.next_req()
        self.sync_at = mono()
        node.transport.send(choice, Sync(self.sync_req, _SYNC_CREDIT))

    def on_chunk(self, peer: Peer, message: Chunk) -> None:
        """Entries of the snapshot being taken: merge, and give one more credit."""
        if message.req == self.sync_req and self.sync_from is peer:
            self.node.stream.merge_late(message.pairs())
            self.sync_at = mono()
            self.node.transport.send(peer, Credit(message.req, 1))

    def on_end(self, peer: Peer, message: End) -> None:
        """The snapshot is complete: hold the positions it holds, then anti-entropy."""
        if message.req != self.sync_req or self.sync_from is not peer:
            return
        node = self.node
        stream = node.stream
        for origin, (inc, seq) in message.seen.items():
            if origin == node.node_id:
                continue
            mine = stream.seen.get(origin)
            if mine is None or mine[0] < inc or (mine[0] == inc and mine[1] < seq):
                stream.seen[origin] = [inc, seq]
            stream.ack_due.add(origin)
        node.counters["syncs_taken"] += 1
        self.sync_from = None
        self.start_ae_round(exclude=peer)

    def on_need_sync(self, peer: Peer, message: NeedSync) -> None:
        """A peer's backlog no longer reaches this node's position: resync from it."""
        if self.phase is Phase.READY and message.inc == self.node.inc:
            log.info("node %s is too far behind %s: resyncing", self.node.node_id, peer.id)
            self.begin_sync(prefer=peer)

    # -- anti-entropy -----------------------------------------------------------------------------

    def start_ae_round(self, exclude: Peer | None) -> None:
        """After a snapshot or a delta: one anti-entropy round with every other live peer,
        then ready."""
        self.phase = Phase.AE
        self.ae_waiting.clear()
        for peer in self.node.peers.values():
            if peer is not exclude and peer.connected:
                self.start_ae(peer)
        self._maybe_ready()

    def _maybe_ready(self) -> None:
        if self.phase is Phase.AE and not self.ae_waiting:
            self._set_ready()
            log.info("node %s is ready", self.node.node_id)

    def start_ae(self, peer: Peer) -> None:
        """Send ``peer`` this node's bucket hashes."""
        node = self.node
        req = node.next_req()
        if node.transport.send(peer, Digest(req, list(node.replica.digest))):
            self.ae_waiting[req] = peer
            self.ae_started[req] = mono()
            node.counters["ae_rounds"] += 1

    def on_digest_keys(self, peer: Peer, message: DigestKeys) -> None:
        """The peer's summaries of the differing buckets: push what it lacks, pull what we
        lack (the round is done when the last PULL is answered). Both are bounded by
        ``anti_entropy_keys``: the pulls by the answer's size, the pushes here."""
        req = message.req
        if req not in self.ae_waiting:
            return
        node = self.node
        replica = node.replica
        theirs = {key: (hlc, origin, la) for key, hlc, origin, la in message.summaries}
        summary = replica.summary
        pull = []
        for key, state in theirs.items():
            mine = summary(key)
            if mine is None or state > mine:
                pull.append(key)
        push: list[Entry] = []
        if message.buckets:
            # As bounded as the answer: this node's entries of the buckets it covers, as many
            # buckets as anti_entropy_keys allows (the rest in later rounds).
            budget = node.options.anti_entropy_keys
            covered, summaries = replica.summaries(message.buckets, budget)
            node.counters["ae_buckets_deferred"] += len(message.buckets) - len(covered)
            for key, hlc, origin, la in summaries:
                known = theirs.get(key)
                if known is None or known < (hlc, origin, la):
                    entry = replica.entry(key)
                    if entry is not None:
                        push.append(entry)
        for start in range(0, len(push), _CHUNK):
            node.transport.send(peer, Push(req, push[start : start + _CHUNK]))
        node.counters["ae_entries_pushed"] += len(push)
        if not pull:
            self.ae_done(req)
            return
        for start in range(0, len(pull), _CHUNK):
            last = start + _CHUNK >= len(pull)
            sub = req if last else node.next_req()
            node.transport.send(peer, Pull(sub, pull[start : start + _CHUNK]))

    def on_pushed(self, peer: Peer, message: Push) -> None:
        """The entries pulled: merge them; the round of ``req`` is done."""
        self.node.stream.merge_late(message.pairs())
        self.node.counters["ae_entries_pulled"] += len(message.entries)
        self.ae_done(message.req)

    def ae_done(self, req: int) -> None:
        """The anti-entropy round ``req`` is over (answered, or given up)."""
        if self.ae_waiting.pop(req, None) is not None:
            self.ae_started.pop(req, None)
            self._maybe_ready()


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
        self.touched = mono()


class Source:
    """What this node serves to peers catching up: deltas, snapshots, anti-entropy answers.

    While the node may be stale (:mod:`._isolation`) the agent hands none of these requests
    here (see ``SERVES`` in :mod:`._node`).
    """

    def __init__(self, node: Agent) -> None:
        self.node = node
        self.jobs: dict[tuple[bytes, int], _SyncJob] = {}
        #: The bucket the next anti-entropy answer starts from: answers bounded by
        #: ``anti_entropy_keys`` take turns over the differing buckets.
        self.next_bucket = 0

    def on_delta(self, peer: Peer, message: Delta) -> None:
        """A restarted peer holds this node's stream up to ``(inc, seq)``: resend from there if
        the backlog still has it."""
        node = self.node
        replica = node.replica
        with replica.lock:
            top = replica.seq
            first = top - len(replica.backlog) + 1
        if message.inc != node.inc or not first - 1 <= message.seq <= top:
            node.transport.reply(peer.ident, DeltaNo(message.req))
            return
        peer.sent_upto = message.seq
        peer.acked = message.seq
        peer.acked_at = mono()
        node.counters["deltas_served"] += 1
        node.transport.reply(peer.ident, DeltaOk(message.req, top))

    def on_sync(self, peer: Peer, message: Sync) -> None:
        """Start streaming a snapshot of every key held, and the positions it holds."""
        node = self.node
        with node.replica.lock:
            keys = list(node.replica.versions)
            seen = {origin: list(position) for origin, position in node.stream.seen.items()}
            seen[node.node_id] = [node.inc, node.replica.seq]
        credit = min(message.credit, 64)
        self.jobs[(peer.ident, message.req)] = _SyncJob(peer.ident, message.req, keys, seen, credit)
        node.counters["syncs_served"] += 1

    def on_credit(self, peer: Peer, message: Credit) -> None:
        """The taker is ready for more chunks."""
        job = self.jobs.get((peer.ident, message.req))
        if job is not None:
            job.credit += message.credit
            job.touched = mono()

    def busy(self) -> bool:
        """Snapshots are being streamed."""
        return bool(self.jobs)

    def serve_syncs(self) -> None:
        """One chunk of each snapshot that has credit (the end marker after the last)."""
        if not self.jobs:
            return
        node = self.node
        reply = node.transport.reply
        now = mono()
        for key, job in list(self.jobs.items()):
            if job.credit <= 0:
                if now - job.touched > 30:
                    del self.jobs[key]  # the taker went away
                continue
            chunk = job.keys[job.position : job.position + _CHUNK]
            job.position += len(chunk)
            if chunk:
                entries = [e for e in map(node.replica.entry, chunk) if e is not None]
                if not reply(job.peer, Chunk(job.req, entries)):
                    del self.jobs[key]
                    continue
                job.sent += len(entries)
                job.credit -= 1
            if job.position >= len(job.keys):
                reply(job.peer, End(job.req, job.sent, job.seen))
                del self.jobs[key]

    def on_digest(self, peer: Peer, message: Digest) -> None:
        """An anti-entropy round: the buckets that differ, and our summaries of them — as
        many as ``anti_entropy_keys`` entries allow, starting where the last answer stopped
        (the others wait for later rounds), so that one answer never holds the I/O thread
        for long whatever the replica's size."""
        node = self.node
        replica = node.replica
        mine = replica.digest
        start = self.next_bucket
        order = [*range(start, BUCKETS), *range(start)]
        differing = [b for b in order if mine[b] != message.hashes[b]]
        covered: list[int] = []
        summaries: list[tuple[str, int, str, int]] = []
        if differing:
            covered, summaries = replica.summaries(differing, node.options.anti_entropy_keys)
            self.next_bucket = (covered[-1] + 1) % BUCKETS
            if len(covered) < len(differing):
                node.counters["ae_buckets_deferred"] += len(differing) - len(covered)
        node.transport.reply(peer.ident, DigestKeys(message.req, covered, summaries))

    def on_pull(self, peer: Peer, message: Pull) -> None:
        """The entries anti-entropy asked for."""
        entries = [e for e in map(self.node.replica.entry, message.keys) if e is not None]
        self.node.transport.reply(peer.ident, Push(message.req, entries))

    def on_read(self, peer: Peer, message: Read) -> None:
        """The entries a peer's local miss asked for."""
        entries = [e for e in map(self.node.replica.entry, message.keys) if e is not None]
        self.node.transport.reply(peer.ident, ReadReply(message.req, entries))

    def on_push(self, peer: Peer, message: Push) -> None:
        """Entries the peer found newer than ours during its anti-entropy round."""
        self.node.stream.merge_late(message.pairs())
