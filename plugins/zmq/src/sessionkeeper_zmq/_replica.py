"""A node's full copy of the sessions: a last-writer-wins map with lazy expiry indexes.

The replicated state of one session id is an :data:`Entry`::

    (key, hlc, node, last_accessed, blob, timeout_ms)

``blob`` is the session encoded with :func:`sessionkeeper.backend.encode_session`, or ``None`` for a
tombstone (a delete). ``(hlc, node)`` is the version of the data: a store or a delete takes a
fresh hybrid-logical-clock stamp from the node that made it. A touch keeps the version and moves
``last_accessed`` forward. Merging two entries for one key keeps the larger
``(hlc, node, last_accessed)``: a maximum over a total order, so the merge is commutative,
associative and idempotent, and replicas that have seen the same entries in any order, with any
duplicates, hold the same state. A delete beats a concurrent touch (the touch has the older
version); a store stamped after the delete beats the delete.

Expiry is derived, never replicated: each node hides expired sessions and purges them locally in
``cleanup``. The live sessions are the core's :class:`~sessionkeeper._table.SessionTable` (the
``dict``, its expiry index, its owner index and the batched sweep every in-memory backend
shares); what only a replica has — versions, tombstones (which are not sessions, kept in a heap
of ``(deadline, key)``), the digest, the sequence and the backlog — stays here. Tombstones are
purged ``tombstone_ttl_ms`` (or the session's timeout, if longer) after the delete.

Reads (:attr:`Replica.sessions`) take no lock; every write takes :attr:`Replica.lock` (the
table's own lock, so the table's ``*_unlocked`` writes run inside it), which keeps the
sessions, versions, tombstones, digest, sequence numbers and backlog consistent.
"""

from __future__ import annotations

import hashlib
import heapq
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

from sessionkeeper import Session
from sessionkeeper._table import BATCH, SessionTable
from sessionkeeper.backend import decode_session, encode_session

__all__ = ["BUCKETS", "HLC", "Entry", "Replica", "entry_bucket", "entry_hash", "merge_entries"]

#: ``(key, hlc, node, last_accessed, blob | None, timeout_ms | None)``.
Entry = tuple[str, int, str, int, bytes | None, int | None]

#: Digest buckets (a two-level Merkle tree: 256 bucket hashes, then the keys of a bucket).
BUCKETS: Final = 256
_LOGICAL_BITS: Final = 16


class HLC:
    """A hybrid logical clock: ``wall_ms << 16 | counter``, never going backwards.

    ``now()`` is larger than every stamp it returned or was told about (``update``), and close to
    the wall clock: causally related writes are ordered, concurrent ones approximately by time.

    :param offset_ms: added to the wall clock (fault injection of clock skew in tests).
    """

    __slots__ = ("_last", "_offset_ms")

    def __init__(self, offset_ms: int = 0) -> None:
        self._offset_ms = offset_ms
        self._last = 0

    def wall(self) -> int:
        """The physical clock, in ms."""
        return time.time_ns() // 1_000_000 + self._offset_ms

    def now(self) -> int:
        """A new stamp. Call with the replica's lock held."""
        stamp = max(self._last + 1, self.wall() << _LOGICAL_BITS)
        self._last = stamp
        return stamp

    def update(self, remote: int) -> None:
        """Take a stamp seen from a peer into account. Call with the replica's lock held."""
        if remote > self._last:
            self._last = remote

    @property
    def offset_ms(self) -> int:
        """Milliseconds added to the wall clock (test-only clock skew)."""
        return self._offset_ms

    @offset_ms.setter
    def offset_ms(self, value: int) -> None:
        # Stamps stay monotonic: now() never returns less than a stamp already issued.
        self._offset_ms = value

    @property
    def last(self) -> int:
        """The largest stamp issued or seen."""
        return self._last

    @staticmethod
    def physical(stamp: int) -> int:
        """The wall-clock part of ``stamp``, in ms."""
        return stamp >> _LOGICAL_BITS


def entry_bucket(key: str) -> int:
    """The digest bucket of ``key`` (the same on every node)."""
    return zlib.crc32(key.encode()) & (BUCKETS - 1)


def entry_hash(key: str, hlc: int, node: str, la: int, tomb: bool) -> int:
    """A 64-bit hash of what identifies an entry's state, for the digest."""
    text = f"{key}\0{hlc}\0{node}\0{la}\0{int(tomb)}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def merge_entries(a: Entry, b: Entry) -> Entry:
    """The merge of two entries for one key: the larger ``(hlc, node, last_accessed)``."""
    return a if (a[1], a[2], a[3]) >= (b[1], b[2], b[3]) else b


