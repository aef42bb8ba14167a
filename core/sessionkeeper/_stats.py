"""The built-in stats wrapper plugin: operation counters, hits and misses, latency summaries.

It is an ordinary pluggy wrapper on the backend hooks and on their ``async_`` twins (the
awaitable a twin returns is replaced by one that times its await), so it sees every call on
every path; loading it (config ``stats = true``) sends every operation through pluggy, which
costs about a microsecond each.
Hits and misses are the one figure it cannot judge from the hooks (expiry is decided at the
manager's clock reading), so the manager reports them (:meth:`StatsPlugin.record_fetch`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, Final, TypeAlias

from ._model import Session
from .hookspecs import ASYNC_HOOKS, hookimpl

__all__ = ["LatencySummary", "StatsPlugin"]

#: What counts an operation's result: ``tally(plugin, result)``.
Tally: TypeAlias = "Callable[[StatsPlugin, Any], None]"

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

    def _record(self, op: str, elapsed_ns: int, failed: bool) -> None:
        with self._lock:
            summary = self._ops.get(op)
            if summary is None:
                summary = self._ops[op] = LatencySummary()
            summary.record(elapsed_ns, failed)

    def _timed(self, op: str, tally: Tally | None) -> Generator[None, Any, Any]:
        """A sync hook's wrapper: the call timed, its result told to ``tally``."""
        start = time.perf_counter_ns()
        failed = True
        try:
            result = yield
            failed = False
        finally:
            self._record(op, time.perf_counter_ns() - start, failed)
        if tally is not None:
            tally(self, result)
        return result

    def _wrapped(self, op: str, tally: Tally | None) -> Generator[None, Any, Any]:
        """An ``async_`` hook's wrapper: the awaitable the hook returned, replaced by one that
        times its await and tells its result to ``tally`` (the native path, issue 15). A hook
        that raises instead of returning an awaitable is a failed call; one that declined
        (``None``) stays ``None``."""
        start = time.perf_counter_ns()
        try:
            awaitable = yield
        except BaseException:
            self._record(op, time.perf_counter_ns() - start, True)
            raise
        return None if awaitable is None else self._awaited(op, awaitable, tally)

    async def _awaited(self, op: str, awaitable: Awaitable[Any], tally: Tally | None) -> Any:
        """``awaitable``'s result, its await timed: a failure is an error, a cancellation (the
        caller gave up, as a sync call cannot) a call without one."""
        start = time.perf_counter_ns()
        failed = True
        try:
            result = await awaitable
            failed = False
        except asyncio.CancelledError:
            failed = False
            raise
        finally:
            self._record(op, time.perf_counter_ns() - start, failed)
        if tally is not None:
            tally(self, result)
        return result

    # What a result counts (a conditional store counts as a store, a take as a deletion, a
    # rotate as neither: the session moves).

    def _one_stored(self, result: object) -> None:
        self._count("stored")

    def _deleted_if(self, result: object) -> None:
        if result:
            self._count("deleted")

    def _taken(self, result: object) -> None:
        if result is not None:
            self._count("deleted")

    def _expired(self, result: int | None) -> None:
        self._count("expired", result or 0)

    def _deleted(self, result: int | None) -> None:
        self._count("deleted", result or 0)

    @hookimpl(wrapper=True)
    def sessionkeeper_store_many(self, sessions: Sequence[Session]) -> Generator[None, Any, Any]:
        return (yield from self._timed("store_many", _stored(len(sessions))))

    @hookimpl(wrapper=True)
    def sessionkeeper_async_store_many(
        self, sessions: Sequence[Session]
    ) -> Generator[None, Any, Any]:
        return (yield from self._wrapped("store_many", _stored(len(sessions))))

    def record_fetch(self, *, hit: bool) -> None:
        """Count one :meth:`~sessionkeeper.SessionManager.fetch`: ``hit`` when it returned a
        live session, else a miss (no such session, or expired at the fetch's reading)."""
        self._count("hits" if hit else "misses")

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


def _stored(count: int) -> Tally:
    """The tally of a batch of ``count`` sessions stored."""

    def tally(plugin: StatsPlugin, result: object) -> None:
        plugin._count("stored", count)

    return tally


#: The operation hooks StatsPlugin wraps (beside ``store_many``), each with what its result
#: counts (``None``: timed only). Each gets a wrapper on the hook and one on its ``async_``
#: twin (:data:`~sessionkeeper.hookspecs.ASYNC_HOOKS`), so the counters are the same whichever
#: path an operation takes.
_TALLIES: Final[dict[str, Tally | None]] = {
    "store": StatsPlugin._one_stored,
    "fetch": None,
    "touch": None,
    "delete": StatsPlugin._deleted_if,
    "list": None,
    "count": None,
    "iter_sessions": None,
    "cleanup_expired": StatsPlugin._expired,
    "store_if": StatsPlugin._one_stored,
    "take": StatsPlugin._taken,
    "rotate": None,
    "list_owner": None,
    "count_owner": None,
    "delete_owner": StatsPlugin._deleted,
}


def _wrapper(op: str, tally: Tally | None, *, native: bool) -> Callable[..., Any]:
    def wrapper(self: StatsPlugin) -> Generator[None, Any, Any]:
        return (yield from (self._wrapped if native else self._timed)(op, tally))

    wrapper.__name__ = f"sessionkeeper_{'async_' if native else ''}{op}"
    return hookimpl(wrapper=True)(wrapper)


for _op, _tally in _TALLIES.items():
    setattr(StatsPlugin, f"sessionkeeper_{_op}", _wrapper(_op, _tally, native=False))
    if f"sessionkeeper_{_op}" in ASYNC_HOOKS:
        setattr(StatsPlugin, f"sessionkeeper_async_{_op}", _wrapper(_op, _tally, native=True))
