"""The ``zmq`` backend plugin: this process is one node of a replicated cluster."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import zmq

from sessionkeeper import ConfigError, Session, StorageError
from sessionkeeper.backend import BackendContext, Capabilities, hookimpl

from ._admin import AdminClient, AdminServer, admin_socket_path
from ._keys import load_keys
from ._node import Agent
from ._options import AckLevel, ZmqOptions, cluster_identity
from ._replica import HLC, Entry, Replica
from ._wal import Wal
from ._writes import NotEnoughReplicas, PendingWrite, Version, WriteTimeout

__all__ = [
    "CLOCK_OFFSET_ENV",
    "NotEnoughReplicas",
    "PendingWrite",
    "Version",
    "WriteTimeout",
    "ZmqBackend",
]

log = logging.getLogger("sessionkeeper.zmq")

#: Fault injection for tests: milliseconds added to this node's hybrid-clock wall time.
CLOCK_OFFSET_ENV = "SESSIONKEEPER_ZMQ_CLOCK_OFFSET_MS"

#: Writes of one ``store_many`` applied before waiting for their acknowledgement.
_MANY_CHUNK = 1_000


class ZmqBackend:
    """One node of a cluster that holds every session on every node (Mnesia's role).

    Reads (``fetch``, ``list``, ``count``) are served from this node's replica on the caller's
    thread; writes are stamped with a hybrid logical clock, applied here and replicated to the
    peers by a background I/O thread, and return once ``ack`` nodes hold them.
    """

    options_class: ClassVar[type[ZmqOptions]] = ZmqOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=False, shared=True, replicated=True, blocking=True, read_only_open=True
    )

    def __init__(self, options: ZmqOptions, context: BackendContext) -> None:
        self.options = options
        self.context = context
        self._ack_level: AckLevel = options.ack
        self._ack = options.acks_needed(options.ack)
        self._touch_ack = options.acks_needed(options.touch_ack)
        self._timeout_s = options.write_timeout_ms / 1000
        self.replica = Replica(
            options.node_id,
            HLC(int(os.environ.get(CLOCK_OFFSET_ENV, "0") or 0)),
            tombstone_ttl_ms=options.tombstone_ttl_ms,
            backlog=options.backlog,
        )
        self._sessions = self.replica.sessions
        self.agent: Agent | None = None
        self.wal: Wal | None = None
        #: The admin socket this node serves (see :mod:`._admin`), and why not when it cannot.
        self.admin: AdminServer | None = None
        self.admin_problem: str | None = None
        #: Opened read-only (the CLI): no node runs here; reads go to a running node's admin
        #: socket through this client.
        self.client: AdminClient | None = None
        self._open = False

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<ZmqBackend node={self.options.node_id!r} {state}>"

    # -- lifecycle --------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_open(self) -> None:
        """Load the keys (and the disc copy), bind, connect, and catch up with the peers."""
        if self._open:
            return
        options = self.options
        if self.context.read_only:
            client = AdminClient(self._admin_path(), options, self.context.name)
            client.connect()
            self.client = client
            self._open = True
            return
        public = secret = None
        if options.curve:
            assert options.secret_key_file is not None
            public, secret = load_keys(self.context.resolve(options.secret_key_file))
            if public.decode() != options.me.public_key:
                raise ConfigError(
                    f"secret_key_file holds the key pair of public key {public.decode()}, not the "
                    f"public_key configured for node {options.node_id!r}",
                    key="sessionkeeper.backend_opts.secret_key_file",
                )
        else:
            log.warning(
                "zmq node %s runs WITHOUT CURVE (curve = false): links are neither "
                "authenticated nor encrypted, and anyone who reaches %s can write sessions",
                options.node_id,
                options.me.endpoint,
            )
        if options.disc_copies:
            assert options.data_dir is not None
            self.wal = Wal(self.context.resolve(options.data_dir), options)
            self.wal.load(self.replica)
        agent = Agent(options, self.replica, public_key=public, secret_key=secret)
        if self.wal is not None:
            agent.on_restart = self.wal.restart
            agent.restore_seen(self.wal.read_seen())
            self.wal.seen = agent.positions
        try:
            agent.start()
        except zmq.ZMQError as exc:
            agent.stop()
            if self.wal is not None:
                self.wal.close()
            raise StorageError(
                self.context.name,
                f"node {options.node_id} cannot listen on {options.bind or options.me.endpoint}: "
                f"{exc} (if node {options.node_id} is already running: list, show, stats, "
                "export and backup read it through its admin socket; writes go through it)",
            ) from None
        self.agent = agent
        self._open = True
        if self.wal is not None:
            self.wal.in_contact = agent.in_contact
        if options.admin:
            self._serve_admin()
        waits = bool(options.ready_timeout_ms and agent.peers)
        if waits and not agent.ready.wait(options.ready_timeout_ms / 1000):
            log.warning(
                "zmq node %s is not caught up after %d ms; serving meanwhile (a local miss "
                "asks the peers)",
                options.node_id,
                options.ready_timeout_ms,
            )

    def _admin_path(self) -> Path:
        return admin_socket_path(self.options, self.context.resolve)

    def _serve_admin(self) -> None:
        """Start the admin socket; a node that cannot serve it runs anyway and says why (in
        the log and in ``stats``): the CLI then cannot inspect it, the cluster is unharmed."""
        server = AdminServer(self._admin_path(), self)
        try:
            server.start()
        except (OSError, zmq.ZMQError) as exc:
            server.stop()
            self.admin_problem = str(exc)
            log.warning(
                "zmq node %s serves no admin socket (the CLI cannot inspect it): %s",
                self.options.node_id,
                exc,
            )
            return
        self.admin = server

    @hookimpl
    def sessionkeeper_close(self) -> None:
        """Leave the cluster (peers are told), stop the I/O thread, flush the log. Idempotent."""
        if not self._open:
            return
        self._open = False
        if self.client is not None:
            self.client.close()
        if self.admin is not None:
            self.admin.stop()
        if self.agent is not None:
            self.agent.stop()
        if self.wal is not None:
            self.wal.close(self.replica)

    def set_ack(self, level: AckLevel) -> None:
        """Change the acknowledgement level of stores and deletes from now on.

        For sync callers and benchmarks: an async manager asked :meth:`sessionkeeper_inline_hooks`
        once, at open, so one opened at ``ack = "local"`` keeps running stores and deletes on
        its event loop, where a higher level would block the loop while acknowledgements come.
        """
        self._ack_level, self._ack = self._level(level)

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until this node has caught up with its peers (or ``timeout_s`` passes)."""
        return self.agent is not None and self.agent.ready.wait(timeout_s)

    @property
    def ready(self) -> bool:
        """True once this node has caught up with its peers."""
        return self.agent is not None and self.agent.ready.is_set()

    @hookimpl
    def sessionkeeper_inline_hooks(self) -> frozenset[str]:
        """The hooks served from this node's memory, which the async manager calls on its
        event loop.

        ``fetch`` is one ``dict.get`` of the replica (a miss while the node is catching up with
        its peers asks them, waiting 0.2 s at most: that window is the exception). ``list``,
        ``count`` and their owner forms hold the replica's lock, which a write holds across an
        fsync with ``disc_copies`` and ``fsync = "always"``: then they stay in a worker thread
        (the async manager's ``list(owner=)`` also names ``iter_sessions``, its fallback, which
        is not inline: a snapshot of every session). Writes
        return without waiting when one node's acknowledgement is enough (``ack = "local"``,
        ``1``, or any level in a cluster of one) and the write-ahead log does not fsync each
        record: ``store`` and ``delete`` by ``ack``, ``touch`` by ``touch_ack``. ``store_if``
        is named with them although this backend does not implement it (it is not ``atomic``:
        the manager refuses conditional stores before any call), because the async manager's
        ``store`` operation counts it among the hooks it may call.
        """
        if self.client is not None:
            return frozenset()  # every read is a round trip to the node
        options = self.options
        syncs_each_write = options.disc_copies and options.fsync == "always"
        names = {"fetch"}
        if not syncs_each_write:
            names |= {"list", "count", "list_owner", "count_owner"}
            if self._ack <= 1:
                names |= {"store", "store_if", "delete"}
            if self._touch_ack <= 1:
                names.add("touch")
        return frozenset("sessionkeeper_" + name for name in names)

    # -- writes -----------------------------------------------------------------------------------

    def _agent(self, operation: str) -> Agent:
        if self.client is not None:
            raise StorageError(
                self.context.name,
                f"cannot {operation}: opened read-only, this manager reads node "
                f"{self.options.node_id} through its admin socket (write through a member)",
            )
        agent = self.agent
        if agent is None or not self._open:
            raise StorageError(self.context.name, f"cannot {operation}: the node is not open")
        if agent.failure is not None:
            raise StorageError(
                self.context.name,
                f"cannot {operation}: the node's I/O thread failed: {agent.failure}",
            )
        return agent

    def _fence(self, agent: Agent, needed: int, level: AckLevel, operation: str) -> None:
        if needed > 1:
            alive = agent.alive_peers() + 1
            if alive < needed:
                raise NotEnoughReplicas(
                    self.context.name,
                    f"{operation} refused: not enough replicas (ack={level!r} needs {needed} of "
                    f"{len(self.options.nodes)} nodes, {alive} reachable); nothing was written",
                )

    def _await(
        self, agent: Agent, seq: int, needed: int, level: AckLevel, operation: str, entry: Entry
    ) -> None:
        agent.wake()
        if needed <= 1:
            return
        got = agent.wait_acks(seq, needed, self._timeout_s)
        if got < needed:
            raise WriteTimeout(
                self.context.name,
                f"{operation} timed out: held by {got} of the {needed} nodes ack={level!r} needs "
                f"after {self.options.write_timeout_ms} ms; it is applied on node "
                f"{self.options.node_id} and may or may not become visible on the others",
                (entry[1], entry[2]),
            )

    def _level(self, ack: AckLevel | None) -> tuple[AckLevel, int]:
        current = self._ack_level
        # The configured level (passed explicitly on every write by pipelining callers) is
        # already validated: skip the checks. Same type too, so ``True`` never passes for ``1``.
        if ack is None or (ack == current and type(ack) is type(current)):
            return current, self._ack
        from sessionkeeper.backend import FieldError

        from ._options import _ack

        try:
            _ack("ack", ack)
        except FieldError as exc:
            raise ValueError(str(exc)) from None
        needed = self.options.acks_needed(ack)
        if needed > len(self.options.nodes):
            raise ValueError(f"ack={ack!r} is impossible in a cluster of this size")
        return ack, needed

    def store_with_ack(self, session: Session, ack: AckLevel | None = None) -> Version:
        """Store ``session`` with a fresh version, acknowledged at ``ack`` (default: the
        configured level); return the version.

        Raises :class:`NotEnoughReplicas` (nothing written) or :class:`WriteTimeout`
        (undetermined; carries the version).
        """
        level, needed = self._level(ack)
        agent = self._agent("store")
        self._fence(agent, needed, level, "store")
        seq, entry = self.replica.local_store(session)
        self._await(agent, seq, needed, level, "store", entry)
        return entry[1], entry[2]

    def delete_with_ack(self, session_id: str, ack: AckLevel | None = None) -> Version | None:
        """Replace the session by a tombstone acknowledged at ``ack``; return the tombstone's
        version, ``None`` when there was no session (errors as :meth:`store_with_ack`)."""
        level, needed = self._level(ack)
        agent = self._agent("delete a session")
        if session_id not in self._sessions:
            self._miss(session_id)
            if session_id not in self._sessions:
                return None
        self._fence(agent, needed, level, "delete")
        op = self.replica.local_delete(session_id)
        if op is None:
            return None
        seq, entry = op
        self._await(agent, seq, needed, level, "delete", entry)
        return entry[1], entry[2]

    def store_nowait(self, session: Session, ack: AckLevel | None = None) -> PendingWrite:
        """Apply ``session`` here and start replicating it without waiting: the returned
        :class:`PendingWrite` waits for the acknowledgements (``ack``, default the configured
        level). Raises :class:`NotEnoughReplicas` at once (nothing written) like
        :meth:`store_with_ack`."""
        level, needed = self._level(ack)
        agent = self._agent("store")
        self._fence(agent, needed, level, "store")
        seq, entry = self.replica.local_store(session)
        version = (entry[1], entry[2])
        if needed <= 1:
            agent.wake()
            return PendingWrite(self, version, None, level)
        return PendingWrite(self, version, agent.watch(seq, needed), level)

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        """Store with a fresh version; return once ``ack`` nodes hold it."""
        self.store_with_ack(session)

    @hookimpl
    def sessionkeeper_store_many(self, sessions: Sequence[Session]) -> int:
        """Store each with a fresh version; return once ``ack`` nodes hold them all.

        Acknowledgements are cumulative, so a chunk of writes waits once, for its last one:
        replication batches fill, as with :meth:`store_nowait`.
        """
        level, needed = self._level(None)
        agent = self._agent("store")
        self._fence(agent, needed, level, "store")
        local_store = self.replica.local_store
        for start in range(0, len(sessions), _MANY_CHUNK):
            for session in sessions[start : start + _MANY_CHUNK]:
                seq, entry = local_store(session)
            self._await(agent, seq, needed, level, "store", entry)
        return len(sessions)

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        """Move ``last_accessed`` forward here; replicate it (``touch_ack``)."""
        agent = self._agent("touch a session")
        session, op = self.replica.local_touch(session_id, last_accessed)
        if op is not None:
            self._await(agent, op[0], self._touch_ack, self.options.touch_ack, "touch", op[1])
        return session

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        """Replace the session by a tombstone; return once ``ack`` nodes hold it."""
        return self.delete_with_ack(session_id) is not None

    # -- reads ------------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_fetch(self, session_id: str) -> Session | None:
        """The session from this node's replica (one ``dict.get``); a miss while catching up
        asks the peers."""
        session = self._sessions.get(session_id)
        if session is None:
            if self.client is not None:
                return self.client.get(session_id)
            if self.agent is not None and not self.agent.ready.is_set():
                return self._miss(session_id)
        return session

    def _miss(self, session_id: str) -> Session | None:
        agent = self.agent
        if agent is None or agent.ready.is_set() or self.replica.versions.get(session_id):
            return self._sessions.get(session_id)
        for entry, session in agent.remote_read(session_id):
            self.replica.merge(entry, session, late=True)  # read repair
        return self._sessions.get(session_id)

    @hookimpl
    def sessionkeeper_list(self, now: int) -> list[str]:
        """Ids of the sessions live at ``now`` on this node."""
        if self.client is not None:
            return self.client.ids(now)
        self.replica.note_now(now)
        return self.replica.table.list_live(now)

    @hookimpl
    def sessionkeeper_count(self, now: int) -> int:
        """Sessions live at ``now`` on this node."""
        if self.client is not None:
            return self.client.count(now)
        self.replica.note_now(now)
        return self.replica.count_live(now)

    @hookimpl
    def sessionkeeper_list_owner(self, owner: str, now: int) -> list[str]:
        """Ids of ``owner``'s sessions live at ``now`` on this node, from the replica's owner
        index (cost: what the owner holds, not what the node holds).

        A read, served like :meth:`sessionkeeper_list`: the index is the table's, kept exact
        by every write the replica applies (local or merged), delete and cleanup. It is not
        one of the atomic operations: this backend does not declare ``atomic``, so the manager
        still refuses ``update``, ``take``, ``rotate``, conditional stores and
        ``delete_owner`` on it.
        """
        if self.client is not None:
            return self.client.ids(now, owner)
        self.replica.note_now(now)
        return self.replica.table.list_owner(owner, now)

    @hookimpl
    def sessionkeeper_count_owner(self, owner: str, now: int) -> int:
        """How many of ``owner``'s sessions are live at ``now`` on this node (owner index)."""
        if self.client is not None:
            return self.client.count(now, owner)
        self.replica.note_now(now)
        return self.replica.table.count_owner(owner, now)

    @hookimpl
    def sessionkeeper_iter_sessions(self) -> Iterator[Session]:
        """Every session this node holds (expired included), from a snapshot."""
        if self.client is not None:
            return self.client.sessions()
        replica = self.replica

        def generate() -> Iterator[Session]:
            yield from replica.snapshot()

        return generate()

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        """Purge, on this node only, the sessions expired at ``now`` and due tombstones."""
        self._agent("clean up expired sessions")
        return self.replica.cleanup(now)

    @hookimpl
    def sessionkeeper_identity(self) -> str | None:
        """The cluster this node belongs to, the same on every member: ``zmq:<cluster_id>:``
        and a hash of the members' ids and public keys.

        Endpoints are left out on purpose: one member may be reached as ``tcp://10.0.0.1:7100``
        in one config and through a host name in another, and that must not make one cluster
        look like two (``migrate`` would then copy a cluster onto itself). Without CURVE the
        public keys are empty, so two clusters with the same ``cluster_id`` and node ids look
        alike: refusing a copy between them errs on the safe side.
        """
        return cluster_identity(self.options)

    @hookimpl
    def sessionkeeper_stats(self) -> dict[str, Any]:
        """This node's view: ready, peers (alive, lag, digest), counters; opened read-only,
        the running node's, as its admin socket answers (and ``via_admin_socket``)."""
        if self.client is not None:
            return {**self.client.stats(), "via_admin_socket": str(self.client.path)}
        replica = self.replica
        figures: dict[str, Any] = {
            "node_id": self.options.node_id,
            "ready": self.ready,
            "stored": len(replica.sessions),
            "tombstones": len(replica.tombs),
            "seq": replica.seq,
            "digest": replica.root().hex(),
            "ack": self._ack_level,
            "curve": self.options.curve,
            "disc_copies": self.options.disc_copies,
            "merged": replica.merged,
        }
        if self.agent is not None:
            figures.update(self.agent.describe())
        if self.options.admin:
            admin = self.admin
            figures["admin"] = (
                {"socket": str(self._admin_path()), "problem": self.admin_problem}
                if admin is None
                else admin.describe()
            )
        if self.wal is not None:
            figures["wal"] = self.wal.describe()
            # Also at the top level: a lost record must not hide in a sub-dictionary.
            figures["damaged_records"] = self.wal.damaged_records
        return figures
