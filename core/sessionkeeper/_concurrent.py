"""The managers' operations on concurrent state (issue 14): versions, conditional writes,
``update``, ``take``, ``rotate`` and owners.

They are mixins of :class:`~sessionkeeper.SessionManager` and
:class:`~sessionkeeper.AsyncSessionManager`, kept apart from the plain operations because they
share one rule: an operation that must be atomic runs only on a backend whose capabilities declare
``atomic`` (it implements every hook of :data:`~sessionkeeper.hookspecs.ATOMIC_HOOKS`), and
raises :class:`~sessionkeeper.Unsupported` anywhere else. The manager never turns a conditional
write into an unconditional one.

``update`` is the read-modify-write the caller would otherwise write by hand: read the session,
compute the new metadata, write it back with ``if_version`` = the version read; when another
writer got there first (:class:`~sessionkeeper.VersionConflict`), wait a random time of up to
1 ms, 2 ms, 4 ms ... (capped at 50 ms: "full jitter", so that the losers of one race do not meet
again in the next) and start again, at most ``attempts`` times. The function is called on a
fresh read each time, and never on a session that has expired.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from ._errors import InvalidSession, SessionNotFound, Unsupported, VersionConflict
from ._model import (
    PackedMetadata,
    Session,
    check_owner,
    generate_id,
    pack_metadata,
    validate_id,
)

if TYPE_CHECKING:
    from ._backend import Capabilities
    from ._manager import SessionManager

__all__ = ["AsyncConcurrentOperations", "ConcurrentOperations", "backoff_delay"]

#: ``update``'s first wait after a conflict, in seconds (it doubles with every conflict).
BACKOFF_BASE_S: Final = 0.001
#: ``update``'s longest wait between two attempts, in seconds.
BACKOFF_CAP_S: Final = 0.05
#: How many times ``update`` tries before it raises :class:`~sessionkeeper.VersionConflict`.
DEFAULT_ATTEMPTS: Final = 10

#: The largest version a store can hold (a signed 64-bit integer: msgpack, SQL, Redis).
MAX_VERSION: Final = 2**63 - 1

#: What ``update``'s function gets (a copy of the metadata) and returns (the new metadata).
UpdateFunction = Callable[[dict[str, Any]], Mapping[str, Any]]


def backoff_delay(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``attempt``-th conflict (0-based): uniform in
    ``[0, min(cap, base * 2**attempt))``."""
    bound: float = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(attempt, 32))
    return rand() * bound


def _check_attempts(attempts: object) -> int:
    if type(attempts) is not int or attempts < 1:
        raise ValueError(f"attempts must be an int >= 1, got {attempts!r}")
    return attempts


def check_if_version(if_version: object) -> int | None:
    """``if_version`` if it is ``None`` or an int >= 0, else :class:`InvalidSession`."""
    if if_version is None:
        return None
    if type(if_version) is not int or not 0 <= if_version < 2**63:
        raise InvalidSession(
            "if_version",
            "must be None, 0 (only if absent) or the version read (an int >= 1), "
            f"got {type(if_version).__name__} {if_version!r}",
        )
    return if_version


def _refuse_past_max(session_id: str, version: int) -> None:
    """Refuse a write that would give the session ``session_id``, now at ``version``, the next
    version when that is past :data:`MAX_VERSION` (no encoded backend could store or read it)."""
    if version >= MAX_VERSION:
        raise InvalidSession(
            "version",
            f"session {session_id!r} is at version {version}, the largest a store can hold "
            f"(2**63-1): it cannot be written again; delete it and create a new session",
        )


def _owner_argument(owner: object) -> str:
    """``owner`` for an operation on one principal's sessions: a valid owner, not ``None``."""
    if owner is None:
        raise InvalidSession("owner", "must be a str naming the principal, got None")
    checked = check_owner(owner)
    assert checked is not None
    return checked


def _as_stored(session: Session, result: object) -> Session:
    """The stored session from what ``sessionkeeper_store_if`` returned for ``session``: the
    stored session, or the new version (an int: the hook's first draft, still accepted)."""
    if type(result) is Session:
        return result
    if type(result) is not int or result < 1:
        raise TypeError(
            f"sessionkeeper_store_if returned {type(result).__name__} {result!r}, "
            "not the stored Session"
        )
    return session.with_version(result)


