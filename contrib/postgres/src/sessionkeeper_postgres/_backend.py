"""The ``postgres`` backend plugin: sessions in a PostgreSQL table, over a psycopg 3 pool.

:class:`PostgresBackend` is its operations, the sync hooks; the rest is in its bases: the
shared state, errors and row decoding (:mod:`._base`), the sync driver (:mod:`._sync`), the
lifecycle, open, close, schema migration and check (:mod:`._lifecycle`), and the async hooks
(:mod:`._async`). What each operation sends is in :mod:`._schema` and :mod:`._plans`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from sessionkeeper import Session, StorageError
from sessionkeeper.backend import Capabilities, hookimpl

from ._async import AsyncHooks
from ._lifecycle import Lifecycle
from ._options import PostgresOptions
from ._plans import (
    ALL,
    NOTHING,
    ONE,
    ROWCOUNT,
    STORE_CHUNK,
    Steps,
    StoreIf,
    chunks,
    counted_result,
    counted_write,
    rotate_steps,
    storable_id,
    write_params,
)
from ._schema import CLEANUP_BATCH, LATEST_VERSION, PAGE_SIZE

__all__ = ["STORE_CHUNK", "PostgresBackend"]


class PostgresBackend(Lifecycle, AsyncHooks):
    """Sessions in one PostgreSQL table, shared by every process and host that names it.

    Every operation is one statement in its own transaction (autocommit), so one round trip:
    ``fetch`` a primary-key lookup, ``store`` an upsert, ``touch`` an ``UPDATE … RETURNING``
    that moves ``last_accessed`` and the deadline forward only (a deleted row is never
    recreated), ``cleanup_expired`` batches of ``DELETE`` claimed through the deadline index
    with ``FOR UPDATE SKIP LOCKED``. See :mod:`sessionkeeper_postgres._schema` for the table.

    Nothing connects in the constructor: :meth:`sessionkeeper_open` checks the server with a
    connection of its own, creates or migrates the table, then opens the pool.

    A connection lost under an operation fails it with :class:`~sessionkeeper.StorageError`
    naming the server. Reads and idempotent writes are first retried once on a sound
    connection, which is what makes a server restart invisible to callers whose connections
    sat idle in the pool; the writes whose first attempt may have done their work (``delete``,
    ``take``, a conditional store, ``rotate``, ``delete_owner``: their answer would be
    ambiguous) are never sent twice, and start on a connection checked for the server's
    goodbye (:mod:`._sync`).
    """

    options_class: ClassVar[type[PostgresOptions]] = PostgresOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=True,
        shared=True,
        replicated=False,
        blocking=True,
        read_only_open=True,
        atomic=True,
    )

    # -- the hooks --------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_fetch(self, session_id: str) -> Session | None:
        """The stored session (expired or not), or ``None``: one primary-key lookup."""
        if not storable_id(session_id):
            return None  # no such session (the manager says why the id is bad)
        row = self._exec("fetch", self.statements.fetch, (session_id,), ONE)
        if row is None:
            return None
        return self._decode(session_id, row[0], row[1], row[2])

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        """Insert or replace ``session`` exactly as given (its version included: what
        ``create``, import and migrate write): one upsert, retried after a lost connection."""
        self._exec("store", self.statements.store, write_params(session), NOTHING, write=True)

    @hookimpl
    def sessionkeeper_store_many(self, sessions: Sequence[Session]) -> int:
        """Insert or replace each session as given: one ``INSERT … SELECT FROM unnest(…)``
        (one round trip, one transaction) per :data:`STORE_CHUNK` sessions."""
        query = self.statements.store_many
        for columns in chunks(sessions):
            self._exec("store_many", query, columns, NOTHING, write=True)
        return len(sessions)

    @hookimpl
    def sessionkeeper_store_if(
        self, session: Session, if_version: int | None, now: int
    ) -> Session | None:
        """Store ``session`` with the live stored version + 1 if that version is
        ``if_version`` (``None``: whatever it is); one statement that checks and writes.

        ``if_version`` N >= 1 is an ``UPDATE … WHERE version = N AND <live>`` (a row that is
        gone or expired is never written), 0 an ``INSERT … ON CONFLICT DO UPDATE … WHERE
        <expired>``, ``None`` an upsert counting the version in SQL. A refused write reads the
        live version to name it in :class:`~sessionkeeper.VersionConflict`. An unconditional
        write is retried after a lost connection (it may count one version more); a
        conditional one is not: its first attempt may have succeeded.
        """
        if if_version is None:
            stored, params = counted_write(session, now)
            row = self._exec("store", self.statements.store_counted, params, ONE, write=True)
            return counted_result(stored, row)
        plan = StoreIf(self.statements, session, if_version, now)
        return plan.outcome(self._drive("store", plan.steps, transaction=False))

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        """Move ``last_accessed`` and the deadline forward (never back, never past the absolute
        deadline) in one ``UPDATE … RETURNING``; ``None`` when the row is gone (it is never
        recreated)."""
        if not storable_id(session_id):
            return None
        params = {"at": last_accessed, "id": session_id}
        row = self._exec("touch", self.statements.touch, params, ONE, write=True)
        if row is None:
            return None
        return self._decode(session_id, row[0], row[1], row[2])

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        """Remove the row; ``False`` when there was none. Not retried after a lost connection
        (the first attempt may have deleted it), so that the answer is never wrong."""
        if not storable_id(session_id):
            return False
        query = self.statements.delete
        count = self._exec("delete", query, (session_id,), ROWCOUNT, write=True, retry=False)
        return bool(count > 0)

    @hookimpl
    def sessionkeeper_take(self, session_id: str, now: int) -> Session | None:
        """Remove the row and return its session if it was live at ``now``: one ``DELETE …
        RETURNING`` (of concurrent takes, the one whose delete found the row gets it). An
        expired row is removed too. Not retried after a lost connection. A removed row that
        does not decode is kept in ``<table>_quarantine`` and reported."""
        if not storable_id(session_id):
            return None
        query = self.statements.take
        row = self._exec("take", query, (session_id,), ONE, write=True, retry=False)
        if row is None:
            return None
        try:
            return self._taken(session_id, row, now)
        except StorageError as exc:
            raise self._keep_damaged(session_id, row, exc) from None

    @hookimpl
    def sessionkeeper_rotate(self, session_id: str, new_id: str, now: int) -> Session | None:
        """Move the live session to ``new_id`` in one transaction: ``DELETE … RETURNING`` the
        live row (locking it), then ``INSERT`` it under the new id with version + 1 and
        ``last_accessed`` now; both ids change at the commit, so no reader sees both or
        neither. ``None`` (nothing changed) when no live session has the id."""
        if not storable_id(session_id):
            return None
        statements = self.statements

        def steps() -> Steps:
            return rotate_steps(statements, session_id, new_id, now, self._decode)

        rotated: Session | None = self._drive("rotate", steps, transaction=True)
        return rotated

    @hookimpl
    def sessionkeeper_list(self, now: int) -> list[str]:
        """The ids live at ``now`` (no deadline, or a deadline not before ``now``)."""
        rows = self._exec("list", self.statements.list_live, (now,), ALL)
        return [row[0] for row in rows]

    @hookimpl
    def sessionkeeper_count(self, now: int) -> int:
        """How many sessions are live at ``now``."""
        row = self._exec("count", self.statements.count_live, (now,), ONE)
        return int(row[0]) if row else 0

    @hookimpl
    def sessionkeeper_list_owner(self, owner: str, now: int) -> list[str]:
        """The ids of ``owner``'s sessions live at ``now``, through the owner index: the cost
        is what the owner holds."""
        params = {"owner": owner, "now": now}
        rows = self._exec("list", self.statements.list_owner, params, ALL)
        return [row[0] for row in rows]

    @hookimpl
    def sessionkeeper_count_owner(self, owner: str, now: int) -> int:
        """How many of ``owner``'s sessions are live at ``now`` (the owner index)."""
        params = {"owner": owner, "now": now}
        row = self._exec("count", self.statements.count_owner, params, ONE)
        return int(row[0]) if row else 0

    @hookimpl
    def sessionkeeper_delete_owner(self, owner: str) -> int:
        """Delete every row of ``owner``, expired ones included, in one ``DELETE`` through the
        owner index; return how many. Every row committed before the statement began is
        deleted (a row being rewritten meanwhile is re-checked once its writer commits). Not
        retried after a lost connection."""
        query = self.statements.delete_owner
        count = self._exec("delete_owner", query, (owner,), ROWCOUNT, write=True, retry=False)
        return int(count)

    @hookimpl
    def sessionkeeper_iter_sessions(self) -> Iterator[Session]:
        """Every stored session, expired ones included, in id order, :data:`PAGE_SIZE` rows per
        round trip (keyset paging on the primary key: bounded memory, no long transaction)."""
        query = self.statements.page
        if self._pool is None:
            self._refuse("read sessions")

        def generate() -> Iterator[Session]:
            after = ""
            while True:
                rows = self._exec("iter_sessions", query, (after, PAGE_SIZE), ALL)
                for session_id, record, last_accessed, _deadline, version, *_ in rows:
                    yield self._decode(session_id, record, last_accessed, version)
                if len(rows) < PAGE_SIZE:
                    return
                after = rows[-1][0]

        return generate()

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        """Remove the sessions whose deadline is before ``now``; return how many.

        Batches of :data:`CLEANUP_BATCH` rows, each its own transaction, claimed through the
        deadline index with ``FOR UPDATE SKIP LOCKED``: the cost is what expired, and sweepers
        in other processes or hosts take other rows instead of waiting or counting twice.
        """
        query, params = self.statements.cleanup, (now, CLEANUP_BATCH)
        removed = 0
        while True:
            done = int(self._exec("cleanup_expired", query, params, ROWCOUNT, write=True))
            removed += done
            if not self._swept(done):
                return removed

    @hookimpl
    def sessionkeeper_stats(self) -> dict[str, Any]:
        """``server``, ``table``, ``schema_version``, ``stored`` (expired included),
        ``expiring`` (sessions with a timeout), ``synchronous_commit``, the pool's figures
        (``pool_size``, ``pool_available``, ``connections_lost``) and ``cleanup_removed`` (by
        this backend). Never a password or the DSN."""
        stored, expiring = self._exec("stats", self.statements.stats, None, ONE)
        lender = self._pool
        pool_stats = lender.pool.get_stats() if lender is not None else {}
        kept = lender.kept if lender is not None else 0
        return {
            "server": self.server,
            "table": self.table,
            "schema_version": LATEST_VERSION,
            "stored": int(stored),
            "expiring": int(expiring),
            "synchronous_commit": self.options.synchronous_commit,
            "pool_size": int(pool_stats.get("pool_size", 0)),
            "pool_available": int(pool_stats.get("pool_available", 0)) + kept,
            "connections_lost": int(pool_stats.get("connections_lost", 0)),
            "cleanup_removed": self._removed,
        }
