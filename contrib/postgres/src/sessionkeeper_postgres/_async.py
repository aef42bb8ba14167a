"""The backend's native async path: the ``sessionkeeper_async_*`` hooks, on psycopg's
:class:`~psycopg.AsyncConnection` pooled by an :class:`~psycopg_pool.AsyncConnectionPool`.

The :class:`~sessionkeeper.AsyncSessionManager` awaits these instead of sending the sync hooks
to a worker thread. They send the same statements (:mod:`._schema`) with the same parameters
and read the rows with the same code (:mod:`._plans`, the backend's ``_decode``); only the
driver differs, and it follows the sync one rule for rule:

- the async pool is opened on the event loop at the first async call (the sync open, which
  runs off the loop, checked the server and made the table), and closed by
  ``sessionkeeper_async_close`` on the same loop; connections given back are kept and lent
  again by an :class:`~._lender.AsyncLender`;
- psycopg errors become :class:`~sessionkeeper.StorageError` naming the server and the
  table; a connection lost under a read or an idempotent write (``store``, ``store_many``,
  ``touch``, a counting ``store``, ``cleanup``) is retried once on a connection checked to be
  sound; the writes whose first attempt may have done their work (``delete``, ``take``,
  conditional stores, ``rotate``, ``delete_owner``) are never sent twice, and start on a
  connection checked for the server's goodbye, so that a restart between calls stays
  invisible to them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from sessionkeeper import Session, StorageError
from sessionkeeper.backend import hookimpl

from ._base import BackendBase, lost_under, watch
from ._lender import AsyncLender
from ._plans import (
    ALL,
    NOTHING,
    ONE,
    ROWCOUNT,
    Steps,
    StoreIf,
    chunks,
    counted_result,
    counted_write,
    quarantine_steps,
    rotate_steps,
    storable_id,
    write_params,
)
from ._schema import CLEANUP_BATCH

__all__ = ["AsyncConnection", "AsyncHooks", "adrive"]

Row = tuple[Any, ...]


class AsyncConnection(psycopg.AsyncConnection[Row]):
    """A pooled async connection with one binary cursor kept for its life and a poll of its
    socket, as the sync path's connections."""

    sk_cursor: psycopg.AsyncCursor[Row]
    sk_poll: select.poll


async def adrive(cursor: psycopg.AsyncCursor[Any], steps: Steps) -> Any:
    """Run ``steps`` (see :mod:`._plans`) on an async ``cursor``; return what it returns."""
    try:
        query, params, want = next(steps)
        while True:
            await cursor.execute(query, params)
            if want == ROWCOUNT:
                answer: Any = cursor.rowcount
            elif want == ONE:
                answer = await cursor.fetchone()
            elif want == ALL:
                answer = await cursor.fetchall()
            else:
                answer = None
            query, params, want = steps.send(answer)
    except StopIteration as done:
        return done.value


