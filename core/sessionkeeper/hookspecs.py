"""The backend behaviour, as a pluggy hook specification.

A backend is a plugin object (one instance per manager) that implements every hook below marked
*required*. Wrapper plugins (metrics, tracing, audit) implement the same hooks with
``@hookimpl(wrapper=True)`` and see every call the manager makes, each hook below included; so
does a monitor added with pluggy's ``add_hookcall_monitoring`` (or ``enable_tracing``) on the
manager's ``plugin_manager``. The project name ``"sessionkeeper"`` appears here and nowhere
else: plugins import the marker from :mod:`sessionkeeper.backend`::

    from sessionkeeper.backend import hookimpl

Times are integers, milliseconds since the Unix epoch; ``now`` always comes from the manager's
clock, so backends never read the time themselves and tests never sleep.

The module is long because each hook's docstring is its contract, rendered as the hook
reference (docs/hooks.md): one specification per hook, sync and async, nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import pluggy

if TYPE_CHECKING:
    from ._model import Session

__all__ = [
    "ASYNC_HOOKS",
    "ATOMIC_HOOKS",
    "PROJECT_NAME",
    "REQUIRED_HOOKS",
    "hookimpl",
    "hookspec",
]

#: The pluggy project name: hook names start with ``sessionkeeper_``.
PROJECT_NAME: Final = "sessionkeeper"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marks a plugin method as an implementation of a hook (re-exported as
#: ``sessionkeeper.backend.hookimpl``).
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def sessionkeeper_open() -> None:
    """Open the backend's resources (files, sockets, connections).

    Called once, after the backend and the wrapper plugins are registered and before any other
    hook. Raise :class:`~sessionkeeper.StorageError` when the store cannot be opened (a locked
    file, an unreachable server); the manager then closes every plugin
    (:func:`sessionkeeper_close`) and fails to start with that error.

    .. note::
        Every plugin's implementation is called (this hook is not ``firstresult``), the last
        registered first and the backend (registered first) last, until one raises: those after
        it are not called.

    Where it is called: :meth:`SessionManager.__init__ <sessionkeeper.SessionManager>`.
    """


@hookspec
def sessionkeeper_close() -> None:
    """Flush and release everything :func:`sessionkeeper_open` acquired.

    Must be idempotent and must not hang: a backend with buffered writes commits them here.
    Errors are logged by the manager, naming the plugin, and do not stop other plugins from
    closing.

    .. note::
        Every plugin's implementation is called (this hook is not ``firstresult``), the last
        registered first and the backend last, even when one raises: the manager makes one
        call that wrappers see, and inside it calls each implementation itself.

    Where it is called: :meth:`SessionManager.close <sessionkeeper.SessionManager.close>`, on
    leaving a ``with`` block, and at interpreter exit for a manager still open.
    """


@hookspec(firstresult=True)
def sessionkeeper_store(session: Session) -> None:
    """Insert ``session``, or replace the stored session with the same id. *Required.*

    The session is already validated. When this hook returns the write is acknowledged at the
    backend's documented durability. Return nothing: the manager ignores the result.

    The hook is ``firstresult`` (see :ref:`firstresult`), so a wrapper sees one result, ``None``,
    not a list; and since every implementation returns ``None``, nothing stops the call early:
    every implementation is called, the last registered first. A backend is normally the only
    one, called once.

    :param session: the session to store.

    Where it is called: :meth:`SessionManager.store <sessionkeeper.SessionManager.store>` and
    :meth:`SessionManager.create <sessionkeeper.SessionManager.create>`.
    """


@hookspec(firstresult=True)
def sessionkeeper_store_many(sessions: Sequence[Session]) -> int | None:
    """Store a batch of sessions, each as :func:`sessionkeeper_store` would. *Optional.*

    Insert each session, or replace the one with the same id, in as few round trips,
    transactions or acknowledgements as the store allows. Without this hook the manager calls
    :func:`sessionkeeper_store` for each session.

    The sessions are already validated and their ids are distinct. Return how many were stored
    (``len(sessions)``; the manager reports ``len(sessions)`` whatever is returned, the value is
    for wrappers). When this hook raises, any part of the batch may be stored, each session
    whole or not at all; callers store the batch again.

    Stops at first non-None result, see :ref:`firstresult`.

    :param sessions: the sessions to store, at most a few thousand per call.

    Where it is called: :meth:`SessionManager.store_many
    <sessionkeeper.SessionManager.store_many>`, used by ``sessionkeeper import`` and
    ``sessionkeeper migrate``.
    """


@hookspec(firstresult=True)
def sessionkeeper_fetch(session_id: str) -> Session | None:
    """Return the stored session with this id, or ``None`` if there is none. *Required.*

    Return the session even when it has expired: the manager applies expiry, so the clock stays
    in one place. Never touch the session here. A record that cannot be decoded raises
    :class:`~sessionkeeper.StorageError` — it is never reported as ``None``.

    Stops at first non-None result, see :ref:`firstresult`.

    :param session_id: a syntactically valid session id.

    Where it is called: :meth:`SessionManager.fetch <sessionkeeper.SessionManager.fetch>`,
    :meth:`~sessionkeeper.SessionManager.peek` and :meth:`~sessionkeeper.SessionManager.touch`.
    This is the hottest path: keep it to one lookup.
    """


@hookspec(firstresult=True)
def sessionkeeper_touch(session_id: str, last_accessed: int) -> Session | None:
    """Move a stored session's ``last_accessed`` forward to ``last_accessed``. *Required.*

    Atomically with respect to :func:`sessionkeeper_delete` and :func:`sessionkeeper_store`: a
    touch never resurrects a deleted session and never moves ``last_accessed`` backwards. Return
    the session as now stored, or ``None`` when no session has this id.

    Stops at first non-None result, see :ref:`firstresult`.

    :param session_id: the session to touch.
    :param last_accessed: the new access time (ms); a smaller value than the stored one is ignored.

    Where it is called: :meth:`SessionManager.fetch <sessionkeeper.SessionManager.fetch>` when the
    access moves ``last_accessed`` by more than the touch resolution, and
    :meth:`SessionManager.touch <sessionkeeper.SessionManager.touch>`.
    """


@hookspec(firstresult=True)
def sessionkeeper_delete(session_id: str) -> bool | None:
    """Remove the session with this id; ``True`` if one was stored, else ``False``. *Required.*

    Deleting a missing id is not an error.

    Stops at first non-None result, see :ref:`firstresult`.

    :param session_id: the session to remove.

    Where it is called: :meth:`SessionManager.delete <sessionkeeper.SessionManager.delete>`.
    """


@hookspec(firstresult=True)
def sessionkeeper_list(now: int) -> list[str] | None:
    """Return the ids of every session that is live at ``now``, in no particular order. *Required.*

    Expired sessions are left out whether or not cleanup has removed them yet.

    Stops at first non-None result, see :ref:`firstresult`.

    :param now: the manager's clock, in ms.

    Where it is called: :meth:`SessionManager.list <sessionkeeper.SessionManager.list>` and the
    ``sessionkeeper list`` command.
    """


@hookspec(firstresult=True)
def sessionkeeper_count(now: int) -> int | None:
    """Return how many sessions are live at ``now``. *Required.*

    Stops at first non-None result, see :ref:`firstresult`.

    :param now: the manager's clock, in ms.

    Where it is called: :meth:`SessionManager.count <sessionkeeper.SessionManager.count>` and
    :meth:`~sessionkeeper.SessionManager.stats`.
    """


@hookspec(firstresult=True)
def sessionkeeper_iter_sessions() -> Iterable[Session] | None:
    """Return an iterable over every stored session, expired ones included. *Required.*

    The iterable is consumed lazily and must work in bounded memory for any store size (read in
    batches); it need not be a consistent snapshot, but a session stored before the iteration
    began and not deleted during it must appear exactly once. It must not touch sessions.

    Stops at first non-None result, see :ref:`firstresult`.

    Where it is called: :meth:`SessionManager.iter_sessions
    <sessionkeeper.SessionManager.iter_sessions>` (export, backup, migrate).
    """


@hookspec(firstresult=True)
def sessionkeeper_cleanup_expired(now: int) -> int | None:
    """Remove every session expired at ``now``; return how many were removed. *Required.*

    The cost must grow with the number of expired sessions, not with the number stored (keep an
    expiry index), and a large sweep should work in bounded batches so that it does not block
    other operations for long.

    Stops at first non-None result, see :ref:`firstresult`.

    :param now: the manager's clock, in ms.

    Where it is called: :meth:`SessionManager.cleanup_expired
    <sessionkeeper.SessionManager.cleanup_expired>`, by the cleanup scheduler every
    ``cleanup_interval`` ms, and by ``sessionkeeper cleanup``.
    """


@hookspec(firstresult=True)
def sessionkeeper_check(repair: bool) -> dict[str, Any] | None:
    """Verify the store's integrity and, with ``repair``, salvage what is intact. *Optional.*

    Called on a backend that was built but **not opened** (:func:`sessionkeeper_open` is not
    called first), so it works on a store too damaged to open. Return a JSON-compatible report
    with at least ``ok`` (bool: nothing wrong was found), ``checked`` (records examined),
    ``intact`` (records that decode and validate) and ``problems`` (a list of strings, one per
    problem, naming the record or page); with ``repair`` also ``repaired`` (bool) and what was
    kept aside (e.g. ``backup``, ``quarantined``). A backend with nothing to check returns
    ``None`` and ``sessionkeeper check`` says so.

    Stops at first non-None result, see :ref:`firstresult`.

    :param repair: write a repaired store holding every intact session, keeping the original.

    Where it is called: :func:`sessionkeeper.backend.check_store` and ``sessionkeeper check``.
    """


@hookspec(firstresult=True)
def sessionkeeper_identity() -> str | None:
    """Return a string that names the store this backend opened, the same however it was reached.

    Two backends opened on one store must return equal strings, whatever spelling of the path,
    URL or address their options used (a symlink or a hard link to one file, ``localhost`` and
    ``127.0.0.1``, a default database number left out); two different stores must return
    different strings. Build it from what the store itself says it is: a file's device and inode,
    a directory's real path, a server's run id plus the database number, a cluster's id. Prefix it
    with the backend's name. Return ``None`` when the backend cannot tell (then nothing can be
    compared, and operations that need it fall back to their second line of defence). *Optional.*

    Called on an opened backend. Must be cheap enough to call once per command.

    Stops at first non-None result, see :ref:`firstresult`.

    Where it is called: :meth:`SessionManager.identity <sessionkeeper.SessionManager.identity>`,
    used by ``sessionkeeper migrate`` to refuse copying a store onto itself.
    """


@hookspec(firstresult=True)
def sessionkeeper_inline_hooks() -> Iterable[str] | None:
    """Return the names of the hooks this opened backend serves without blocking. *Optional.*

    A hook is *inline* when a call never waits on I/O (disk, network, a peer) nor on a lock held
    across I/O, and costs microseconds: it reads or writes memory (a cached copy, a write buffer
    flushed by a thread of the backend's own, a replica acknowledged locally). The
    :class:`~sessionkeeper.AsyncSessionManager` runs an operation on the event loop when every
    hook it may call is inline, and in its worker threads otherwise: decided per operation, not
    per backend. Name hooks as the specification does (``"sessionkeeper_fetch"``); an unknown
    name makes the manager refuse the backend
    (:class:`~sessionkeeper.backend.PluginValidationError`).
    Wrapper plugins still see every call: they run where the operation runs (so a wrapper must
    not block either).

    A backend whose capabilities say ``blocking=False`` (the memory backend) need not implement
    it: every hook is inline. A backend that returns nothing (or does not implement it) has every
    operation run in a worker thread. The answer may depend on the options (an interval store
    buffers its writes, a durable one commits them), so it is asked once, after
    :func:`sessionkeeper_open`, and kept for the manager's life.

    Stops at first non-None result, see :ref:`firstresult`.

    Where it is called: once, when a manager opens (the answer is
    ``SessionManager.inline_hooks``, which :class:`~sessionkeeper.AsyncSessionManager` reads).
    """


@hookspec
def sessionkeeper_session_created(session: Session) -> None:
    """Notification that the manager created ``session`` (after it was stored).

    For audit and metrics plugins; backends need not implement it. The manager skips the call
    entirely when no plugin implements or wraps this hook.

    .. note::
        Every plugin's implementation is called (this hook is not ``firstresult``), the last
        registered first, until one raises: the exception then propagates from ``create``
        (one that is not a sessionkeeper error as a :class:`~sessionkeeper.StorageError`), and
        the session stays stored.

    :param session: the new session.

    Where it is called: :meth:`SessionManager.create <sessionkeeper.SessionManager.create>`.
    """


@hookspec
def sessionkeeper_stats() -> dict[str, Any] | None:
    """Return backend- or plugin-specific figures to show in ``stats``, or ``None``.

    Keys should be short snake_case names; values JSON-compatible. The manager shows each
    plugin's dictionary under the plugin's name (the backend's as ``backend_stats``).

    .. note::
        Every plugin's implementation is called (this hook is not ``firstresult``), the last
        registered first; an exception propagates from ``stats()``. A wrapper sees one call and
        pluggy's result: the list of every dictionary returned, ``None`` left out.

    Where it is called: :meth:`SessionManager.stats <sessionkeeper.SessionManager.stats>` and
    ``sessionkeeper stats``.
    """


#: The hooks a backend must implement; the manager refuses a backend that lacks one.
REQUIRED_HOOKS: Final = (
    "sessionkeeper_store",
    "sessionkeeper_fetch",
    "sessionkeeper_touch",
    "sessionkeeper_delete",
    "sessionkeeper_list",
    "sessionkeeper_count",
    "sessionkeeper_iter_sessions",
    "sessionkeeper_cleanup_expired",
)


# --- Atomic operations and owners (issue 14) --------------------------------------------------
#
# Optional hooks. A backend whose capabilities declare ``atomic`` implements every hook of
# ATOMIC_HOOKS (the manager refuses it otherwise); a backend without ``atomic`` is never called
# as if it had them: the manager raises Unsupported instead. The owner hooks may also be
# implemented alone (then ``list(owner=)`` and ``count(owner=)`` use them).


@hookspec(firstresult=True)
def sessionkeeper_store_if(session: Session, if_version: int | None, now: int) -> Session | None:
    """Store ``session`` if the stored version is ``if_version``; return it as stored.

    Atomically (linearizable per session id, across every thread and process that uses the
    store): let ``current`` be the version of the session stored under ``session.id`` if it is
    live at ``now``, else ``0`` (a stored session that has expired counts as absent). If
    ``if_version`` is not ``None`` and ``current != if_version``, raise
    ``VersionConflict(session.id, if_version, current)`` and store nothing. Otherwise store
    ``stored = session.with_version(current + 1)`` (the owner index follows the session's
    ``owner``) and return ``stored``. ``session.version`` itself is ignored. (The stored session
    is returned rather than the number, so that the manager does not build it a second time: on
    the memory backend that copy is a third of a ``store``.)

    Stops at first non-None result, see :ref:`firstresult`.

    :param session: the session to store, already validated.
    :param if_version: the version the caller read, ``0`` for "only if no live session has this
        id", or ``None`` for an unconditional write (which still bumps the version).
    :param now: the manager's clock, in ms: what "live" is judged against.

    Where it is called: :meth:`SessionManager.store <sessionkeeper.SessionManager.store>` (every
    store on an ``atomic`` backend, ``if_version`` or not) and :meth:`SessionManager.update
    <sessionkeeper.SessionManager.update>` (with the version it read). ``create`` uses
    :func:`sessionkeeper_store` (a fresh 256-bit id has no version to check). Required with
    ``atomic``.
    """


@hookspec(firstresult=True)
def sessionkeeper_take(session_id: str, now: int) -> Session | None:
    """Remove the session with this id and return it, if it was live at ``now``.

    Atomically: of any number of concurrent takes (and deletes, rotates) of one id, at most one
    gets the session. A session stored but expired at ``now`` is removed and ``None`` returned;
    ``None`` also when no session has this id.

    Stops at first non-None result, see :ref:`firstresult`.

    :param session_id: a syntactically valid session id.
    :param now: the manager's clock, in ms.

    Where it is called: :meth:`SessionManager.take <sessionkeeper.SessionManager.take>` (a
    single-use token redeemed at most once). Required with ``atomic``.
    """


@hookspec(firstresult=True)
def sessionkeeper_rotate(session_id: str, new_id: str, now: int) -> Session | None:
    """Move a live session to a new id; return it as now stored under ``new_id``.

    Atomically, if the session stored under ``session_id`` is live at ``now``: store it under
    ``new_id`` with ``version + 1`` and ``last_accessed = now`` (``created_at``, both timeouts,
    ``owner`` and metadata unchanged), delete ``session_id``, and return the new session. No
    reader ever sees both ids live, nor neither. Return ``None`` (and change nothing, except
    that an expired session may be removed) when no live session has this id.

    Stops at first non-None result, see :ref:`firstresult`.

    :param session_id: the session's current id.
    :param new_id: the id to move it to: fresh, generated by the manager.
    :param now: the manager's clock, in ms.

    Where it is called: :meth:`SessionManager.rotate <sessionkeeper.SessionManager.rotate>` (a
    new id after login, against session fixation). Required with ``atomic``.
    """


@hookspec(firstresult=True)
def sessionkeeper_list_owner(owner: str, now: int) -> list[str] | None:
    """Return the ids of ``owner``'s sessions that are live at ``now``, in no particular order.

    The cost must follow what the owner holds, not what the store holds (keep an owner index,
    which every write, delete, take, rotate and cleanup keeps exact).

    Stops at first non-None result, see :ref:`firstresult`.

    :param owner: a valid owner (non-empty, no control characters, at most 256 UTF-8 bytes).
    :param now: the manager's clock, in ms.

    Where it is called: :meth:`SessionManager.list <sessionkeeper.SessionManager.list>` with
    ``owner=`` and ``sessionkeeper list --owner``. Without it the manager scans
    :func:`sessionkeeper_iter_sessions`. Required with ``atomic``.
    """


@hookspec(firstresult=True)
def sessionkeeper_count_owner(owner: str, now: int) -> int | None:
    """Return how many of ``owner``'s sessions are live at ``now``.

    Costs what the owner holds, as :func:`sessionkeeper_list_owner`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param owner: a valid owner.
    :param now: the manager's clock, in ms.

    Where it is called: :meth:`SessionManager.count <sessionkeeper.SessionManager.count>` with
    ``owner=``. Without it the manager scans :func:`sessionkeeper_iter_sessions`. Required with
    ``atomic``.
    """


@hookspec(firstresult=True)
def sessionkeeper_delete_owner(owner: str) -> int | None:
    """Delete every session of ``owner``, expired ones included; return how many were removed.

    Atomic per session (each is deleted whole, never half) and linearizable: every session of
    ``owner`` whose store completed before this call began is deleted; one whose store began
    after this call returned is not affected; a store that overlaps the call may land on either
    side, whole.

    Stops at first non-None result, see :ref:`firstresult`.

    :param owner: a valid owner.

    Where it is called: :meth:`SessionManager.delete_owner
    <sessionkeeper.SessionManager.delete_owner>` ("log out everywhere") and
    ``sessionkeeper delete --owner``. Required with ``atomic``.
    """


#: The hooks a backend that declares the ``atomic`` capability must implement.
ATOMIC_HOOKS: Final = (
    "sessionkeeper_store_if",
    "sessionkeeper_take",
    "sessionkeeper_rotate",
    "sessionkeeper_list_owner",
    "sessionkeeper_count_owner",
    "sessionkeeper_delete_owner",
)


# --- Native async implementations (issue 15) --------------------------------------------------
#
# Optional. pluggy calls are synchronous, so an async implementation is a plain function that
# *returns an awaitable* (``return self._afetch(session_id)`` over an ``async def``), and the
# AsyncSessionManager awaits it. The rules they share are in docs/hooks.md ("Native async
# implementations").


@hookspec(firstresult=True)
def sessionkeeper_async_store(session: Session) -> Awaitable[None] | None:
    """:func:`sessionkeeper_store` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_store`, with the same contract. A backend that implements it implements
    :func:`sessionkeeper_store` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param session: as for :func:`sessionkeeper_store`.

    Where it is called: :meth:`AsyncSessionManager.create
    <sessionkeeper.AsyncSessionManager.create>` and
    :meth:`~sessionkeeper.AsyncSessionManager.store` (``store`` on a backend without
    ``atomic``), when the backend implements the ``async_`` twin of every hook the operation
    calls. Never by the sync manager.
    """


@hookspec(firstresult=True)
def sessionkeeper_async_store_many(sessions: Sequence[Session]) -> Awaitable[int | None] | None:
    """:func:`sessionkeeper_store_many` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_store_many`, with the same contract. A backend that implements it
    implements :func:`sessionkeeper_store_many` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param sessions: as for :func:`sessionkeeper_store_many`.

    Where it is called: :meth:`AsyncSessionManager.store_many
    <sessionkeeper.AsyncSessionManager.store_many>`, when the backend implements the ``async_``
    twin of every hook the operation calls. Never by the sync manager.
    """


@hookspec(firstresult=True)
def sessionkeeper_async_fetch(session_id: str) -> Awaitable[Session | None] | None:
    """:func:`sessionkeeper_fetch` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_fetch`, with the same contract. A backend that implements it implements
    :func:`sessionkeeper_fetch` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param session_id: as for :func:`sessionkeeper_fetch`.

    Where it is called: :meth:`AsyncSessionManager.fetch
    <sessionkeeper.AsyncSessionManager.fetch>`, :meth:`~sessionkeeper.AsyncSessionManager.peek`,
    :meth:`~sessionkeeper.AsyncSessionManager.touch`,
    :meth:`~sessionkeeper.AsyncSessionManager.update` and
    :meth:`~sessionkeeper.AsyncSessionManager.rotate`, when the backend implements the
    ``async_`` twin of every hook the operation calls. Never by the sync manager.
    """


@hookspec(firstresult=True)
def sessionkeeper_async_touch(
    session_id: str, last_accessed: int
) -> Awaitable[Session | None] | None:
    """:func:`sessionkeeper_touch` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_touch`, with the same contract. A backend that implements it implements
    :func:`sessionkeeper_touch` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param session_id: as for :func:`sessionkeeper_touch`.
    :param last_accessed: as for :func:`sessionkeeper_touch`.

    Where it is called: :meth:`AsyncSessionManager.fetch
    <sessionkeeper.AsyncSessionManager.fetch>` and
    :meth:`~sessionkeeper.AsyncSessionManager.touch`, when the backend implements the ``async_``
    twin of every hook the operation calls. Never by the sync manager.
    """


@hookspec(firstresult=True)
def sessionkeeper_async_delete(session_id: str) -> Awaitable[bool | None] | None:
    """:func:`sessionkeeper_delete` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_delete`, with the same contract. A backend that implements it
    implements :func:`sessionkeeper_delete` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param session_id: as for :func:`sessionkeeper_delete`.

    Where it is called: :meth:`AsyncSessionManager.delete
    <sessionkeeper.AsyncSessionManager.delete>`, when the backend implements the ``async_`` twin
    of every hook the operation calls. Never by the sync manager.
    """


@hookspec(firstresult=True)
def sessionkeeper_async_list(now: int) -> Awaitable[list[str] | None] | None:
    """:func:`sessionkeeper_list` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_list`, with the same contract. A backend that implements it implements
    :func:`sessionkeeper_list` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param now: as for :func:`sessionkeeper_list`.

    Where it is called: :meth:`AsyncSessionManager.list
    <sessionkeeper.AsyncSessionManager.list>`, when the backend implements the ``async_`` twin
    of every hook the operation calls. Never by the sync manager.
    """


@hookspec(firstresult=True)
def sessionkeeper_async_count(now: int) -> Awaitable[int | None] | None:
    """:func:`sessionkeeper_count` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_count`, with the same contract. A backend that implements it implements
    :func:`sessionkeeper_count` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param now: as for :func:`sessionkeeper_count`.

    Where it is called: :meth:`AsyncSessionManager.count
    <sessionkeeper.AsyncSessionManager.count>` and
    :meth:`~sessionkeeper.AsyncSessionManager.stats`, when the backend implements the ``async_``
    twin of every hook the operation calls. Never by the sync manager.
    """


@hookspec(firstresult=True)
def sessionkeeper_async_cleanup_expired(now: int) -> Awaitable[int | None] | None:
    """:func:`sessionkeeper_cleanup_expired` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_cleanup_expired`, with the same contract. A backend that implements it
    implements :func:`sessionkeeper_cleanup_expired` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param now: as for :func:`sessionkeeper_cleanup_expired`.

    Where it is called: :meth:`AsyncSessionManager.cleanup_expired
    <sessionkeeper.AsyncSessionManager.cleanup_expired>` and the cleanup task, when the backend
    implements the ``async_`` twin of every hook the operation calls. Never by the sync manager.
    """


@hookspec(firstresult=True)
def sessionkeeper_async_store_if(
    session: Session, if_version: int | None, now: int
) -> Awaitable[Session | None] | None:
    """:func:`sessionkeeper_store_if` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_store_if`, with the same contract. A backend that implements it
    implements :func:`sessionkeeper_store_if` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param session: as for :func:`sessionkeeper_store_if`.
    :param if_version: as for :func:`sessionkeeper_store_if`.
    :param now: as for :func:`sessionkeeper_store_if`.

    Where it is called: :meth:`AsyncSessionManager.store
    <sessionkeeper.AsyncSessionManager.store>` and
    :meth:`~sessionkeeper.AsyncSessionManager.update`, when the backend implements the
    ``async_`` twin of every hook the operation calls. Never by the sync manager.
    """


@hookspec(firstresult=True)
def sessionkeeper_async_take(session_id: str, now: int) -> Awaitable[Session | None] | None:
    """:func:`sessionkeeper_take` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_take`, with the same contract. A backend that implements it implements
    :func:`sessionkeeper_take` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param session_id: as for :func:`sessionkeeper_take`.
    :param now: as for :func:`sessionkeeper_take`.

    Where it is called: :meth:`AsyncSessionManager.take
    <sessionkeeper.AsyncSessionManager.take>`, when the backend implements the ``async_`` twin
    of every hook the operation calls. Never by the sync manager.
    """


@hookspec(firstresult=True)
def sessionkeeper_async_rotate(
    session_id: str, new_id: str, now: int
) -> Awaitable[Session | None] | None:
    """:func:`sessionkeeper_rotate` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_rotate`, with the same contract. A backend that implements it
    implements :func:`sessionkeeper_rotate` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param session_id: as for :func:`sessionkeeper_rotate`.
    :param new_id: as for :func:`sessionkeeper_rotate`.
    :param now: as for :func:`sessionkeeper_rotate`.

    Where it is called: :meth:`AsyncSessionManager.rotate
    <sessionkeeper.AsyncSessionManager.rotate>`, when the backend implements the ``async_`` twin
    of every hook the operation calls. Never by the sync manager.
    """


@hookspec(firstresult=True)
def sessionkeeper_async_list_owner(owner: str, now: int) -> Awaitable[list[str] | None] | None:
    """:func:`sessionkeeper_list_owner` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_list_owner`, with the same contract. A backend that implements it
    implements :func:`sessionkeeper_list_owner` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param owner: as for :func:`sessionkeeper_list_owner`.
    :param now: as for :func:`sessionkeeper_list_owner`.

    Where it is called: :meth:`AsyncSessionManager.list
    <sessionkeeper.AsyncSessionManager.list>` with ``owner=``, when the backend implements the
    ``async_`` twin of every hook the operation calls. Never by the sync manager.
    """


@hookspec(firstresult=True)
def sessionkeeper_async_count_owner(owner: str, now: int) -> Awaitable[int | None] | None:
    """:func:`sessionkeeper_count_owner` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_count_owner`, with the same contract. A backend that implements it
    implements :func:`sessionkeeper_count_owner` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param owner: as for :func:`sessionkeeper_count_owner`.
    :param now: as for :func:`sessionkeeper_count_owner`.

    Where it is called: :meth:`AsyncSessionManager.count
    <sessionkeeper.AsyncSessionManager.count>` with ``owner=``, when the backend implements the
    ``async_`` twin of every hook the operation calls. Never by the sync manager.
    """


@hookspec(firstresult=True)
def sessionkeeper_async_delete_owner(owner: str) -> Awaitable[int | None] | None:
    """:func:`sessionkeeper_delete_owner` on the backend's asyncio client. *Optional.*

    Return an awaitable (do no I/O before returning it) whose result and exceptions are those of
    :func:`sessionkeeper_delete_owner`, with the same contract. A backend that implements it
    implements :func:`sessionkeeper_delete_owner` too. See :ref:`async-hooks`.

    Stops at first non-None result, see :ref:`firstresult`.

    :param owner: as for :func:`sessionkeeper_delete_owner`.

    Where it is called: :meth:`AsyncSessionManager.delete_owner
    <sessionkeeper.AsyncSessionManager.delete_owner>`, when the backend implements the
    ``async_`` twin of every hook the operation calls. Never by the sync manager.
    """


@hookspec
def sessionkeeper_async_close() -> Awaitable[None] | None:
    """Release what the ``async_`` hooks acquired on the event loop (an asyncio client).

    Called on the running loop before :func:`sessionkeeper_close`, so that a client bound to
    that loop is closed on it. Return an awaitable (``None`` when there is nothing to release).
    Must be idempotent. Errors are logged by the manager, naming the plugin, and do not stop
    the plugins from closing.

    .. note::
        Every plugin's implementation is called (this hook is not ``firstresult``), the last
        registered first; the manager awaits every awaitable returned.

    Where it is called: :meth:`AsyncSessionManager.aclose
    <sessionkeeper.AsyncSessionManager.aclose>` (and on leaving ``async with``). Never by the
    sync manager.
    """


#: Each operation hook that has an async twin -> the twin's name.
ASYNC_HOOKS: Final = {
    "sessionkeeper_store": "sessionkeeper_async_store",
    "sessionkeeper_store_many": "sessionkeeper_async_store_many",
    "sessionkeeper_fetch": "sessionkeeper_async_fetch",
    "sessionkeeper_touch": "sessionkeeper_async_touch",
    "sessionkeeper_delete": "sessionkeeper_async_delete",
    "sessionkeeper_list": "sessionkeeper_async_list",
    "sessionkeeper_count": "sessionkeeper_async_count",
    "sessionkeeper_cleanup_expired": "sessionkeeper_async_cleanup_expired",
    "sessionkeeper_store_if": "sessionkeeper_async_store_if",
    "sessionkeeper_take": "sessionkeeper_async_take",
    "sessionkeeper_rotate": "sessionkeeper_async_rotate",
    "sessionkeeper_list_owner": "sessionkeeper_async_list_owner",
    "sessionkeeper_count_owner": "sessionkeeper_async_count_owner",
    "sessionkeeper_delete_owner": "sessionkeeper_async_delete_owner",
}
