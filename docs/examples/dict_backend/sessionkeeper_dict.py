"""sessionkeeper-dict: a complete, minimal backend (the example of "Writing a backend").

Sessions live in a dict, guarded by a lock. An expiry heap of ``(expires_at, id)`` makes
``cleanup_expired`` cost O(expired): entries made stale by a touch or a replace are skipped when
they come up.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable
from typing import Any

import attrs

from sessionkeeper import Session, StorageError
from sessionkeeper.backend import BackendContext, Capabilities, hookimpl

__all__ = ["DictBackend", "DictOptions"]


# start-options
@attrs.frozen(kw_only=True)
class DictOptions:
    """The ``[sessionkeeper.backend_opts]`` of the dict backend."""

    #: Refuse to store more sessions than this (a store beyond it raises StorageError).
    max_sessions: int = attrs.field(default=1_000_000, validator=attrs.validators.gt(0))


# end-options


# start-backend
class DictBackend:
    """Sessions in a dict: fast, and gone when the process exits."""

    options_class = DictOptions
    capabilities = Capabilities(persistent=False, shared=False, replicated=False, blocking=False)

    def __init__(self, options: DictOptions, context: BackendContext) -> None:
        self._name = context.name
        self._max = options.max_sessions
        self._sessions: dict[str, Session] = {}
        self._expiry: list[tuple[int, str]] = []  # a heap of (expires_at, id)
        self._lock = threading.Lock()

    def _index(self, session: Session) -> None:
        if session.expires_at is not None:
            heapq.heappush(self._expiry, (session.expires_at, session.id))

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        with self._lock:
            if session.id not in self._sessions and len(self._sessions) >= self._max:
                raise StorageError(self._name, f"full: max_sessions is {self._max}")
            self._sessions[session.id] = session
            self._index(session)

    @hookimpl
    def sessionkeeper_fetch(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)  # expired ones too: the manager applies expiry

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        with self._lock:  # atomic with store and delete: a touch never resurrects
            session = self._sessions.get(session_id)
            if session is None:
                return None
            touched = session.touched(last_accessed)  # never moves backwards
            if touched is not session:
                self._sessions[session_id] = touched
                self._index(touched)
            return touched

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    @hookimpl
    def sessionkeeper_list(self, now: int) -> list[str]:
        with self._lock:
            return [i for i, s in self._sessions.items() if not s.is_expired(now)]

    @hookimpl
    def sessionkeeper_count(self, now: int) -> int:
        with self._lock:
            return sum(not s.is_expired(now) for s in self._sessions.values())

    @hookimpl
    def sessionkeeper_iter_sessions(self) -> Iterable[Session]:
        with self._lock:
            return list(self._sessions.values())  # a snapshot of references: no copies

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        removed = 0
        with self._lock:
            # Expired means now - last_accessed > timeout_ms, that is expires_at < now.
            while self._expiry and self._expiry[0][0] < now:
                expires_at, session_id = heapq.heappop(self._expiry)
                session = self._sessions.get(session_id)
                if session is not None and session.expires_at == expires_at:
                    del self._sessions[session_id]
                    removed += 1
        return removed

    @hookimpl
    def sessionkeeper_stats(self) -> dict[str, Any]:
        return {"stored": len(self._sessions), "expiry_index": len(self._expiry)}

    @hookimpl
    def sessionkeeper_close(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._expiry.clear()


# end-backend
