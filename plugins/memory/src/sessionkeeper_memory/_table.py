"""The shared in-process tables and their expiry index.

A :class:`Table` is what a ``table_name`` names: the ``dict`` of sessions plus an expiry index. The
tables live in a module-level registry, reference-counted by :func:`acquire` and :func:`release`,
so that several managers in one process that name the same table share it (like a named ETS
table), and the table is dropped when the last of them closes.

The expiry index
----------------
Sessions are filed by deadline (``last_accessed + timeout_ms``) in buckets of
:data:`BUCKET_MS` milliseconds: bucket ``k`` holds ids whose deadline falls in
``[k * BUCKET_MS, (k + 1) * BUCKET_MS)``. A bucket is a plain ``list`` of ids (8 bytes an entry;
a ``set`` would cost about 40) and a heap holds the bucket keys, smallest first. Sessions that
never expire are not indexed.

The index is *lazy*: the one invariant is that every stored session with a deadline has an entry
in some bucket **at or before** the bucket of its real deadline. So

- a touch (which only moves a deadline later) never changes the index;
- a store appends an entry only for a new id or when the new deadline falls in an earlier bucket
  than the previous version's;
- a delete leaves its entry behind (a stale entry; every entry is checked against the stored
  session before anything is done with it).

:meth:`Table.cleanup_expired` pops every bucket that lies wholly before ``now``: each id in it is
either expired (deleted), gone or never-expiring (dropped), or live because it was touched since
it was filed (re-filed once into the bucket of its real deadline). It then scans the one bucket
that contains ``now``, deleting what is expired and keeping the rest. The cost is the number of
expired sessions plus the sessions touched since they were filed — each live session is re-filed
at most once per ``timeout_ms`` — never the number stored. Every session holds one index entry
(8 bytes), however often it is touched.

The work is done in batches of :data:`BATCH` entries, releasing the lock between batches, so a
large sweep does not hold up stores for more than a fraction of a millisecond at a time.
"""

from __future__ import annotations

import heapq
import threading
from typing import Final

from sessionkeeper import Session

__all__ = ["BATCH", "BUCKET_MS", "Table", "acquire", "release"]

#: Width of one expiry bucket, in ms. Wider buckets mean fewer buckets (a smaller heap) but a
#: larger boundary bucket to scan at each cleanup; about a second matches the default touch
#: resolution and keeps the boundary scan to the sessions whose deadline falls in that second.
BUCKET_MS: Final = 1024
#: Index entries examined per lock hold during a cleanup.
BATCH: Final = 1000


