"""An expiry index for backends that keep sessions in a ``dict``: O(expired) cleanup.

Sessions are filed by deadline (:attr:`Session.expires_at <sessionkeeper.Session.expires_at>`:
the earlier of the idle deadline ``last_accessed + timeout_ms`` and the absolute one
``created_at + absolute_timeout_ms``) in buckets of
:data:`BUCKET_MS` ms; a bucket is a plain ``list`` of ids (8 bytes an entry; a ``set`` would cost
about 40) and a heap holds the bucket keys, smallest first. Sessions that never expire are not
filed.

The index is *lazy*. Its one invariant: every stored session that can expire has an entry in some
bucket **at or before** the bucket of its deadline. So a touch (which moves a deadline later, or
not at all when the absolute deadline is the earlier one) changes nothing here; a store files an
entry only for a new id or when the deadline moved to an earlier bucket; a delete leaves its
entry behind, stale. Every entry is checked against the stored session before anything is done
with it, and every session holds one entry however often it is touched.

:meth:`ExpiryIndex.sweep` walks the buckets that lie wholly before ``now`` (every entry there is
expired, gone, or live because it was touched since it was filed — then it is re-filed once, at
its real deadline), then scans the one bucket holding ``now``. The cost is the number of expired
sessions plus those touched since they were filed (each live session is re-filed at most once per
``timeout_ms``), never the number stored. It works in steps of at most :data:`BATCH` entries, so
the caller can release its lock (and commit the deletions) between steps.

Stale entries (of deleted sessions, of sessions replaced by one that expires sooner or never)
would otherwise stay until the sweep reaches their bucket, which for a long timeout is far away:
memory would follow what was ever stored, not what is stored (issue 12, item 7). So the index
counts its entries (:meth:`ExpiryIndex.entries`, O(1)), and :meth:`ExpiryIndex.compact_if_stale`
— called by its owner after a delete or a replacement that filed an entry — rebuilds it from the
stored sessions when it holds more than ``2 * stored + SLACK`` entries. A rebuild costs
O(stored) and happens only after at least ``(stored + SLACK) / 2`` such writes since the last
one: O(1) amortised per write, and the index never holds more than twice the stored sessions
plus :data:`SLACK` entries. A rebuild files every session once, at its real deadline.

:class:`sessionkeeper._table.SessionTable` wraps a ``dict`` of sessions, this index and their lock;
backends use that rather than this class directly.
"""

from __future__ import annotations

import heapq
from collections.abc import Generator
from typing import Final

from ._model import Session

__all__ = ["BATCH", "BUCKET_MS", "SLACK", "ExpiryIndex", "bucket_of"]

#: Width of one expiry bucket, in ms.
BUCKET_MS: Final = 1024
#: Index entries examined per step of a sweep (and so per transaction of its deletions).
BATCH: Final = 1000
#: Entries the index may hold beyond twice the stored sessions before it is rebuilt.
SLACK: Final = 1024


def bucket_of(session: Session) -> int:
    """The bucket of ``session``'s deadline (:attr:`~sessionkeeper.Session.expires_at`, both
    timeouts counted), or ``-1`` when it never expires."""
    deadline = session.expires_at
    if deadline is None:
        return -1
    return deadline // BUCKET_MS


