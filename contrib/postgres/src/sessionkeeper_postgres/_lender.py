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
  client waits there);
- every :data:`FLUSH_EVERY` hand-backs, and whenever the backend checks the pool or closes,
  every kept connection returns to the pool, whose lifetime and idle limits then apply.

The common path takes no lock: the kept connections are a list, and ``list.pop`` and
``list.append`` are each atomic, so a connection is taken off the list by exactly one caller
(lent, or handed to the pool), never both. A lock only counts the operations that wait on the
pool. No hand-over is lost without it: a waiter counts itself, then looks at the list again
before it waits; a connection given back is first appended, then the count is read. Whichever
comes second sees the other (the waiter finds the connection, or the giver sees the waiter
and hands what is kept to the pool); the same order covers :meth:`Lender.close`.
"""

from __future__ import annotations

import threading
from typing import Any, Final, Generic, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool

__all__ = ["FLUSH_EVERY", "AsyncLender", "Lender"]

#: Hand-backs between two returns of every kept connection to the pool.
FLUSH_EVERY: Final = 1_000

C = TypeVar("C", bound="psycopg.Connection[Any]")
A = TypeVar("A", bound="psycopg.AsyncConnection[Any]")

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
        try:
            return self._kept.pop()
        except IndexError:
            pass
        with self._lock:
            self._waiting += 1
        try:
            try:  # given back since we looked, before it could see us waiting
                return self._kept.pop()
            except IndexError:
                return self.pool.getconn()
        finally:
            with self._lock:
                self._waiting -= 1

    def put(self, conn: C) -> None:
        """Take ``conn`` back: kept when it is idle and nobody waits on the pool, else given
        to the pool."""
        if conn.pgconn.transaction_status != _IDLE or self._closed:
            self.pool.putconn(conn)
            return
        self._returns += 1  # a count lost to a race only delays the next flush
        self._kept.append(conn)
        if self._waiting or self._closed or self._returns >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Give every kept connection back to the pool."""
        self._returns = 0
        kept = self._kept
        while True:
            try:
                conn = kept.pop()
            except IndexError:
                return
            self.pool.putconn(conn)

    def check(self) -> None:
        """After a lost connection: give back what is kept, and let the pool check its idle
        connections (replacing the ones the same loss broke)."""
        self.flush()
        self.pool.check()

    def close(self) -> None:
        """Keep nothing from now on: what is kept, and what is given back later, goes to the
        pool (to be closed with it)."""
        self._closed = True
        self.flush()


class AsyncLender(Generic[A]):
    """:class:`Lender` for an :class:`~psycopg_pool.AsyncConnectionPool`, on its event loop.

    The same rules, simpler: everything runs on one thread, so nothing can come between a look
    at the kept list or the waiter count and what follows it. A connection given back while
    an operation waits on the pool goes to the pool (which hands it to the waiter).

    :param pool: the pool the connections come from and return to.
    """

    def __init__(self, pool: AsyncConnectionPool[A]) -> None:
        self.pool = pool
        self._kept: list[A] = []
        self._waiting = 0
        self._returns = 0
        self._closed = False

    @property
    def kept(self) -> int:
        """How many connections are kept here, idle, right now."""
        return len(self._kept)

    async def get(self) -> A:
        """A connection: the one given back last, else the pool's."""
        if self._kept:
            return self._kept.pop()
        self._waiting += 1
        try:
            return await self.pool.getconn()
        finally:
            self._waiting -= 1

    async def put(self, conn: A) -> None:
        """Take ``conn`` back: kept when it is idle and nobody waits on the pool, else given
        to the pool."""
        self._returns += 1
        if (
            conn.pgconn.transaction_status != _IDLE
            or self._closed
            or self._waiting
            or self._returns >= FLUSH_EVERY
        ):
            await self.pool.putconn(conn)
            if self._returns >= FLUSH_EVERY:
                await self.flush()
            return
        self._kept.append(conn)

    async def flush(self) -> None:
        """Give every kept connection back to the pool."""
        self._returns = 0
        while self._kept:
            await self.pool.putconn(self._kept.pop())

    async def check(self) -> None:
        """After a lost connection: give back what is kept, and let the pool check its idle
        connections."""
        await self.flush()
        await self.pool.check()

    async def close(self) -> None:
        """Keep nothing from now on, then close the pool."""
        self._closed = True
        await self.flush()
        await self.pool.close()