class Replica:
    """The sessions held by one node, with versions, tombstones, expiry index and digest.

    :param node_id: this node (the ``node`` of versions it stamps).
    :param hlc: its clock.
    :param tombstone_ttl_ms: how long a tombstone is kept.
    :param backlog: how many of its own operations are kept for resending.
    """

    def __init__(self, node_id: str, hlc: HLC, *, tombstone_ttl_ms: int, backlog: int) -> None:
        self.node_id = node_id
        self.hlc = hlc
        self.tombstone_ttl_ms = tombstone_ttl_ms
        #: The live sessions (expired but not yet purged included), their expiry and owner
        #: indexes; written only under :attr:`lock`, through its ``*_unlocked`` methods.
        self.table = SessionTable()
        #: Guards every write: the table's lock, taken around the replica's larger critical
        #: sections (a version, a tombstone and a digest share change with each table write).
        self.lock = self.table.lock
        #: One cleanup at a time, around both sweeps (not the table's ``sweep_lock``, which
        #: its ``sweep`` takes itself: it is not reentrant).
        self.sweep_lock = threading.Lock()
        #: The table's ``dict`` (read alias): the read path, one ``dict.get``.
        self.sessions: dict[str, Session] = self.table.sessions
        #: ``(hlc, node)`` of every key, tombstones included.
        self.versions: dict[str, tuple[int, str]] = {}
        #: Tombstones: key -> ``(base, timeout_ms)``; ``base`` is when it was deleted (ms).
        self.tombs: dict[str, tuple[int, int | None]] = {}
        #: ``(deadline, key)`` of tombstones, smallest first; stale once the key changed.
        self._tomb_heap: list[tuple[int, str]] = []
        self.digest = [0] * BUCKETS
        #: The keys of each digest bucket (tombstones included): what an anti-entropy answer
        #: summarises, without a pass over every key.
        self.buckets: list[set[str]] = [set() for _ in range(BUCKETS)]
        #: This node's own operations: their count (the sequence) and the recent ones.
        self.seq = 0
        self.backlog: deque[tuple[int, Entry]] = deque(maxlen=backlog)
        #: The largest ``now`` the manager has shown us (manager clock, ms).
        self.now_hint = 0
        #: Called with each entry applied (under the lock): the write-ahead log.
        self.on_apply: Callable[[Entry], None] | None = None
        self.merged = 0

    # -- reading -------------------------------------------------------------------------------

    def _state(self, key: str) -> tuple[int, str, int, Session | None, int | None] | None:
        """``(hlc, node, last_accessed, session, timeout_ms)`` of ``key`` (``session`` is
        ``None`` for a tombstone), or ``None``: not held, or changed under us between the
        lock-free reads of its version and of its session or tombstone (the caller retries,
        skips, or leaves it to a later round)."""
        version = self.versions.get(key)
        if version is None:
            return None
        session = self.sessions.get(key)
        if session is not None:
            return version[0], version[1], session.last_accessed, session, session.timeout_ms
        tomb = self.tombs.get(key)
        if tomb is None:
            return None
        return version[0], version[1], tomb[0], None, tomb[1]

    def entry(self, key: str) -> Entry | None:
        """The replicated state of ``key``, or ``None``."""
        state = self._state(key)
        if state is None:
            return None
        hlc, node, la, session, timeout = state
        blob = None if session is None else encode_session(session)
        return (key, hlc, node, la, blob, timeout)

    def keys(self) -> list[str]:
        """Every key held (tombstones included), as a list taken under the lock."""
        with self.lock:
            return list(self.versions)

    def root(self) -> bytes:
        """The digest of the whole state: equal on two nodes iff (almost surely) equal states."""
        return hashlib.blake2b(
            b"".join(h.to_bytes(8, "big") for h in self.digest), digest_size=16
        ).digest()

    def summaries(
        self, buckets: Iterable[int], budget: int | None = None
    ) -> tuple[list[int], list[tuple[str, int, str, int]]]:
        """``(key, hlc, node, last_accessed)`` of every entry in the given digest buckets, in
        their order, and the buckets summarised: with a ``budget``, the buckets whose entries
        fit in it (the first one always), the rest left for a later round. Cost: the entries
        summarised, not the replica."""
        covered: list[int] = []
        keys: list[str] = []
        with self.lock:
            for bucket in buckets:
                held = self.buckets[bucket]
                if budget is not None and covered and len(keys) + len(held) > budget:
                    break
                covered.append(bucket)
                keys.extend(held)
        state_of = self._state
        result = [
            (key, state[0], state[1], state[2])
            for key in keys
            if (state := state_of(key)) is not None
        ]
        return covered, result

    def summary(self, key: str) -> tuple[int, str, int] | None:
        """``(hlc, node, last_accessed)`` of ``key``, what anti-entropy compares (no session
        is encoded), or ``None``."""
        state = self._state(key)
        return None if state is None else state[:3]

    def count_live(self, now: int) -> int:
        """How many stored sessions are live at ``now``."""
        return self.table.count_live(now)

    def snapshot(self) -> list[Session]:
        """Every stored session (expired included), taken under the lock."""
        return self.table.snapshot()

    # -- writing (all under the lock) -----------------------------------------------------------

    def _tomb_deadline(self, base: int, timeout: int | None) -> int:
        return base + max(self.tombstone_ttl_ms, timeout or 0)

    def _install(self, entry: Entry, session: Session | None) -> None:
        """Make ``entry`` the state of its key (its decoded session given). Lock held."""
        key, hlc, node, la, _blob, timeout = entry
        old = self.versions.get(key)
        bucket = entry_bucket(key)
        digest = self.digest
        if old is not None:
            previous = self.sessions.get(key)
            if previous is not None:
                digest[bucket] ^= entry_hash(key, old[0], old[1], previous.last_accessed, False)
            else:
                base = self.tombs[key][0]
                digest[bucket] ^= entry_hash(key, old[0], old[1], base, True)
        self.versions[key] = (hlc, node)
        if old is None:
            self.buckets[bucket].add(key)
        if session is not None:
            self.tombs.pop(key, None)
            self.table.put_unlocked(session)
        else:
            self.table.delete_unlocked(key)
            self.tombs[key] = (la, timeout)
            heapq.heappush(self._tomb_heap, (self._tomb_deadline(la, timeout), key))
        digest[bucket] ^= entry_hash(key, hlc, node, la, session is None)
        if self.on_apply is not None:
            self.on_apply(entry)

    def _record(self, entry: Entry) -> int:
        self.seq += 1
        self.backlog.append((self.seq, entry))
        return self.seq

    def local_store(self, session: Session) -> tuple[int, Entry]:
        """Store ``session`` with a fresh version; return ``(seq, entry)`` to replicate."""
        with self.lock:
            entry: Entry = (
                session.id,
                self.hlc.now(),
                self.node_id,
                session.last_accessed,
                encode_session(session),
                session.timeout_ms,
            )
            self._install(entry, session)
            return self._record(entry), entry

    def local_touch(
        self, key: str, last_accessed: int
    ) -> tuple[Session | None, tuple[int, Entry] | None]:
        """Move ``last_accessed`` forward (same version); never resurrects a tombstone."""
        with self.lock:
            if last_accessed > self.now_hint:
                self.now_hint = last_accessed
            session = self.sessions.get(key)
            if session is None or last_accessed <= session.last_accessed:
                return session, None
            touched = session.touched(last_accessed)
            hlc, node = self.versions[key]
            entry: Entry = (
                key,
                hlc,
                node,
                last_accessed,
                encode_session(touched),
                touched.timeout_ms,
            )
            self._install(entry, touched)
            return touched, (self._record(entry), entry)

    def local_delete(self, key: str) -> tuple[int, Entry] | None:
        """Replace a stored session by a tombstone; ``None`` when there is none."""
        with self.lock:
            session = self.sessions.get(key)
            if session is None:
                return None
            # When it was deleted: the manager's latest clock reading may be old (a delete
            # does not carry one), and the stamp's wall clock keeps the tombstone at least
            # tombstone_ttl_ms from now whichever clock the manager uses.
            stamp = self.hlc.now()
            base = max(session.last_accessed, self.now_hint, HLC.physical(stamp))
            entry: Entry = (key, stamp, self.node_id, base, None, session.timeout_ms)
            self._install(entry, None)
            return self._record(entry), entry

    def merge(self, entry: Entry, session: Session | None, *, late: bool = False) -> bool:
        """Merge an entry from a peer (validated, ``session`` decoded from its blob).

        Returns True when it changed the state. A tombstone for a key this node does not hold
        is dropped when it is already due for collection. With ``late`` (anti-entropy, snapshot,
        read repair: not a write being acknowledged), a session this node does not hold is also
        dropped when it is already expired by the latest time the manager has shown this node,
        so that a session purged here is not brought back by a peer that has not purged it yet.
        """
        key, hlc, node, la, _blob, timeout = entry
        with self.lock:
            self.hlc.update(hlc)
            old = self.versions.get(key)
            if old is None:
                hint = self.now_hint
                if session is not None:
                    if late and timeout is not None and hint - la > timeout:
                        return False
                elif hint > self._tomb_deadline(la, timeout):
                    return False
            else:
                current = self.sessions.get(key)
                current_la = current.last_accessed if current is not None else self.tombs[key][0]
                if (hlc, node, la) <= (old[0], old[1], current_la):
                    return False
            self._install(entry, session)
            self.merged += 1
            return True

    def note_now(self, now: int) -> None:
        """Remember the manager's clock (for dropping expired entries that arrive late)."""
        if now > self.now_hint:
            self.now_hint = now

    def clear(self) -> None:
        """Forget every entry (a node too far behind wipes before a full resync)."""
        with self.lock:
            self._forget()

    def _forget(self) -> None:
        self.table.clear_unlocked()
        self.versions.clear()
        self.tombs.clear()
        self._tomb_heap.clear()
        self.digest = [0] * BUCKETS
        self.buckets = [set() for _ in range(BUCKETS)]

    def restart_keeping_own(self, since_ms: int) -> int:
        """Forget every entry except this node's own stores and deletes stamped at or after
        ``since_ms`` (wall ms), restart the sequence and backlog, and record what is kept as
        new operations (so they replicate). Returns how many entries were forgotten.

        For a node that was cut off from its cluster past the tombstone horizon: what it holds
        from before may be deleted elsewhere with the tombstones gone, but a session it stored
        or deleted itself while alone carries a version no peer has superseded yet.
        Lock held by the caller (with :attr:`on_apply` already pointing at a fresh log).
        """
        kept: list[tuple[Entry, Session | None]] = []
        node = self.node_id
        for key, (hlc, origin) in self.versions.items():
            if origin != node or HLC.physical(hlc) < since_ms:
                continue
            session = self.sessions.get(key)
            if session is not None:
                kept.append(
                    (
                        (key, hlc, origin, session.last_accessed, None, session.timeout_ms),
                        session,
                    )
                )
            else:
                base, timeout = self.tombs[key]
                kept.append(((key, hlc, origin, base, None, timeout), None))
        forgotten = len(self.versions) - len(kept)
        self._forget()
        self.seq = 0
        self.backlog.clear()
        for (key, hlc, origin, la, _none, timeout), session in kept:
            blob = None if session is None else encode_session(session)
            entry: Entry = (key, hlc, origin, la, blob, timeout)
            self._install(entry, session)
            self._record(entry)
        return forgotten

    # -- expiry ---------------------------------------------------------------------------------

    def cleanup(self, now: int) -> int:
        """Purge the sessions expired at ``now`` (returned: how many) and due tombstones."""
        with self.sweep_lock:
            self.note_now(now)
            return self._sweep_sessions(now) + self._sweep_tombs(now)

    def _sweep_sessions(self, now: int) -> int:
        """Purge the sessions expired at ``now`` through the table's batched sweep; each batch
        drops its versions and digest shares in the same hold of the lock."""
        versions = self.versions

        def drop(deleted: list[Session]) -> None:
            # Read each batch: a wipe between batches replaces them.
            digest, buckets = self.digest, self.buckets
            for session in deleted:
                key = session.id
                hlc, node = versions.pop(key)
                bucket = entry_bucket(key)
                digest[bucket] ^= entry_hash(key, hlc, node, session.last_accessed, False)
                buckets[bucket].discard(key)

        return self.table.sweep(now, drop)

    def _sweep_tombs(self, now: int) -> int:
        lock, heap, tombs = self.lock, self._tomb_heap, self.tombs
        while True:
            with lock:
                for _ in range(BATCH):
                    if not heap or heap[0][0] >= now:
                        return 0
                    key = heapq.heappop(heap)[1]
                    tomb = tombs.get(key)
                    if tomb is None or self._tomb_deadline(*tomb) >= now:
                        continue  # stale: gone, a session again, or deleted anew (filed later)
                    del tombs[key]
                    hlc, node = self.versions.pop(key)
                    bucket = entry_bucket(key)
                    self.digest[bucket] ^= entry_hash(key, hlc, node, tomb[0], True)
                    self.buckets[bucket].discard(key)


def decode_entry_session(entry: Entry) -> Session | None:
    """The session an entry carries (``None`` for a tombstone); raises ``CodecError``."""
    blob = entry[4]
    return None if blob is None else decode_session(blob)
