"""The ``mystore`` backend plugin.

This skeleton keeps sessions in a ``dict`` of encoded records and passes sessionkeeper's
conformance kit as it is. To put them somewhere else, replace the reads and writes of
``self.records`` with your storage's, keep every write that touches a session and its expiry
index atomic (here: under ``self._lock``), and run the tests again.

The expiry index makes ``cleanup_expired`` cost the number of expired sessions, not the number
stored: a heap of ``(deadline, id)`` entries, one current entry per session that can expire,
filed at or before its real deadline (``Session.expires_at``). A touch moves a deadline later and
needs no index work; a cleanup that reaches an entry whose session was touched since re-files it
at its real deadline. ``self._filed[id]`` is the deadline of the session's current entry; heap
entries that do not match it are stale and skipped.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
from sessionkeeper import Session, StorageError
from sessionkeeper.backend import (
    BackendContext,
    Capabilities,
    CodecError,
    FieldError,
    decode_session,
    encode_session,
    hookimpl,
)

__all__ = ["MystoreBackend", "MystoreOptions"]


def _positive(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    # FieldError names the option: the user sees "sessionkeeper.backend_opts.max_sessions: ...".
    if value <= 0:
        raise FieldError(attribute.name, f"must be > 0, got {value}")


@attrs.frozen(kw_only=True)
class MystoreOptions:
    """The ``[sessionkeeper.backend_opts]`` of the ``mystore`` backend.

    Unknown keys and wrong types are rejected before this class is built.

    :param max_sessions: refuse to store more sessions than this.
    """

    max_sessions: int = attrs.field(
        default=1_000_000, validator=[attrs.validators.instance_of(int), _positive]
    )


class MystoreBackend:
    """Sessions in a ``dict`` of encoded records, with an expiry index (see the module docstring).

    :param options: the validated ``backend_opts``.
    :param context: the entry-point name, the directory relative paths are resolved against
        (``context.resolve(path)``) and whether the store is opened read-only.
    """

    options_class: ClassVar[type[MystoreOptions]] = MystoreOptions
    # A dict lives and dies with the process. Declare what your storage really does: the kit
    # runs the restart tests only for a persistent backend.
    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=False, shared=False, replicated=False, blocking=False, read_only_open=False
    )

    def __init__(self, options: MystoreOptions, context: BackendContext) -> None:
        self.options = options
        self.context = context
        #: The storage: session id -> record of :func:`sessionkeeper.backend.encode_session`.
        self.records: dict[str, bytes] = {}
        self._heap: list[tuple[int, str]] = []
        self._filed: dict[str, int] = {}
        self._lock = threading.Lock()

    def _decode(self, session_id: str, record: bytes) -> Session:
        # A record that does not decode is damage, reported as such: never as "not found".
        try:
            return decode_session(record)
        except CodecError as exc:
            raise StorageError(
                self.context.name, f"damaged record for session {session_id!r}: {exc}"
            ) from exc

    def _refuse_writes(self) -> None:
        if self.context.read_only:
            raise StorageError(self.context.name, "the store was opened read-only")

    def _file(self, session_id: str, deadline: int) -> None:
        self._filed[session_id] = deadline
        heapq.heappush(self._heap, (deadline, session_id))

    # -- lifecycle ------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_open(self) -> None:
        """Open the storage: a connection, a file, a lock. A failure is a ``StorageError``."""

    @hookimpl
    def sessionkeeper_close(self) -> None:
        """Release what ``sessionkeeper_open`` acquired, flushing pending writes. Idempotent."""
        with self._lock:
            self.records.clear()
            self._heap.clear()
            self._filed.clear()

    # -- operations -----------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        """Insert or replace ``session``."""
        self._refuse_writes()
        record = encode_session(session)
        deadline = session.expires_at
        with self._lock:
            if session.id not in self.records and len(self.records) >= self.options.max_sessions:
                raise StorageError(
                    self.context.name, f"full: max_sessions is {self.options.max_sessions}"
                )
            self.records[session.id] = record
            filed = self._filed.get(session.id)
            if deadline is not None and (filed is None or deadline < filed):
                self._file(session.id, deadline)

    @hookimpl
    def sessionkeeper_fetch(self, session_id: str) -> Session | None:
        """The stored session, expired or not (the manager applies expiry), or ``None``."""
        record = self.records.get(session_id)
        return None if record is None else self._decode(session_id, record)

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        """Move ``last_accessed`` forward, never back, atomically with store and delete."""
        self._refuse_writes()
        with self._lock:
            record = self.records.get(session_id)
            if record is None:
                return None  # deleted meanwhile: a touch never resurrects
            session = self._decode(session_id, record)
            touched = session.touched(last_accessed)  # the same session if not later
            if touched is not session:
                self.records[session_id] = encode_session(touched)
            return touched

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        """Remove the session; ``False`` when there was none."""
        self._refuse_writes()
        with self._lock:
            self._filed.pop(session_id, None)  # its heap entry is stale now
            return self.records.pop(session_id, None) is not None

    @hookimpl
    def sessionkeeper_list(self, now: int) -> list[str]:
        """The ids of the sessions live at ``now``."""
        return [session.id for session in self._sessions() if not session.is_expired(now)]

    @hookimpl
    def sessionkeeper_count(self, now: int) -> int:
        """How many sessions are live at ``now``."""
        return sum(1 for session in self._sessions() if not session.is_expired(now))

    @hookimpl
    def sessionkeeper_iter_sessions(self) -> Iterator[Session]:
        """Every stored session, expired ones included, decoded one at a time."""
        return self._sessions()

    def _sessions(self) -> Iterator[Session]:
        # A copy of the ids, then one record at a time: a store on disk or over the network
        # reads in batches instead, so that memory stays bounded for any size.
        for session_id in list(self.records):
            record = self.records.get(session_id)
            if record is not None:  # not deleted since the copy
                yield self._decode(session_id, record)

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        """Remove the sessions expired at ``now``; cost: the number expired."""
        self._refuse_writes()
        removed = 0
        with self._lock:
            heap, filed = self._heap, self._filed
            # Expired means now - last_accessed > timeout_ms, that is expires_at < now.
            while heap and heap[0][0] < now:
                deadline, session_id = heapq.heappop(heap)
                if filed.get(session_id) != deadline:
                    continue  # a stale entry: deleted, or filed again since
                record = self.records.get(session_id)
                try:
                    expires_at = None if record is None else decode_session(record).expires_at
                except CodecError:
                    expires_at = None  # damaged: left for fetch to report
                if expires_at is None:
                    del filed[session_id]
                elif expires_at < now:
                    del self.records[session_id]
                    del filed[session_id]
                    removed += 1
                else:
                    self._file(session_id, expires_at)  # touched since it was filed
        return removed

    # -- an asyncio path (optional) -------------------------------------------------------------
    #
    # AsyncSessionManager, the API of asyncio servers, runs this backend's operations as plain
    # calls on the event loop: its capabilities say blocking=False (a dict never waits). A
    # storage that waits on I/O says blocking=True, and then each operation runs in a worker
    # thread, unless the backend gives each operation hook an async twin: the same arguments,
    # returning a coroutine that the manager awaits on the storage's own asyncio client, with no
    # thread (``sessions.native_operations`` lists the operations that take this path). Keep the
    # keys, queries and encoding in one place both paths call, and keep the sync hooks: the sync
    # manager calls only those. tests/test_conformance.py runs AsyncConformance on every path.
    # For fetch (an operation is native once every hook it calls has a twin: fetch needs
    # sessionkeeper_async_touch too, update sessionkeeper_async_store_if):
    #
    #     @hookimpl
    #     def sessionkeeper_async_fetch(self, session_id: str) -> Awaitable[Session | None]:
    #         return self._afetch(session_id)  # do no I/O before the coroutine is awaited
    #
    #     async def _afetch(self, session_id: str) -> Session | None:
    #         record = await self._aclient().get(session_id)  # made on the running loop
    #         return None if record is None else self._decode(session_id, record)
    #
    #     @hookimpl
    #     def sessionkeeper_async_close(self) -> Awaitable[None] | None:
    #         return self._aclose()  # closes the asyncio client on its loop
    #
    # See "An asyncio path" in sessionkeeper's guide "Writing a backend", and contrib/redis.

    @hookimpl
    def sessionkeeper_stats(self) -> dict[str, Any]:
        """Figures shown by ``sessionkeeper stats`` (JSON-compatible)."""
        return {"stored": len(self.records), "index_entries": len(self._heap)}