class Table:
    """One named table: the sessions, the expiry index and the lock that keeps them consistent.

    ``lock`` guards every write to ``sessions``, ``buckets`` and ``heap``; reads of ``sessions``
    by key need no lock (a ``dict.get`` is atomic). ``sweep_lock`` lets one cleanup run at a time.
    """

    __slots__ = ("buckets", "heap", "lock", "name", "refs", "sessions", "sweep_lock")

    def __init__(self, name: str) -> None:
        self.name = name
        self.sessions: dict[str, Session] = {}
        self.buckets: dict[int, list[str]] = {}
        self.heap: list[int] = []
        self.lock = threading.Lock()
        self.sweep_lock = threading.Lock()
        self.refs = 0

    # -- writes (called with ``lock`` held) -------------------------------------------------------

    def file(self, session_id: str, bucket: int) -> None:
        """Append ``session_id`` to ``bucket``, creating the bucket. Call with ``lock`` held."""
        entries = self.buckets.get(bucket)
        if entries is None:
            self.buckets[bucket] = [session_id]
            heapq.heappush(self.heap, bucket)
        else:
            entries.append(session_id)

    # -- sweeping ---------------------------------------------------------------------------------

    def cleanup_expired(self, now: int) -> int:
        """Delete every session expired at ``now``; return how many were deleted."""
        with self.sweep_lock:
            boundary = now // BUCKET_MS
            removed = self._sweep_past(now, boundary)
            return removed + self._sweep_boundary(now, boundary)

    def _sweep_past(self, now: int, boundary: int) -> int:
        # Buckets before ``boundary`` hold deadlines < boundary * BUCKET_MS <= now: all over.
        sessions, buckets, heap, lock = self.sessions, self.buckets, self.heap, self.lock
        removed = 0
        refiled: set[str] = set()
        key = -1
        entries: list[str] | None = None
        position = 0
        while True:
            with lock:
                budget = BATCH
                while budget > 0:
                    if entries is None:
                        # Next bucket; keys left in the heap after their bucket went are skipped.
                        if not heap or heap[0] >= boundary:
                            return removed
                        key = heap[0]
                        entries = buckets.get(key)
                        if entries is None:
                            heapq.heappop(heap)
                            continue
                        position = 0
                    end = min(len(entries), position + budget)
                    budget -= end - position
                    for session_id in entries[position:end]:
                        session = sessions.get(session_id)
                        if session is None or session.timeout_ms is None:
                            continue  # deleted, or replaced by a session that never expires
                        deadline = session.last_accessed + session.timeout_ms
                        if now > deadline:
                            del sessions[session_id]
                            removed += 1
                        elif session_id not in refiled:
                            # Touched since it was filed: file it where its deadline is now.
                            refiled.add(session_id)
                            self.file(session_id, deadline // BUCKET_MS)
                    position = end
                    if position == len(entries):
                        # Appends happen under this lock, so nothing can be added after this.
                        buckets.pop(key, None)
                        if heap and heap[0] == key:
                            heapq.heappop(heap)
                        entries = None

    def _sweep_boundary(self, now: int, boundary: int) -> int:
        # The bucket containing ``now``: some of its deadlines are over, some are not.
        sessions, lock = self.sessions, self.lock
        with lock:
            entries = self.buckets.get(boundary)
            if entries is None:
                return 0
            size = len(entries)
        removed = 0
        keep: list[str] = []
        kept: set[str] = set()
        for start in range(0, size, BATCH):
            with lock:
                for session_id in entries[start : start + BATCH]:
                    session = sessions.get(session_id)
                    if session is None or session.timeout_ms is None or session_id in kept:
                        continue
                    if now - session.last_accessed > session.timeout_ms:
                        del sessions[session_id]
                        removed += 1
                    else:
                        kept.add(session_id)
                        keep.append(session_id)
        with lock:
            # Only a sweep removes or replaces bucket lists (and sweeps hold ``sweep_lock``), so
            # ``entries`` is still this bucket; ids appended meanwhile sit after ``size``.
            entries[:size] = keep
            if not entries:
                # Its key stays in the heap; keys without a bucket are skipped when popped.
                self.buckets.pop(boundary, None)
        return removed

    # -- reads ------------------------------------------------------------------------------------

    def count_live(self, now: int) -> int:
        """How many stored sessions are live at ``now``: all less the expired the index finds."""
        boundary = now // BUCKET_MS
        sessions, buckets, heap = self.sessions, self.buckets, self.heap
        expired: set[str] = set()
        with self.lock:
            # Walk the heap from the root, descending only into keys <= boundary: the cost is
            # the number of buckets at or before ``now``, not the number of buckets.
            seen: set[int] = set()
            stack = [0]
            size = len(heap)
            while stack:
                index = stack.pop()
                if index >= size or heap[index] > boundary:
                    continue
                stack.append(2 * index + 1)
                stack.append(2 * index + 2)
                key = heap[index]
                entries = buckets.get(key)
                if entries is None or key in seen:
                    continue
                seen.add(key)
                for session_id in entries:
                    session = sessions.get(session_id)
                    if session is not None and session.is_expired(now):
                        expired.add(session_id)
            return len(sessions) - len(expired)

    def snapshot(self) -> list[Session]:
        """Every stored session, taken under the lock."""
        with self.lock:
            return list(self.sessions.values())

    def index_entries(self) -> int:
        """How many entries the expiry index holds (live and stale)."""
        with self.lock:
            return sum(map(len, self.buckets.values()))


_registry: dict[str, Table] = {}
_registry_lock = threading.Lock()


def acquire(name: str) -> Table:
    """The table named ``name``, created if no open backend uses it; counts one more user."""
    with _registry_lock:
        table = _registry.get(name)
        if table is None:
            table = _registry[name] = Table(name)
        table.refs += 1
        return table


def release(table: Table) -> None:
    """Count one user less; drop the table (and its sessions) when it was the last."""
    with _registry_lock:
        table.refs -= 1
        if table.refs > 0:
            return
        if _registry.get(table.name) is table:
            del _registry[table.name]
    with table.sweep_lock, table.lock:  # after a sweep still running in another thread
        table.sessions.clear()
        table.buckets.clear()
        table.heap.clear()