class ExpiryIndex:
    """Buckets of session ids by deadline, for O(expired) cleanup of a ``dict`` of sessions.

    Not thread-safe: call every method with the lock that guards the sessions ``dict`` held.
    Typical use (what :class:`~sessionkeeper._table.SessionTable` does)::

        previous = sessions.get(session.id)                 # store
        if index.stored(previous, session) and previous is not None:
            index.compact_if_stale(sessions)                # (after the dict set)
        sessions[session.id] = session
        ...
        if sessions.pop(session_id, None) is not None:      # delete
            index.compact_if_stale(sessions)
        ...
        for deleted in index.sweep(now, sessions):          # cleanup: one step per next()
            remove_from_disk(deleted)
        live = len(sessions) - index.count_expired(now, sessions)
    """

    __slots__ = ("buckets", "generation", "heap", "size", "slack")

    #: Width of one bucket, in ms.
    BUCKET_MS: Final = BUCKET_MS
    #: Entries examined per step of :meth:`sweep`.
    BATCH: Final = BATCH
    #: Entries allowed beyond twice the stored sessions before :meth:`compact_if_stale` rebuilds.
    SLACK: Final = SLACK

    def __init__(self, *, slack: int = SLACK) -> None:
        #: Entries allowed beyond twice the stored sessions (see :meth:`compact_if_stale`).
        self.slack = slack
        self.buckets: dict[int, list[str]] = {}
        self.heap: list[int] = []
        #: How many entries the buckets hold, live and stale (kept up to date by every method).
        self.size = 0
        #: Incremented by :meth:`clear` and :meth:`compact`: a sweep in progress notices that
        #: the buckets it was walking were replaced.
        self.generation = 0

    def file(self, session_id: str, bucket: int) -> None:
        """Add ``session_id`` to ``bucket``."""
        self.size += 1
        entries = self.buckets.get(bucket)
        if entries is None:
            self.buckets[bucket] = [session_id]
            heapq.heappush(self.heap, bucket)
        else:
            entries.append(session_id)

    def stored(self, previous: Session | None, session: Session) -> bool:
        """Keep the invariant after ``session`` replaced ``previous`` (``None``: a new id).

        Returns True when it filed an entry. When it did so for a replacement (``previous`` is
        not ``None``), the entry of ``previous`` may now be stale: call
        :meth:`compact_if_stale` once the session is in the ``dict``.
        """
        bucket = bucket_of(session)
        if bucket < 0:
            return False
        if previous is not None:
            old = bucket_of(previous)
            if 0 <= old <= bucket:
                return False  # already filed at or before the new deadline
        self.file(session.id, bucket)
        return True

    def clear(self) -> None:
        """Drop every entry."""
        self.buckets.clear()
        self.heap.clear()
        self.size = 0
        self.generation += 1

    def entries(self) -> int:
        """How many entries the index holds (live and stale); O(1)."""
        return self.size

    def compact_if_stale(self, sessions: dict[str, Session]) -> bool:
        """Rebuild from ``sessions`` when the index holds more than ``2 * len(sessions) +
        slack`` entries; return True when it did.

        Call it after removing a session from ``sessions`` and after a replacement for which
        :meth:`stored` filed an entry: those are the only writes that raise the entry count
        relative to the stored count, so the bound holds after every write.
        """
        if self.size > 2 * len(sessions) + self.slack:
            self.compact(sessions)
            return True
        return False

    def compact(self, sessions: dict[str, Session]) -> None:
        """Rebuild the index from ``sessions``: one entry per session that can expire, at its
        real deadline. Cost O(len(sessions)). The containers are refilled in place."""
        buckets, heap = self.buckets, self.heap
        buckets.clear()
        heap.clear()
        self.generation += 1
        size = 0
        for session_id, session in sessions.items():
            deadline = session.expires_at
            if deadline is None:
                continue
            size += 1
            bucket = deadline // BUCKET_MS
            entries = buckets.get(bucket)
            if entries is None:
                buckets[bucket] = [session_id]
            else:
                entries.append(session_id)
        heap.extend(buckets)
        heapq.heapify(heap)
        self.size = size

    def sweep(self, now: int, sessions: dict[str, Session]) -> Generator[list[Session], None, None]:
        """Delete from ``sessions`` every session expired at ``now``, one step per ``next()``.

        Each step examines at most :data:`BATCH` entries, deletes the expired sessions it finds
        from ``sessions`` and yields them (possibly none). Drive it with the lock held during
        each ``next()``; one sweep at a time. Between steps other writers may store, delete
        and even :meth:`compact` the index: the sweep notices a compaction (the generation)
        and carries on with the rebuilt buckets.
        """
        boundary = now // BUCKET_MS
        buckets, heap = self.buckets, self.heap
        generation = self.generation
        # id -> bucket it was re-filed at by this sweep: a later entry of the same id (a
        # duplicate) needs no second one unless its deadline is now before that bucket.
        refiled: dict[str, int] = {}
        # Buckets before the boundary hold deadlines < boundary * BUCKET_MS <= now.
        while True:
            if generation != self.generation:  # rebuilt between steps: one entry per session
                generation = self.generation
                refiled.clear()
            deleted: list[Session] = []
            budget = BATCH
            while budget > 0 and heap and heap[0] < boundary:
                key = heap[0]
                entries = buckets.get(key)
                if entries is None:
                    heapq.heappop(heap)
                    continue
                while entries and budget > 0:
                    budget -= 1
                    self.size -= 1
                    session_id = entries.pop()
                    session = sessions.get(session_id)
                    if session is None:
                        continue  # deleted
                    deadline = session.expires_at
                    if deadline is None:
                        continue  # replaced by a session that never expires
                    if now > deadline:
                        del sessions[session_id]
                        deleted.append(session)
                        continue
                    # Touched since it was filed: file it at its deadline (>= boundary), once.
                    bucket = deadline // BUCKET_MS
                    if refiled.get(session_id, bucket + 1) > bucket:
                        refiled[session_id] = bucket
                        self.file(session_id, bucket)
                if not entries:
                    # Refiling only adds keys >= boundary, so ``key`` is still the smallest.
                    del buckets[key]
                    heapq.heappop(heap)
            done = budget > 0
            if deleted or not done:
                yield deleted
            if done:
                break
        # The bucket holding ``now``: some of its deadlines are over, some are not. Scanned in
        # steps; if the index is rebuilt between two of them, the scan starts over on the new
        # bucket (a rebuild needs many writes, so this ends).
        while True:
            generation = self.generation
            entries = buckets.get(boundary)
            if entries is None:
                return
            size = len(entries)
            keep: list[str] = []
            kept: set[str] = set()
            for start in range(0, size, BATCH):
                deleted = []
                for session_id in entries[start : start + BATCH]:
                    session = sessions.get(session_id)
                    if session is None or session_id in kept:
                        continue
                    deadline = session.expires_at
                    if deadline is None:
                        continue
                    if now > deadline:
                        del sessions[session_id]
                        deleted.append(session)
                    else:
                        kept.add(session_id)
                        keep.append(session_id)
                yield deleted
                if generation != self.generation:
                    break
            else:
                # Only sweeps shrink bucket lists, so ``entries`` is still this bucket and
                # whatever was appended between the steps sits after ``size``.
                entries[:size] = keep
                self.size -= size - len(keep)
                return

    def count_expired(self, now: int, sessions: dict[str, Session]) -> int:
        """How many stored sessions are expired at ``now`` (cost: the entries filed <= now)."""
        boundary = now // BUCKET_MS
        heap, buckets = self.heap, self.buckets
        expired: set[str] = set()
        seen: set[int] = set()
        # Walk the heap from the root, descending only into keys <= boundary.
        stack = [0]
        size = len(heap)
        while stack:
            position = stack.pop()
            if position >= size or heap[position] > boundary:
                continue
            stack.append(2 * position + 1)
            stack.append(2 * position + 2)
            key = heap[position]
            entries = buckets.get(key)
            if entries is None or key in seen:
                continue
            seen.add(key)
            for session_id in entries:
                session = sessions.get(session_id)
                if session is not None and session.is_expired(now):
                    expired.add(session_id)
        return len(expired)
