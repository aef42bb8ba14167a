"""An expiry index for backends that keep sessions in a ``dict``: O(expired) cleanup.

Sessions are filed by deadline (``last_accessed + timeout_ms``) in buckets of
:data:`BUCKET_MS` ms; a bucket is a plain ``list`` of ids (8 bytes an entry; a ``set`` would cost
about 40) and a heap holds the bucket keys, smallest first. Sessions that never expire are not
filed.

The index is *lazy*. Its one invariant: every stored session that can expire has an entry in some
bucket **at or before** the bucket of its deadline. So a touch (which only moves a deadline later)
changes nothing here; a store files an entry only for a new id or when the deadline moved to an
earlier bucket; a delete leaves its entry behind, stale. Every entry is checked against the
stored session before anything is done with it, and every session holds one entry however often
it is touched.

:meth:`ExpiryIndex.sweep` walks the buckets that lie wholly before ``now`` (every entry there is
expired, gone, or live because it was touched since it was filed — then it is re-filed once, at
its real deadline), then scans the one bucket holding ``now``. The cost is the number of expired
sessions plus those touched since they were filed (each live session is re-filed at most once per
``timeout_ms``), never the number stored. It works in steps of at most :data:`BATCH` entries, so
the caller can release its lock (and commit the deletions) between steps.

The ``memory`` and ``sqlitedict`` backends use it; a third-party backend that keeps an in-memory
copy of its sessions can too.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Final

from ._model import Session

__all__ = ["BATCH", "BUCKET_MS", "ExpiryIndex", "bucket_of"]

#: Width of one expiry bucket, in ms.
BUCKET_MS: Final = 1024
#: Index entries examined per step of a sweep (and so per transaction of its deletions).
BATCH: Final = 1000


def bucket_of(session: Session) -> int:
    """The bucket of ``session``'s deadline, or ``-1`` when it never expires."""
    timeout = session.timeout_ms
    if timeout is None:
        return -1
    return (session.last_accessed + timeout) // BUCKET_MS


class ExpiryIndex:
    """Buckets of session ids by deadline, for O(expired) cleanup of a ``dict`` of sessions.

    Not thread-safe: call every method with the lock that guards the sessions ``dict`` held.
    Typical use in a backend::

        index.stored(sessions.get(session.id), session)   # before replacing, in store
        sessions[session.id] = session
        ...
        for deleted in index.sweep(now, sessions):          # cleanup: one step per next()
            remove_from_disk(deleted)
        live = len(sessions) - index.count_expired(now, sessions)
    """

    __slots__ = ("buckets", "heap")

    #: Width of one bucket, in ms.
    BUCKET_MS: Final = BUCKET_MS
    #: Entries examined per step of :meth:`sweep`.
    BATCH: Final = BATCH

    def __init__(self) -> None:
        self.buckets: dict[int, list[str]] = {}
        self.heap: list[int] = []

    def file(self, session_id: str, bucket: int) -> None:
        """Add ``session_id`` to ``bucket``."""
        entries = self.buckets.get(bucket)
        if entries is None:
            self.buckets[bucket] = [session_id]
            heapq.heappush(self.heap, bucket)
        else:
            entries.append(session_id)

    def stored(self, previous: Session | None, session: Session) -> None:
        """Keep the invariant after ``session`` replaced ``previous`` (``None``: a new id)."""
        bucket = bucket_of(session)
        if bucket < 0:
            return
        if previous is not None:
            old = bucket_of(previous)
            if 0 <= old <= bucket:
                return  # already filed at or before the new deadline
        self.file(session.id, bucket)

    def clear(self) -> None:
        """Drop every entry."""
        self.buckets.clear()
        self.heap.clear()

    def entries(self) -> int:
        """How many entries the index holds (live and stale)."""
        return sum(map(len, self.buckets.values()))

    def sweep(self, now: int, sessions: dict[str, Session]) -> Iterator[list[Session]]:
        """Delete from ``sessions`` every session expired at ``now``, one step per ``next()``.

        Each step examines at most :data:`BATCH` entries, deletes the expired sessions it finds
        from ``sessions`` and yields them (possibly none). Drive it with the lock held during
        each ``next()``; one sweep at a time.
        """
        boundary = now // BUCKET_MS
        buckets, heap = self.buckets, self.heap
        refiled: set[str] = set()
        # Buckets before the boundary hold deadlines < boundary * BUCKET_MS <= now.
        while True:
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
                    session_id = entries.pop()
                    session = sessions.get(session_id)
                    if session is None or session.timeout_ms is None:
                        continue  # deleted, or replaced by a session that never expires
                    deadline = session.last_accessed + session.timeout_ms
                    if now > deadline:
                        del sessions[session_id]
                        deleted.append(session)
                    elif session_id not in refiled:
                        # Touched since it was filed: file it at its deadline (>= boundary).
                        refiled.add(session_id)
                        self.file(session_id, deadline // BUCKET_MS)
                if not entries:
                    # Refiling only adds keys >= boundary, so ``key`` is still the smallest.
                    del buckets[key]
                    heapq.heappop(heap)
            done = budget > 0
            if deleted or not done:
                yield deleted
            if done:
                break
        # The bucket holding ``now``: some of its deadlines are over, some are not.
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
                if session is None or session.timeout_ms is None or session_id in kept:
                    continue
                if now - session.last_accessed > session.timeout_ms:
                    del sessions[session_id]
                    deleted.append(session)
                else:
                    kept.add(session_id)
                    keep.append(session_id)
            yield deleted
        # Only sweeps shrink bucket lists, so ``entries`` is still this bucket and whatever was
        # appended between the steps sits after ``size``.
        entries[:size] = keep

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
