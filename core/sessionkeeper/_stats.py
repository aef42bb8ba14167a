"""The built-in stats wrapper plugin: operation counters, hits and misses, latency summaries.

It is an ordinary pluggy wrapper on the backend hooks, so it sees every call; loading it (config
``stats = true``) sends every operation through pluggy, which costs about a microsecond each.
Hits and misses are the one figure it cannot judge from the hooks (expiry is decided at the
manager's clock reading), so the manager reports them (:meth:`StatsPlugin.record_fetch`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Sequence
from typing import Any, Final

from ._model import Session
from .hookspecs import hookimpl

__all__ = ["LatencySummary", "StatsPlugin"]

# Latencies fall into buckets four per power of two (≈ 19 % wide): enough for p50/p99.
_SUB: Final = 4
_BUCKETS: Final = 64 * _SUB


def _bucket(ns: int) -> int:
    if ns <= 0:
        return 0
    bits = ns.bit_length()
    top = (ns >> max(bits - 3, 0)) & (_SUB - 1) if bits >= 3 else 0
    return min(bits * _SUB + top, _BUCKETS - 1)


def _bucket_upper_ns(index: int) -> int:
    bits, top = divmod(index, _SUB)
    if bits < 3:
        return 1 << bits
    return ((_SUB + top + 1) << (bits - 3)) - 1


class LatencySummary:
    """Count, total, maximum and approximate quantiles of one operation's latency."""

    __slots__ = ("buckets", "calls", "errors", "max_ns", "total_ns")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.total_ns = 0
        self.max_ns = 0
        self.buckets = [0] * _BUCKETS

    def record(self, ns: int, failed: bool) -> None:
        self.calls += 1
        self.errors += failed
        self.total_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns
        self.buckets[_bucket(ns)] += 1

    def quantile(self, q: float) -> float:
        """The latency (µs) below which a fraction ``q`` of calls fell (bucket upper bound)."""
        if not self.calls:
            return 0.0
        rank = q * self.calls
        seen = 0
        for index, count in enumerate(self.buckets):
            seen += count
            if seen >= rank and count:
                return min(_bucket_upper_ns(index), self.max_ns) / 1000
        return self.max_ns / 1000

    def as_dict(self) -> dict[str, float | int]:
        return {
            "calls": self.calls,
            "errors": self.errors,
            "mean_us": round(self.total_ns / self.calls / 1000, 3) if self.calls else 0.0,
            "p50_us": round(self.quantile(0.5), 3),
            "p99_us": round(self.quantile(0.99), 3),
            "max_us": round(self.max_ns / 1000, 3),
        }


class StatsPlugin:
    """Wraps every backend operation; :meth:`snapshot` is what ``stats()`` shows as ``counters``.

    It never reads the clock: whether a fetch found a live session (a hit) or not (a miss) is
    judged by the manager at the one clock reading of that fetch, and told to
    :meth:`record_fetch`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[str, LatencySummary] = {}
        self.hits = 0
        self.misses = 0
        self.created = 0
        self.stored = 0
        self.deleted = 0
        self.expired = 0

    def _count(self, counter: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + amount)

    def _timed(self, op: str) -> Generator[None, Any, Any]:
        start = time.perf_counter_ns()
        failed = True
        try:
            result = yield
            failed = False
            return result
        finally:
            elapsed = time.perf_counter_ns() - start
            with self._lock:
                summary = self._ops.get(op)
                if summary is None:
                    summary = self._ops[op] = LatencySummary()
                summary.record(elapsed, failed)

    @hookimpl(wrapper=True)
    def sessionkeeper_store(self, session: Session) -> Generator[None, Any, Any]:
        result: Any = yield from self._timed("store")
        self._count("stored")
        return result

    @hookimpl(wrapper=True)
    def sessionkeeper_store_many(self, sessions: Sequence[Session]) -> Generator[None, Any, Any]:
        result: Any = yield from self._timed("store_many")
        self._count("stored", len(sessions))
        return result

    @hookimpl(wrapper=True)
    def sessionkeeper_fetch(self, session_id: str) -> Generator[None, Any, Any]:
        return (yield from self._timed("fetch"))

    def record_fetch(self, *, hit: bool) -> None:
        """Count one :meth:`~sessionkeeper.SessionManager.fetch`: ``hit`` when it returned a
        live session, else a miss (no such session, or expired at the fetch's reading)."""
        self._count("hits" if hit else "misses")

    @hookimpl(wrapper=True)
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Generator[None, Any, Any]:
        return (yield from self._timed("touch"))

    @hookimpl(wrapper=True)
    def sessionkeeper_delete(self, session_id: str) -> Generator[None, Any, Any]:
        result: Any = yield from self._timed("delete")
        if result:
            self._count("deleted")
        return result

    @hookimpl(wrapper=True)
    def sessionkeeper_list(self, now: int) -> Generator[None, Any, Any]:
        return (yield from self._timed("list"))

    @hookimpl(wrapper=True)
    def sessionkeeper_count(self, now: int) -> Generator[None, Any, Any]:
        return (yield from self._timed("count"))

    @hookimpl(wrapper=True)
    def sessionkeeper_iter_sessions(self) -> Generator[None, Any, Any]:
        return (yield from self._timed("iter_sessions"))

    @hookimpl(wrapper=True)
    def sessionkeeper_cleanup_expired(self, now: int) -> Generator[None, Any, Any]:
        result: Any = yield from self._timed("cleanup_expired")
        self._count("expired", result or 0)
        return result

    # The atomic operations (backends with the ``atomic`` capability): a conditional store
    # counts as a store, a take as a deletion, a rotate as neither (the session moves).

    @hookimpl(wrapper=True)
    def sessionkeeper_store_if(self) -> Generator[None, Any, Any]:
        result: Any = yield from self._timed("store_if")
        self._count("stored")
        return result

    @hookimpl(wrapper=True)
    def sessionkeeper_take(self) -> Generator[None, Any, Any]:
        result: Any = yield from self._timed("take")
        if result is not None:
            self._count("deleted")
        return result

    @hookimpl(wrapper=True)
    def sessionkeeper_rotate(self) -> Generator[None, Any, Any]:
        return (yield from self._timed("rotate"))

    @hookimpl(wrapper=True)
    def sessionkeeper_list_owner(self) -> Generator[None, Any, Any]:
        return (yield from self._timed("list_owner"))

    @hookimpl(wrapper=True)
    def sessionkeeper_count_owner(self) -> Generator[None, Any, Any]:
        return (yield from self._timed("count_owner"))

    @hookimpl(wrapper=True)
    def sessionkeeper_delete_owner(self) -> Generator[None, Any, Any]:
        result: Any = yield from self._timed("delete_owner")
        self._count("deleted", result or 0)
        return result

    @hookimpl
    def sessionkeeper_session_created(self, session: Session) -> None:
        self._count("created")

    def snapshot(self) -> dict[str, Any]:
        """Counters and per-operation latency summaries, JSON-compatible."""
        with self._lock:
            operations = {op: summary.as_dict() for op, summary in sorted(self._ops.items())}
        return {
            "hits": self.hits,
            "misses": self.misses,
            "created": self.created,
            "stored": self.stored,
            "deleted": self.deleted,
            "expired": self.expired,
            "operations": operations,
        }
