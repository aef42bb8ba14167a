"""Pooled connections kept between operations, so that an operation does not pay the pool.

:class:`psycopg_pool.ConnectionPool` does a good deal per ``getconn``/``putconn`` pair (its
lock, statistics, logging calls, an expiry check and a hand-over to waiting clients): about
4 µs of client CPU, a sixth of what a primary-key ``fetch`` costs the client in all. A
:class:`Lender` keeps the connections an operation gave back on a stack of its own and lends
them again at the cost of a lock and a list operation; the pool still opens, configures,
checks, replaces and closes every connection:

- a connection that is not idle and sound when given back (lost, or left inside a
  transaction) goes to the pool, which replaces or resets it;
- when an operation waits on the pool for a connection, every connection given back meanwhile
  goes to the pool (so the waiter gets it: a connection is never kept idle here while a
  client waits there), and the two decisions are taken under one lock (no lost hand-over);
- every :data:`FLUSH_EVERY` hand-backs, and whenever the backend checks the pool or closes,
  every kept connection returns to the pool, whose lifetime and idle limits then apply.
"""

from __future__ import annotations

import threading
from typing import Any, Final, Generic, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

__all__ = ["FLUSH_EVERY", "Lender"]

#: Hand-backs between two returns of every kept connection to the pool.
FLUSH_EVERY: Final = 1_000

C = TypeVar("C", bound="psycopg.Connection[Any]")

_IDLE: Final = int(TransactionStatus.IDLE)  # pgconn.transaction_status is a plain int


class Lender(Generic[C]):
    """Lend ``pool``'s connections, keeping the ones given back (see the module).

    :param pool: the pool the connections come from and return to.
    """

    def __init__(self, pool: ConnectionPool[C]) -> None:
        self.pool = pool
        self._kept: list[C] = []
        self._lock = threading.Lock()
        self._waiting = 0  # operations inside pool.getconn
        self._returns = 0
        self._closed = False

    @property
    def kept(self) -> int:
        """How many connections are kept here, idle, right now."""
        return len(self._kept)

    def get(self) -> C:
        """A connection: the one given back last, else the pool's (which may wait, and
        raises :class:`~psycopg_pool.PoolTimeout` or :class:`~psycopg_pool.PoolClosed`)."""
        with self._lock:
            if self._kept:
                return self._kept.pop()
            self._waiting += 1
        try:
            return self.pool.getconn()
        finally:
            with self._lock:
                self._waiting -= 1

    def put(self, conn: C) -> None:
        """Take ``conn`` back: kept when it is idle and nobody waits on the pool, else given
        to the pool."""
        if conn.pgconn.transaction_status == _IDLE:
            with self._lock:
                self._returns += 1
                if not (self._waiting or self._closed or self._returns >= FLUSH_EVERY):
                    self._kept.append(conn)
                    return
                flush = self._returns >= FLUSH_EVERY
        else:
            flush = False
        self.pool.putconn(conn)
        if flush:
            self.flush()

    def flush(self) -> None:
        """Give every kept connection back to the pool."""
        with self._lock:
            kept, self._kept = self._kept, []
            self._returns = 0
        for conn in kept:
            self.pool.putconn(conn)

    def check(self) -> None:
        """After a lost connection: give back what is kept, and let the pool check its idle
        connections (replacing the ones the same loss broke)."""
        self.flush()
        self.pool.check()

    def close(self) -> None:
        """Keep nothing from now on: what is kept, and what is given back later, goes to the
        pool (to be closed with it)."""
        with self._lock:
            self._closed = True
        self.flush()
