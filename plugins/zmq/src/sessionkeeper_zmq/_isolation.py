"""Isolation past the tombstone horizon: when a node may hold what its cluster deleted.

A tombstone is collected ``tombstone_ttl_ms`` after its delete. A node that heard no peer for
longer than that may still hold sessions deleted elsewhere meanwhile, whose tombstones are now
gone everywhere: merged back, they would come back to life. So such a node becomes *stale*: it
neither streams its backlog nor serves snapshots, deltas, anti-entropy or reads, until the first
peer it hears decides (:meth:`Isolation.judge`):

- that peer is ready and hears another node (it says so in PING and PONG, ``accompanied``): the
  cluster went on without this node. The node forgets what it held from before the isolation,
  keeping only what it stored or deleted itself while alone (versions no peer can have
  superseded), restarts its stream as a new incarnation and resyncs from that peer;
- otherwise (a peer alone too, or one that restarted and is catching up), there is no fresher
  view, and the node keeps its copy.

A node back in touch within the horizon just carries on: nothing it missed was collected.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._catchup import Phase
from ._replica import HLC
from ._transport import Peer

if TYPE_CHECKING:
    from ._node import Agent

__all__ = ["Isolation"]

log = logging.getLogger("sessionkeeper.zmq")


class Isolation:
    """Since when no peer was heard, and whether this node is stale."""

    def __init__(self, node: Agent) -> None:
        self.node = node
        #: Since when (monotonic) no peer was heard; None while in touch.
        self.alone_since: float | None = None
        #: The same instant as the replica's wall clock (ms): what is newer was written alone.
        self.alone_wall = 0
        #: Alone past the horizon: serve nothing until a peer decides.
        self.stale = False

    def watch(self, now: float) -> None:
        """Note when a ready node stops hearing every peer, and when that passes the horizon
        (every timer round)."""
        node = self.node
        options = node.options
        if self.alone_since is None:
            if node.catchup.phase is Phase.READY and node.peers and not node.in_contact():
                suspect = options.suspect_after_ms
                self.alone_since = now - suspect / 1000
                self.alone_wall = node.replica.hlc.wall() - suspect
        elif not self.stale and now - self.alone_since > options.tombstone_ttl_ms / 1000:
            self.stale = True
            log.warning(
                "node %s has heard no peer for longer than tombstone_ttl_ms (%d s): it serves "
                "its peers nothing until one tells whether the rest of the cluster went on",
                node.node_id,
                options.tombstone_ttl_ms // 1000,
            )

    def heard(self) -> None:
        """A peer was heard: back in touch within the horizon, nothing was collected."""
        if self.alone_since is not None and not self.stale:
            self.alone_since = None

    def judge(self, peer: Peer, went_on: bool) -> None:
        """The first peer heard after an isolation past the horizon decides what to keep.

        ``went_on``: that peer is ready and hears another node, so the cluster went on without
        this node (see the module's docstring).
        """
        node = self.node
        self.stale = False
        self.alone_since = None
        if not went_on:
            log.warning(
                "node %s: back in touch with %s, which has no fresher view; keeping its copy",
                node.node_id,
                peer.id,
            )
            return
        replica = node.replica
        since = self.alone_wall
        with replica.lock:
            if node.on_restart is not None:
                node.on_restart(since)
            forgotten = replica.restart_keeping_own(since)
        node.inc = max(node.inc + 1, HLC().now())
        node.stream.restart()
        node.counters["isolation_restarts"] += 1
        log.warning(
            "node %s was cut off from its cluster past the tombstone horizon: forgot %d "
            "entries held from before, kept %d of its own, resyncing from %s",
            node.node_id,
            forgotten,
            replica.seq,
            peer.id,
        )
        node.catchup.begin_sync(prefer=peer)

    def describe(self, now: float) -> dict[str, object]:
        """``alone_for_ms`` and ``stale``, for ``stats``."""
        return {
            "alone_for_ms": None
            if self.alone_since is None
            else round((now - self.alone_since) * 1000),
            "stale": self.stale,
        }