class ConcurrentOperations:
    """The concurrent-state operations of :class:`~sessionkeeper.SessionManager`."""

    if TYPE_CHECKING:  # what the manager provides (bound by its _rebind and _setup)
        backend_name: str
        capabilities: Capabilities
        clock: Callable[[], int]
        _atomic: bool
        _store: Callable[[Session], None]
        _fetch: Callable[[str], Session | None]
        _store_if: Callable[[Session, int | None, int], Session | None]
        _take: Callable[[str, int], Session | None]
        _rotate: Callable[[str, str, int], Session | None]
        _list_owner: Callable[[str, int], list[str] | None] | None
        _count_owner: Callable[[str, int], int | None] | None
        _delete_owner: Callable[[str], int | None]

        def _call(self, operation: str, function: Callable[..., Any], *args: Any) -> Any: ...
        def _stored(self, session_id: str, operation: str) -> Session: ...
        def _check_size(self, packed: PackedMetadata) -> None: ...
        def iter_sessions(self, *, include_expired: bool = False) -> Iterator[Session]: ...

    def _require_atomic(self) -> None:
        if not self._atomic:
            raise Unsupported(self.backend_name)

    def _store_versioned(self, session: Session, if_version: int | None) -> Session:
        """What :meth:`SessionManager.store` does once ``session`` is checked: a conditional
        store on an ``atomic`` backend; elsewhere, refuse ``if_version`` and give the session
        the stored live version + 1 (best effort: not atomic). The async manager's native
        ``store`` is these steps awaited, with the same helpers."""
        if self._atomic:
            if self._look_before_store_if(session, if_version):
                self._refuse_live_at_max(session.id, self._call("store", self._fetch, session.id))
            stored = self._call("store", self._store_if, session, if_version, self.clock())
            return _as_stored(session, stored)
        self._refuse_condition(if_version)
        now = self.clock()
        stored = self._counted(session, self._call("store", self._fetch, session.id), now)
        self._call("store", self._store, stored)
        return stored

    def _look_before_store_if(self, session: Session, if_version: int | None) -> bool:
        """Check ``if_version`` of a store on an ``atomic`` backend; say whether the stored
        session must be read first: a session written back after a read at the largest version
        (only then, so that a plain store reads nothing)."""
        if if_version is not None:
            check_if_version(if_version)
            _refuse_past_max(session.id, if_version)
            return False
        return session.version >= MAX_VERSION

    def _refuse_live_at_max(self, session_id: str, current: Session | None) -> None:
        """Refuse a write over ``current``, the stored session, when it is live at the largest
        version."""
        if current is not None and not current.is_expired(self.clock()):
            _refuse_past_max(session_id, current.version)

    def _refuse_condition(self, if_version: int | None) -> None:
        """On a backend without ``atomic``: a bad ``if_version`` is invalid, a good one
        :class:`~sessionkeeper.Unsupported` (never a silent unconditional write)."""
        if if_version is not None:
            check_if_version(if_version)
            raise Unsupported(self.backend_name)

    @staticmethod
    def _counted(session: Session, current: Session | None, now: int) -> Session:
        """``session`` with the version a store without ``atomic`` gives it over ``current``,
        the stored session: its version + 1 while it is live at ``now``, else 1."""
        if current is None or current.is_expired(now):
            version = 1
        else:
            _refuse_past_max(session.id, current.version)
            version = current.version + 1
        return session if session.version == version else session.with_version(version)

    # --- update ---------------------------------------------------------------------------------

    def update(
        self, session_id: str, fn: UpdateFunction, *, attempts: int = DEFAULT_ATTEMPTS
    ) -> Session:
        """Change a live session's metadata atomically: ``fn`` gets a copy of the metadata and
        returns the new metadata, which is written only if nobody wrote the session in between;
        otherwise it starts again (jittered exponential back-off, at most ``attempts`` times).
        Returns the session as stored: new metadata, ``last_accessed`` now, version + 1.

        ``fn`` may be called several times (once per attempt, each time on a fresh read), so it
        should only compute; it is never called on a session that has expired. An exception
        from ``fn`` propagates and nothing is written.

        Raises :class:`~sessionkeeper.SessionNotFound` when there is no live session,
        :class:`~sessionkeeper.VersionConflict` when every attempt lost its race,
        :class:`~sessionkeeper.InvalidSession` when ``fn`` returns metadata that is not valid,
        :class:`~sessionkeeper.Unsupported` on a backend without ``atomic``.
        """
        validate_id(session_id)
        self._require_atomic()
        _check_attempts(attempts)
        for attempt in range(attempts):
            try:
                return self._update_once(session_id, fn)
            except VersionConflict:
                if attempt + 1 >= attempts:
                    raise
            time.sleep(backoff_delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _update_once(self, session_id: str, fn: UpdateFunction) -> Session:
        """One attempt of :meth:`update`: raises ``VersionConflict`` when it lost the race."""
        now = self.clock()
        read = self._stored(session_id, "update")
        changed = self._updated(read, fn, now)
        return _as_stored(changed, self._call("update", self._store_if, changed, read.version, now))

    def _updated(self, read: Session, fn: UpdateFunction, now: int) -> Session:
        """What one attempt of ``update`` (both managers') writes over ``read``: ``fn``'s
        metadata, accessed now, the next version (``SessionNotFound`` when ``read`` has expired
        at ``now``)."""
        if read.is_expired(now):
            raise SessionNotFound(read.id)
        _refuse_past_max(read.id, read.version)
        packed = pack_metadata(fn(read.metadata))
        self._check_size(packed)
        return Session._trusted(
            read.id,
            read.created_at,
            now if now > read.last_accessed else read.last_accessed,
            read.timeout_ms,
            packed,
            read.version + 1,  # what it will be if the write succeeds: a backend need not copy
            read.owner,
            read.absolute_timeout_ms,
        )

    # --- take, rotate ---------------------------------------------------------------------------

    def take(self, session_id: str) -> Session:
        """Remove the live session ``session_id`` and return it, atomically: of any number of
        concurrent takes of one id exactly one gets it (a single-use token, a one-shot
        ``requestState``). Raises :class:`~sessionkeeper.SessionNotFound` when there is no live
        session (an expired one is removed), :class:`~sessionkeeper.Unsupported` on a backend
        without ``atomic``."""
        validate_id(session_id)
        self._require_atomic()
        taken: Session | None = self._call("take", self._take, session_id, self.clock())
        if taken is None:
            raise SessionNotFound(session_id)
        return taken

    def rotate(self, session_id: str) -> Session:
        """Move the live session to a fresh id, atomically, and return it: the same metadata,
        owner, creation time and timeouts, ``last_accessed`` now and version + 1; the old id is
        gone at once (no reader sees both). Call it when a session gains privileges (after a
        login), against session fixation. Raises :class:`~sessionkeeper.SessionNotFound` when
        there is no live session, :class:`~sessionkeeper.Unsupported` on a backend without
        ``atomic``."""
        validate_id(session_id)
        self._require_atomic()
        current = self._call("rotate", self._fetch, session_id)
        if current is not None:  # one read more, for a rare operation: refuse what cannot be stored
            _refuse_past_max(session_id, current.version)
        rotated: Session | None = self._call(
            "rotate", self._rotate, session_id, generate_id(), self.clock()
        )
        if rotated is None:
            raise SessionNotFound(session_id)
        return rotated

    # --- owners ---------------------------------------------------------------------------------

    def _owner_ids(self, owner: object) -> list[str]:
        """``list(owner=owner)``: the owner index, or a scan when the backend has none."""
        checked = _owner_argument(owner)
        if self._list_owner is not None:
            return list(self._call("list", self._list_owner, checked, self.clock()) or ())
        return [session.id for session in self.iter_sessions() if session.owner == checked]

    def _owner_count(self, owner: object) -> int:
        """``count(owner=owner)``: the owner index, or a scan when the backend has none."""
        checked = _owner_argument(owner)
        if self._count_owner is not None:
            return int(self._call("count", self._count_owner, checked, self.clock()) or 0)
        return sum(1 for session in self.iter_sessions() if session.owner == checked)

    def delete_owner(self, owner: str) -> int:
        """Delete every session of ``owner`` ("log out everywhere"), expired ones included;
        return how many were removed. A session of ``owner`` stored before the call began is
        deleted, one stored after it returned is kept. Raises
        :class:`~sessionkeeper.InvalidSession` for an invalid owner,
        :class:`~sessionkeeper.Unsupported` on a backend without ``atomic``."""
        checked = _owner_argument(owner)
        self._require_atomic()
        return int(self._call("delete_owner", self._delete_owner, checked) or 0)


class AsyncConcurrentOperations:
    """The concurrent-state operations of :class:`~sessionkeeper.AsyncSessionManager`: each
    runs the sync manager's on the event loop when the backend serves its hooks inline, else in
    a worker thread; ``update``
    waits between attempts with :func:`asyncio.sleep`, never blocking the event loop."""

    if TYPE_CHECKING:
        sync: SessionManager

        async def _run(
            self, operation: str, function: Callable[..., Any], *args: Any, **kwargs: Any
        ) -> Any: ...

    async def update(
        self, session_id: str, fn: UpdateFunction, *, attempts: int = DEFAULT_ATTEMPTS
    ) -> Session:
        """See :meth:`SessionManager.update <sessionkeeper.SessionManager.update>`; ``fn`` is
        a plain function (it runs where the backend's operations run)."""
        sync = self.sync
        validate_id(session_id)
        sync._require_atomic()
        _check_attempts(attempts)
        for attempt in range(attempts):
            try:
                stored: Session = await self._run("update", sync._update_once, session_id, fn)
                return stored
            except VersionConflict:
                if attempt + 1 >= attempts:
                    raise
            await asyncio.sleep(backoff_delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def take(self, session_id: str) -> Session:
        """See :meth:`SessionManager.take <sessionkeeper.SessionManager.take>`."""
        taken: Session = await self._run("take", self.sync.take, session_id)
        return taken

    async def rotate(self, session_id: str) -> Session:
        """See :meth:`SessionManager.rotate <sessionkeeper.SessionManager.rotate>`."""
        rotated: Session = await self._run("rotate", self.sync.rotate, session_id)
        return rotated

    async def delete_owner(self, owner: str) -> int:
        """See :meth:`SessionManager.delete_owner
        <sessionkeeper.SessionManager.delete_owner>`."""
        removed: int = await self._run("delete_owner", self.sync.delete_owner, owner)
        return removed
