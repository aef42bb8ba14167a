"""The ``redis`` backend plugin: sessions in Redis (standalone, Sentinel or Cluster).

This module holds the plugin class: its connections (opened, checked and closed here, made by
:mod:`sessionkeeper_redis._clients`) and its hooks, each of which runs the steps of
:mod:`sessionkeeper_redis._operations` on the sync client or, for its ``sessionkeeper_async_*``
twin, on ``redis.asyncio``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any, ClassVar, NoReturn, TypeVar

from sessionkeeper import Session, StorageError
from sessionkeeper.backend import FORMAT_VERSION, BackendContext, Capabilities, hookimpl

from ._check import check_table
from ._clients import ASYNC, SYNC, Flavour, aclose, new_client
from ._deadline import Watchdog
from ._drivers import REDIS_ERRORS, Steps, arun, load_scripts, run
from ._operations import PAGE_SIZE, RedisOperations
from ._options import RedisOptions
from ._records import RECORD_FORMATS

__all__ = ["RedisBackend"]

T = TypeVar("T")


class RedisBackend(RedisOperations):
    """Sessions in Redis, shared by every process and host that names the same table.

    One string key per session holds the core codec's record, and Lua scripts make every write
    atomic: ``touch`` never recreates a deleted session and never moves ``last_accessed`` back,
    whatever other workers do at the same moment. Each key has a TTL derived from the session's
    timeout, so Redis drops sessions nobody cleans up; two sorted sets index the table by id and
    by deadline, so ``count`` and ``cleanup_expired`` cost what expired, not what is stored.
    See :mod:`sessionkeeper_redis._scripts` for the key layout.

    Nothing is read or connected in the constructor: the connection is made (and checked with
    a ``PING``) by :meth:`sessionkeeper_open`.
    """

    options_class: ClassVar[type[RedisOptions]] = RedisOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=True,
        shared=True,
        replicated=False,
        blocking=True,
        read_only_open=True,
        atomic=True,
    )

    def __init__(self, options: RedisOptions, context: BackendContext) -> None:
        super().__init__(options, context)
        self._client: Any = None
        self._sentinel: Any = None
        #: The redis.asyncio client of the async hooks, its Sentinel, and the loop it is bound to.
        self._aclient: Any = None
        self._asentinel: Any = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._watchdog: Watchdog | None = None

    def __repr__(self) -> str:
        state = "open" if self._client is not None else "closed"
        return f"<RedisBackend table={self.options.table_name!r} on {self.server} {state}>"

    def _refuse(self, operation: str) -> NoReturn:
        reason = "it was opened read-only" if self._client is not None else "it is not open"
        raise StorageError(
            self.context.name,
            f"cannot {operation} in table {self.options.table_name!r} on {self.server}: {reason}",
        )

    def _writer(self, operation: str) -> Any:
        client = self._client
        if client is None or self.context.read_only:
            self._refuse(operation)
        return client

    def _reader(self, operation: str) -> Any:
        client = self._client
        if client is None:
            self._refuse(operation)
        return client

    # -- lifecycle --------------------------------------------------------------------------------

    def _connect(self, flavour: Flavour = SYNC) -> Any:
        """A new client of the configured server (sync, or ``redis.asyncio`` for ``ASYNC``);
        ``StorageError`` naming the server when it cannot be made (nothing is left open then)."""
        try:
            keep = self._keep_sentinel if flavour is SYNC else self._keep_asentinel
            return new_client(self.options, flavour, keep)
        except REDIS_ERRORS as exc:
            if flavour is SYNC:
                self._close_sentinels()
            raise StorageError(
                self.context.name, f"cannot connect to {self.server}: {type(exc).__name__}: {exc}"
            ) from exc

    def _keep_sentinel(self, sentinel: Any) -> None:
        """Hold the Sentinel of a new sync client, to close its connections with the client."""
        self._sentinel = sentinel

    def _keep_asentinel(self, sentinel: Any) -> None:
        """Hold the Sentinel of a new ``redis.asyncio`` client (closed by the async close)."""
        self._asentinel = sentinel

    @hookimpl
    def sessionkeeper_open(self) -> None:
        """Connect, check the server answers (``PING``) and load the scripts."""
        if self._client is not None:
            return
        if RECORD_FORMATS[-1] != FORMAT_VERSION:
            raise StorageError(
                self.context.name,
                f"this sessionkeeper-redis reads and writes records of formats up to "
                f"{RECORD_FORMATS[-1]}, but the installed sessionkeeper writes format "
                f"{FORMAT_VERSION}: install the sessionkeeper-redis of that sessionkeeper",
            )
        client = self._connect()
        try:
            client.ping()
            if not self.context.read_only:
                load_scripts(client)
        except REDIS_ERRORS as exc:
            self._close_client(client)
            raise StorageError(
                self.context.name, f"cannot open {self.server}: {type(exc).__name__}: {exc}"
            ) from exc
        self._client = client

    @hookimpl
    def sessionkeeper_close(self) -> None:
        """Close every connection of the sync client. Idempotent. (The async client is closed
        by :meth:`sessionkeeper_async_close`, on its loop; one left open is dropped.)"""
        client, self._client = self._client, None
        self._aclient = self._asentinel = self._aloop = None
        self._stop_watchdog()
        if client is not None:
            self._close_client(client)

    def _close_client(self, client: Any) -> None:
        try:
            client.close()
            pool = getattr(client, "connection_pool", None)
            if pool is not None:
                pool.disconnect()
        finally:
            self._close_sentinels()

    def _close_sentinels(self) -> None:
        sentinel, self._sentinel = self._sentinel, None
        if sentinel is not None:
            for node in sentinel.sentinels:
                node.close()

    # -- driving the steps ------------------------------------------------------------------------

    async def _arun(self, operation: str, write: bool, steps: Steps[T]) -> T:
        """Run ``steps`` on this backend's ``redis.asyncio`` client (see :meth:`_async_client`)."""
        client = self._async_client(operation, write)
        watchdog = self._watchdog
        assert watchdog is not None
        return await arun(client, self._writes, steps, watchdog)

    def _async_client(self, operation: str, write: bool) -> Any:
        """The ``redis.asyncio`` client of the running event loop: made on the first async call
        (no connection until its first command), one per backend, so one per manager. A loop
        that replaced the one it was made on (the old loop closed) gets a new one. The open,
        read-only and closed states are the sync client's: the manager opened and closes both."""
        (self._writer if write else self._reader)(operation)
        loop = asyncio.get_running_loop()
        client = self._aclient
        if client is None or self._aloop is not loop:
            client = self._aclient = self._connect(ASYNC)
            self._aloop = loop
            self._stop_watchdog()
            self._watchdog = Watchdog(loop, self.options.socket_timeout_ms)
        return client

    def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.close()

    @hookimpl
    def sessionkeeper_async_close(self) -> Awaitable[None] | None:
        """Close the ``redis.asyncio`` client (and its Sentinel connections), on its loop."""
        client, self._aclient = self._aclient, None
        sentinel, self._asentinel = self._asentinel, None
        loop, self._aloop = self._aloop, None
        self._stop_watchdog()
        if client is None or loop is not asyncio.get_running_loop():
            return None  # never made, or made on a loop that is gone: nothing to await here
        return aclose(client, sentinel)

    # -- the hooks: each runs its steps on the sync client, its async twin on redis.asyncio -------

    @hookimpl
    def sessionkeeper_fetch(self, session_id: str) -> Session | None:
        """The stored session (expired or not), or ``None``: one ``GET``."""
        return run(self._reader("fetch"), self._writes, self._fetch(session_id))

    @hookimpl
    def sessionkeeper_async_fetch(self, session_id: str) -> Awaitable[Session | None]:
        """:meth:`sessionkeeper_fetch` on ``redis.asyncio``."""
        return self._arun("fetch", False, self._fetch(session_id))

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        """Insert or replace ``session`` (record, TTL and index entries in one script)."""
        run(self._writer("store"), self._writes, self._store(session))

    @hookimpl
    def sessionkeeper_async_store(self, session: Session) -> Awaitable[None]:
        """:meth:`sessionkeeper_store` on ``redis.asyncio``."""
        return self._arun("store", True, self._store(session))

    @hookimpl
    def sessionkeeper_store_many(self, sessions: Sequence[Session]) -> int:
        """Insert or replace each session with the store script, as :meth:`sessionkeeper_store`
        does, pipelined: one round trip (and one ``WAIT``) per ``STORE_CHUNK`` sessions."""
        return run(self._writer("store"), self._writes, self._store_many(sessions))

    @hookimpl
    def sessionkeeper_async_store_many(self, sessions: Sequence[Session]) -> Awaitable[int]:
        """:meth:`sessionkeeper_store_many` on ``redis.asyncio``."""
        return self._arun("store", True, self._store_many(sessions))

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        """Move ``last_accessed`` forward (never back) and refresh the TTL, atomically; ``None``
        when the session is gone (it is never recreated)."""
        client = self._writer("touch a session")
        return run(client, self._writes, self._touch(session_id, last_accessed))

    @hookimpl
    def sessionkeeper_async_touch(
        self, session_id: str, last_accessed: int
    ) -> Awaitable[Session | None]:
        """:meth:`sessionkeeper_touch` on ``redis.asyncio``."""
        return self._arun("touch a session", True, self._touch(session_id, last_accessed))

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        """Remove the session and its index entries; ``False`` when there was none."""
        return run(self._writer("delete a session"), self._writes, self._delete(session_id))

    @hookimpl
    def sessionkeeper_async_delete(self, session_id: str) -> Awaitable[bool]:
        """:meth:`sessionkeeper_delete` on ``redis.asyncio``."""
        return self._arun("delete a session", True, self._delete(session_id))

    # -- atomic operations and owners (issue 14) ------------------------------------------------

    @hookimpl
    def sessionkeeper_store_if(self, session: Session, if_version: int | None, now: int) -> Session:
        """Store ``session`` if the live stored version is ``if_version`` (``None``: whatever
        it is), with that version + 1; return it as stored. One script: the check and the write
        are one step on the server, so concurrent writers of one id are serialised there."""
        steps = self._store_if(session, if_version, now)
        return run(self._writer("store"), self._writes, steps)

    @hookimpl
    def sessionkeeper_async_store_if(
        self, session: Session, if_version: int | None, now: int
    ) -> Awaitable[Session]:
        """:meth:`sessionkeeper_store_if` on ``redis.asyncio``."""
        return self._arun("store", True, self._store_if(session, if_version, now))

    @hookimpl
    def sessionkeeper_take(self, session_id: str, now: int) -> Session | None:
        """Remove the session and return it if it was live at ``now``: one script, so of
        concurrent takes (and deletes, rotations) of one id at most one gets it."""
        return run(self._writer("take a session"), self._writes, self._take(session_id, now))

    @hookimpl
    def sessionkeeper_async_take(self, session_id: str, now: int) -> Awaitable[Session | None]:
        """:meth:`sessionkeeper_take` on ``redis.asyncio``."""
        return self._arun("take a session", True, self._take(session_id, now))

    @hookimpl
    def sessionkeeper_rotate(self, session_id: str, new_id: str, now: int) -> Session | None:
        """Move the live session to ``new_id`` (version + 1, ``last_accessed`` now) and remove
        the old id, in one script: no reader sees both ids, nor neither."""
        steps = self._rotate(session_id, new_id, now)
        return run(self._writer("rotate a session"), self._writes, steps)

    @hookimpl
    def sessionkeeper_async_rotate(
        self, session_id: str, new_id: str, now: int
    ) -> Awaitable[Session | None]:
        """:meth:`sessionkeeper_rotate` on ``redis.asyncio``."""
        return self._arun("rotate a session", True, self._rotate(session_id, new_id, now))

    @hookimpl
    def sessionkeeper_list_owner(self, owner: str, now: int) -> list[str]:
        """The ids of ``owner``'s sessions live at ``now``: the owner's set, each id judged by
        its deadline entry, in one script (cost: what the owner holds)."""
        return run(self._reader("list sessions"), self._writes, self._list_owner(owner, now))

    @hookimpl
    def sessionkeeper_async_list_owner(self, owner: str, now: int) -> Awaitable[list[str]]:
        """:meth:`sessionkeeper_list_owner` on ``redis.asyncio``."""
        return self._arun("list sessions", False, self._list_owner(owner, now))

    @hookimpl
    def sessionkeeper_count_owner(self, owner: str, now: int) -> int:
        """How many of ``owner``'s sessions are live at ``now`` (cost: what the owner holds)."""
        return run(self._reader("count sessions"), self._writes, self._count_owner(owner, now))

    @hookimpl
    def sessionkeeper_async_count_owner(self, owner: str, now: int) -> Awaitable[int]:
        """:meth:`sessionkeeper_count_owner` on ``redis.asyncio``."""
        return self._arun("count sessions", False, self._count_owner(owner, now))

    @hookimpl
    def sessionkeeper_delete_owner(self, owner: str) -> int:
        """Delete every session of ``owner``, expired ones included; return how many.

        A script takes up to ``OWNER_PAGE`` ids out of the owner's set and deletes their
        sessions, each whole; the calls repeat until one finds less than a page. A session of
        ``owner`` stored before this call began is in the set, so it is deleted; one stored
        after the last call is kept.
        """
        client = self._writer("delete an owner's sessions")
        return run(client, self._writes, self._delete_owner(owner))

    @hookimpl
    def sessionkeeper_async_delete_owner(self, owner: str) -> Awaitable[int]:
        """:meth:`sessionkeeper_delete_owner` on ``redis.asyncio``."""
        return self._arun("delete an owner's sessions", True, self._delete_owner(owner))

    @hookimpl
    def sessionkeeper_list(self, now: int) -> list[str]:
        """The ids live at ``now``, read from the id index a page per round trip."""
        return run(self._reader("list sessions"), self._writes, self._list(now))

    @hookimpl
    def sessionkeeper_async_list(self, now: int) -> Awaitable[list[str]]:
        """:meth:`sessionkeeper_list` on ``redis.asyncio``."""
        return self._arun("list sessions", False, self._list(now))

    @hookimpl
    def sessionkeeper_count(self, now: int) -> int:
        """Sessions stored less those past their deadline at ``now``: two index lookups."""
        return run(self._reader("count sessions"), self._writes, self._count(now))

    @hookimpl
    def sessionkeeper_async_count(self, now: int) -> Awaitable[int]:
        """:meth:`sessionkeeper_count` on ``redis.asyncio``."""
        return self._arun("count sessions", False, self._count(now))

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        """Remove the sessions whose deadline is before ``now``; return how many (see
        :meth:`_cleanup_expired`)."""
        client = self._writer("clean up expired sessions")
        return run(client, self._writes, self._cleanup_expired(now))

    @hookimpl
    def sessionkeeper_async_cleanup_expired(self, now: int) -> Awaitable[int]:
        """:meth:`sessionkeeper_cleanup_expired` on ``redis.asyncio``."""
        return self._arun("clean up expired sessions", True, self._cleanup_expired(now))

    @hookimpl
    def sessionkeeper_iter_sessions(self) -> Iterator[Session]:
        """Every stored session, expired ones included, in id order, a page per round trip."""
        client = self._reader("read sessions")

        def generate() -> Iterator[Session]:
            start: bytes | str = "-"
            while True:
                try:
                    page = client.execute_command(
                        "ZRANGEBYLEX", self._ids_key, start, "+", "LIMIT", 0, PAGE_SIZE
                    )
                    if not page:
                        return
                    ids = self._ids(self._ids_key, page)
                    keys = [self._prefix + session_id for session_id in ids]
                    records = client.execute_command("MGET", *keys)
                except REDIS_ERRORS as exc:
                    raise self._failed("iter_sessions", exc) from exc
                for key, record in zip(keys, records, strict=True):
                    if record is not None:  # deleted or dropped by Redis since it was listed
                        yield self._decode(key, record)
                if len(page) < PAGE_SIZE:
                    return
                start = b"(" + page[-1]

        return generate()

    @hookimpl
    def sessionkeeper_identity(self) -> str | None:
        """``redis:run_id=<run id>,db=<n>,table=<table_name>``, as the server names itself.

        The run id is the one of the server that holds the table's keys (``INFO server``): the
        server named by ``url``, the primary Sentinel found, or on a Cluster the primary serving
        the table's slot. So ``redis://127.0.0.1:6379/0``, ``redis://localhost:6379``, a
        Sentinel config and a Cluster config that reach one server and table say the same, and
        two servers never do. A run id lasts as long as the server process: the identity names
        the store while it runs (what ``migrate`` compares), not across a restart.
        """
        client = self._reader("tell which store it is")
        try:
            if self.options.cluster is not None:
                node = client.get_node_from_key(self._ids_key)
                info = client.info("server", target_nodes=node)
                db = 0
            else:
                info = client.info("server")
                db = int(client.connection_pool.connection_kwargs.get("db") or 0)
        except REDIS_ERRORS as exc:
            raise self._failed("identity", exc) from exc
        run_id = info.get("run_id") if isinstance(info, dict) else None
        if run_id is None or run_id == "":
            return None
        if isinstance(run_id, int):  # redis-py parsed a run id of 40 decimal digits as a number
            run_id = str(run_id).zfill(40)
        return f"redis:run_id={run_id},db={db},table={self.options.table_name}"

    @hookimpl
    def sessionkeeper_stats(self) -> dict[str, Any]:
        """``server``, ``mode``, ``table_name``, ``stored`` (expired included), ``expiring``
        (sessions with a timeout), ``wait_replicas``, and what cleanups removed:
        ``cleanup_removed`` (deleted by this backend) and ``cleanup_dropped_by_redis`` (already
        dropped by Redis's TTL; only their index entries were left)."""
        client = self._reader("read statistics")
        try:
            pipe = client.pipeline(transaction=False)
            pipe.execute_command("ZCARD", self._ids_key)
            pipe.execute_command("ZCARD", self._exp_key)
            stored, expiring = pipe.execute()
            pipe.reset()
        except REDIS_ERRORS as exc:
            raise self._failed("stats", exc) from exc
        return {
            "server": self.server,
            "mode": self.options.mode,
            "table_name": self.options.table_name,
            "stored": int(stored),
            "expiring": int(expiring),
            "wait_replicas": self.options.wait_replicas,
            "cleanup_removed": self._removed,
            "cleanup_dropped_by_redis": self._dropped_by_redis,
        }

    @hookimpl
    def sessionkeeper_check(self, repair: bool) -> dict[str, Any]:
        """``sessionkeeper check``: every record decodes under its own id and both indexes
        agree with the keys; with ``repair``, damaged records are renamed to
        ``{table_name}:quarantine:<id>`` and the indexes are fixed (see
        :mod:`sessionkeeper_redis._check`). Connects for the check alone."""
        client = self._connect()
        try:
            client.ping()
            scan_options: dict[str, Any] = {}
            if self.options.cluster is not None:
                scan_options["target_nodes"] = client.get_node_from_key(self._ids_key)
            report = check_table(
                client, self.options.table_name, repair=repair, scan_options=scan_options
            )
        except REDIS_ERRORS as exc:
            raise self._failed("check", exc) from exc
        finally:
            self._close_client(client)
        report["server"] = self.server
        report["table_name"] = self.options.table_name
        return report
