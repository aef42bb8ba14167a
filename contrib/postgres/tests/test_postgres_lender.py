"""The lender that keeps pooled connections between operations (``_lender.py``), on a real
psycopg pool and server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from sessionkeeper_postgres._lender import FLUSH_EVERY, Lender

#: How long a condition may take to come true (a deadline, not a timing assertion).
DEADLINE_S = 30.0


@pytest.fixture
def pool(pg_cluster: Any) -> Iterator[ConnectionPool[psycopg.Connection[Any]]]:
    """A pool of at most two autocommit connections to the shared server."""
    with ConnectionPool(
        pg_cluster.dsn(), kwargs={"autocommit": True}, min_size=1, max_size=2, timeout=DEADLINE_S
    ) as opened:
        yield opened


def _requests(pool: ConnectionPool[Any]) -> int:
    return int(pool.get_stats().get("requests_num", 0))


class TestLender:
    def test_a_connection_given_back_is_lent_again_without_the_pool(
        self, pool: ConnectionPool[Any]
    ) -> None:
        """An idle connection given back is kept and lent again (the same one) without a
        request to the pool; the lender counts it as kept meanwhile."""
        lender = Lender(pool)
        first = lender.get()
        first.execute("SELECT 1")
        lender.put(first)
        assert lender.kept == 1
        asked = _requests(pool)
        for _ in range(10):
            again = lender.get()
            assert again is first
            lender.put(again)
        assert _requests(pool) == asked

    def test_a_connection_that_is_not_idle_goes_back_to_the_pool(
        self, pool: ConnectionPool[Any]
    ) -> None:
        """A connection given back closed, or inside a transaction, is not kept: the pool
        gets it (and replaces or resets it)."""
        lender = Lender(pool)
        closed = lender.get()
        closed.close()
        lender.put(closed)
        in_transaction = lender.get()
        in_transaction.autocommit = False
        in_transaction.execute("SELECT 1")
        lender.put(in_transaction)
        assert lender.kept == 0

    def test_a_connection_given_back_while_another_operation_waits_reaches_it(
        self, pool: ConnectionPool[Any]
    ) -> None:
        """With every connection lent, an operation waits on the pool; a connection given
        back meanwhile goes to the pool, so the waiter gets it instead of timing out."""
        lender = Lender(pool)
        held = [lender.get(), lender.get()]  # the pool's two connections
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(lender.get()))
        waiter.start()
        end = time.monotonic() + DEADLINE_S
        while pool.get_stats().get("requests_waiting", 0) == 0 and time.monotonic() < end:
            time.sleep(0.001)
        lender.put(held[0])
        waiter.join(DEADLINE_S)
        assert got == [held[0]]
        assert lender.kept == 0
        lender.put(held[1])
        lender.put(got[0])
        assert lender.kept == 2

    def test_every_kept_connection_returns_to_the_pool_now_and_then_and_on_close(
        self, pool: ConnectionPool[Any]
    ) -> None:
        """Every :data:`FLUSH_EVERY` hand-backs the kept connections return to the pool (its
        lifetime and idle limits then apply); after ``close`` nothing is kept."""
        lender = Lender(pool)
        for count in range(1, FLUSH_EVERY + 1):
            lender.put(lender.get())
            assert lender.kept == (0 if count == FLUSH_EVERY else 1)
        lender.put(lender.get())
        assert lender.kept == 1
        lender.close()
        assert lender.kept == 0
        lender.put(lender.get())
        assert lender.kept == 0

    def test_threads_lending_giving_back_and_flushing_never_share_a_connection(
        self, pool: ConnectionPool[Any]
    ) -> None:
        """Lent without a lock on the common path: four threads each lending and giving back
        a connection 500 times, while another flushes the kept ones to the pool, never hold one
        connection at the same time, and none waits on the pool past its timeout (every
        connection given back while another thread waits reaches it)."""
        lender = Lender(pool)
        holders: dict[int, int] = {}
        shared: list[str] = []
        errors: list[BaseException] = []
        guard = threading.Lock()
        done = threading.Event()

        def borrow(number: int) -> None:
            try:
                for _ in range(500):
                    conn = lender.get()
                    with guard:
                        if id(conn) in holders:
                            shared.append(f"thread {number} got thread {holders[id(conn)]}'s")
                        holders[id(conn)] = number
                    with guard:
                        del holders[id(conn)]
                    lender.put(conn)
            except BaseException as exc:  # a PoolTimeout would mean a lost hand-over
                errors.append(exc)

        def flusher() -> None:
            while not done.is_set():
                lender.flush()
                time.sleep(0)

        threads = [threading.Thread(target=borrow, args=(n,)) for n in range(4)]
        sweeper = threading.Thread(target=flusher)
        sweeper.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE_S * 2)
        done.set()
        sweeper.join(DEADLINE_S)
        assert errors == []
        assert shared == []
        lender.close()
        assert lender.kept == 0