class AsyncHooks(BackendBase):
    """The async hooks of :class:`~sessionkeeper_postgres.PostgresBackend` (one of its bases)."""

    _alender: AsyncLender[AsyncConnection] | None = None
    _aopening: asyncio.Lock | None = None

    # -- connections ------------------------------------------------------------------------------

    async def _aconfigure(self, conn: AsyncConnection) -> None:
        await conn.execute(*self._settings())
        conn.sk_cursor = conn.cursor(binary=True)
        conn.sk_poll = watch(conn)

    async def _aprobe(self, operation: str) -> None:
        """Connect directly: fail now, with libpq's reason, when the server is unreachable."""
        options = self.options
        try:
            conn = await psycopg.AsyncConnection.connect(
                options.conninfo(), autocommit=True, **options.connect_kwargs()
            )
        except psycopg.Error as exc:
            raise self._unreachable(operation, exc) from exc
        await conn.close()
        self._suspect = False

    async def _alend(self, operation: str, write: bool) -> AsyncLender[AsyncConnection]:
        """The async lender, its pool opened on this loop at the first call."""
        if self._pool is None or (write and self.context.read_only):
            self._refuse(operation)
        lender = self._alender
        if lender is not None:
            return lender
        if self._aopening is None:
            self._aopening = asyncio.Lock()
        async with self._aopening:
            if self._alender is None:
                pool: AsyncConnectionPool[AsyncConnection] = AsyncConnectionPool(
                    connection_class=AsyncConnection,
                    configure=self._aconfigure,
                    **self._pool_args(),
                )
                try:
                    await pool.open(wait=True, timeout=self._timeout_s)
                except PoolTimeout as exc:
                    await pool.close()
                    await self._aprobe(operation)  # unreachable: libpq's reason
                    raise self._failed(operation, exc) from exc
                self._alender = AsyncLender(pool)
            return self._alender

    async def _aget(self, lender: AsyncLender[AsyncConnection], operation: str) -> AsyncConnection:
        if self._suspect:
            await self._aprobe(operation)
        try:
            return await lender.get()
        except PoolTimeout:
            pass
        except PoolClosed:
            self._refuse(operation)
        await self._aprobe(operation)
        raise self._all_busy(operation)

    async def _asound(
        self, lender: AsyncLender[AsyncConnection], operation: str
    ) -> AsyncConnection:
        """A connection the server has not hung up on (the sync ``_sound_conn``)."""
        for _ in range(self.options.pool_max_size + 1):
            conn = await self._aget(lender, operation)
            try:
                sound = not conn.sk_poll.poll(0)
            except (OSError, ValueError):
                sound = False
            if sound:
                return conn
            await conn.close()
            await lender.put(conn)
            await self._aforget(lender)
        return await self._aget(lender, operation)

    async def _aforget(self, lender: AsyncLender[AsyncConnection]) -> None:
        """After a lost connection (the sync ``_forget``)."""
        self._suspect = True
        with contextlib.suppress(psycopg.Error):
            await lender.check()

    async def _aexec(
        self,
        operation: str,
        query: bytes,
        params: Any,
        want: int,
        *,
        write: bool = False,
        retry: bool = True,
    ) -> Any:
        """One statement; its answer as ``want`` says (:mod:`._plans`). With ``retry``, sent
        once more (without ``retry``) when the connection was lost under it; without, started
        on a sound connection and never sent twice."""
        lender = await self._alend(operation, write)
        conn = await (self._aget(lender, operation) if retry else self._asound(lender, operation))
        try:
            cursor = await conn.sk_cursor.execute(query, params)
            if want == ONE:
                return await cursor.fetchone()
            if want == ROWCOUNT:
                return cursor.rowcount
            return await cursor.fetchall() if want == ALL else None
        except psycopg.Error as exc:
            error = exc
            lost = lost_under(conn, exc)
        finally:
            await lender.put(conn)
        if lost:
            await self._aforget(lender)
        if not (lost and retry):
            raise self._failed(operation, error) from error
        return await self._aexec(operation, query, params, want, write=write, retry=False)

    async def _adrive(
        self, operation: str, make_steps: Callable[[], Steps], *, transaction: bool
    ) -> Any:
        """Several statements (:mod:`._plans` steps) on one sound connection, in one
        transaction with ``transaction``; never sent twice."""
        lender = await self._alend(operation, True)
        conn = await self._asound(lender, operation)
        try:
            if not transaction:
                return await adrive(conn.sk_cursor, make_steps())
            async with conn.transaction():
                return await adrive(conn.sk_cursor, make_steps())
        except psycopg.Error as exc:
            error = exc
            lost = lost_under(conn, exc)
        finally:
            await lender.put(conn)
        if lost:
            await self._aforget(lender)
        raise self._failed(operation, error) from error

    async def _akeep_damaged(self, session_id: str, row: Any, error: StorageError) -> StorageError:
        """The sync ``_keep_damaged`` on the async pool: the bytes of a removed row that does
        not decode are moved to ``<table>_quarantine`` before the error is reported."""
        statements, problem = self.statements, self._problem(error)

        def steps() -> Steps:
            return quarantine_steps(statements, session_id, row[0], row[1], problem)

        try:
            await self._adrive("take", steps, transaction=True)
        except StorageError as exc:
            return self._take_damaged(problem, exc)
        return self._take_damaged(problem, None)

    # -- the hooks --------------------------------------------------------------------------------

    @hookimpl
    async def sessionkeeper_async_fetch(self, session_id: str) -> Session | None:
        """``sessionkeeper_fetch`` on the async pool."""
        if not storable_id(session_id):
            return None
        row = await self._aexec("fetch", self.statements.fetch, (session_id,), ONE)
        return None if row is None else self._decode(session_id, row[0], row[1], row[2])

    @hookimpl
    async def sessionkeeper_async_store(self, session: Session) -> None:
        """``sessionkeeper_store`` on the async pool."""
        await self._aexec(
            "store", self.statements.store, write_params(session), NOTHING, write=True
        )

    @hookimpl
    async def sessionkeeper_async_store_many(self, sessions: Sequence[Session]) -> int:
        """``sessionkeeper_store_many`` on the async pool (one statement a chunk)."""
        query = self.statements.store_many
        for columns in chunks(sessions):
            await self._aexec("store_many", query, columns, NOTHING, write=True)
        return len(sessions)

    @hookimpl
    async def sessionkeeper_async_store_if(
        self, session: Session, if_version: int | None, now: int
    ) -> Session | None:
        """``sessionkeeper_store_if`` on the async pool."""
        if if_version is None:
            stored, params = counted_write(session, now)
            query = self.statements.store_counted
            row = await self._aexec("store", query, params, ONE, write=True)
            return counted_result(stored, row)
        plan = StoreIf(self.statements, session, if_version, now)
        return plan.outcome(await self._adrive("store", plan.steps, transaction=False))

    @hookimpl
    async def sessionkeeper_async_touch(
        self, session_id: str, last_accessed: int
    ) -> Session | None:
        """``sessionkeeper_touch`` on the async pool."""
        if not storable_id(session_id):
            return None
        params = {"at": last_accessed, "id": session_id}
        row = await self._aexec("touch", self.statements.touch, params, ONE, write=True)
        return None if row is None else self._decode(session_id, row[0], row[1], row[2])

    @hookimpl
    async def sessionkeeper_async_delete(self, session_id: str) -> bool:
        """``sessionkeeper_delete`` on the async pool (never sent twice)."""
        if not storable_id(session_id):
            return False
        query = self.statements.delete
        count = await self._aexec("delete", query, (session_id,), ROWCOUNT, write=True, retry=False)
        return bool(count > 0)

    @hookimpl
    async def sessionkeeper_async_take(self, session_id: str, now: int) -> Session | None:
        """``sessionkeeper_take`` on the async pool (never sent twice); a removed row that
        does not decode is kept in the quarantine table."""
        if not storable_id(session_id):
            return None
        query = self.statements.take
        row = await self._aexec("take", query, (session_id,), ONE, write=True, retry=False)
        if row is None:
            return None
        try:
            return self._taken(session_id, row, now)
        except StorageError as exc:
            raise await self._akeep_damaged(session_id, row, exc) from None

    @hookimpl
    async def sessionkeeper_async_rotate(
        self, session_id: str, new_id: str, now: int
    ) -> Session | None:
        """``sessionkeeper_rotate`` on the async pool: one transaction, never sent twice."""
        if not storable_id(session_id):
            return None
        statements = self.statements

        def steps() -> Steps:
            return rotate_steps(statements, session_id, new_id, now, self._decode)

        rotated: Session | None = await self._adrive("rotate", steps, transaction=True)
        return rotated

    @hookimpl
    async def sessionkeeper_async_list(self, now: int) -> list[str]:
        """``sessionkeeper_list`` on the async pool."""
        rows = await self._aexec("list", self.statements.list_live, (now,), ALL)
        return [row[0] for row in rows]

    @hookimpl
    async def sessionkeeper_async_count(self, now: int) -> int:
        """``sessionkeeper_count`` on the async pool."""
        row = await self._aexec("count", self.statements.count_live, (now,), ONE)
        return int(row[0]) if row else 0

    @hookimpl
    async def sessionkeeper_async_list_owner(self, owner: str, now: int) -> list[str]:
        """``sessionkeeper_list_owner`` on the async pool (the owner index)."""
        params = {"owner": owner, "now": now}
        rows = await self._aexec("list", self.statements.list_owner, params, ALL)
        return [row[0] for row in rows]

    @hookimpl
    async def sessionkeeper_async_count_owner(self, owner: str, now: int) -> int:
        """``sessionkeeper_count_owner`` on the async pool (the owner index)."""
        params = {"owner": owner, "now": now}
        row = await self._aexec("count", self.statements.count_owner, params, ONE)
        return int(row[0]) if row else 0

    @hookimpl
    async def sessionkeeper_async_delete_owner(self, owner: str) -> int:
        """``sessionkeeper_delete_owner`` on the async pool (never sent twice)."""
        query = self.statements.delete_owner
        count = await self._aexec(
            "delete_owner", query, (owner,), ROWCOUNT, write=True, retry=False
        )
        return int(count)

    @hookimpl
    async def sessionkeeper_async_cleanup_expired(self, now: int) -> int:
        """``sessionkeeper_cleanup_expired`` on the async pool: the same batches."""
        query, params = self.statements.cleanup, (now, CLEANUP_BATCH)
        removed = 0
        while True:
            done = int(await self._aexec("cleanup_expired", query, params, ROWCOUNT, write=True))
            removed += done
            if not self._swept(done):
                return removed

    @hookimpl
    async def sessionkeeper_async_close(self) -> None:
        """Close the async pool on its loop. Idempotent."""
        lender, self._alender = self._alender, None
        self._aopening = None
        if lender is not None:
            await lender.close()
