"""The :class:`SessionManager`: loads the configured backend and applies the shared semantics.

How it calls its plugins (every call a pluggy hook call that wrappers and monitors see) lives in
:mod:`._dispatch`. The class is long because it is the whole synchronous API, one method per
operation with its checks inline on the hot paths (fetch and store measured slower through a
shared helper); the helpers of the conditional operations are in :mod:`._concurrent`.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Unpack

import attrs

from . import hookspecs
from ._backend import BackendContext, Capabilities
from ._closing import Closing
from ._concurrent import MAX_VERSION as _MAX_VERSION
from ._concurrent import ConcurrentOperations, _as_stored
from ._config import Config, load_config, structure_options
from ._dispatch import (
    ALL_HOOKS,
    backend_hooks,
    bind_hooks,
    call_each,
    check_async_twins,
    close_plugins,
    hook_table,
    plain_impls,
)
from ._errors import (
    InvalidSession,
    ManagerClosed,
    PluginValidationError,
    SessionKeeperError,
    SessionNotFound,
    StorageError,
)
from ._model import (
    PackedMetadata,
    Session,
    check_absolute_timeout,
    check_owner,
    check_timeout,
    generate_id,
    pack_metadata,
    validate_id,
)
from ._plugins import TRACE_ENV, PluginManager, load_backend_class
from ._scheduler import CleanupScheduler
from ._settings import (
    Clock,
    ManagerKeywords,
    ManagerOptions,
    OptionKeywords,
    options_from_keywords,
    settings_from_keywords,
)
from ._stats import StatsPlugin

__all__ = [
    "Clock",
    "SessionManager",
    "check_store",
    "system_clock",
]

log = logging.getLogger("sessionkeeper")

_PREFIX: Final = "sessionkeeper_"
_BACKEND_PLUGIN: Final = "backend"
_STATS_PLUGIN: Final = "sessionkeeper.stats"


def system_clock() -> int:
    """Milliseconds since the Unix epoch, from :func:`time.time_ns`."""
    return time.time_ns() // 1_000_000


class _Default:
    """Marks "use the configured default" (``None`` already means "never expires")."""

    def __repr__(self) -> str:
        return "<default>"


DEFAULT: Final = _Default()
_NO_ID: Final = object()
#: What ``store`` takes, as its errors say.
_STORE_TAKES: Final = "store() takes a sessionkeeper.Session"

#: The hooks the manager binds to ``self._<operation>`` (see :meth:`SessionManager._rebind`).
_OPERATIONS: Final = hook_table(
    (
        *hookspecs.REQUIRED_HOOKS,
        "sessionkeeper_store_many",
        "sessionkeeper_session_created",
        *hookspecs.ATOMIC_HOOKS,
    ),
    lambda hook: "_" + hook.removeprefix(_PREFIX),
)


class SessionManager(Closing, ConcurrentOperations):
    """Sessions in the configured backend, with expiry, touch coalescing and scheduled cleanup.

    Build it from a config file with :meth:`from_config`, or in code::

        with SessionManager(backend="memory", cleanup_interval=0) as sessions:
            s = sessions.create(timeout_ms=300_000, metadata={"user_id": "user_456"})
            assert sessions.fetch(s.id).metadata == {"user_id": "user_456"}

    ``backend`` and ``backend_opts`` may be given by position. The keyword arguments are the
    other keys of the ``[sessionkeeper]`` table (the fields of :class:`~sessionkeeper.Config`:
    ``cleanup_interval``, ``touch_resolution``, ``default_timeout``, ``max_metadata_bytes``,
    ``stats``), with their defaults, and the settings that cannot come from a file: ``clock``
    returns integer ms and replaces the system clock (tests inject one so they never sleep);
    ``plugins`` are wrapper plugin objects to register; ``read_only`` opens the store for
    inspection (for backends that support it); ``base_dir`` is where relative paths in
    ``backend_opts`` are resolved (default: the working directory); ``schedule=False`` leaves
    the cleanup scheduler off whatever ``cleanup_interval`` says. An unknown keyword is a
    ``TypeError``, a bad value a :class:`~sessionkeeper.ConfigError` naming the key.

    Thread-safe: one manager may be shared by every thread of a process.
    """

    def __init__(
        self,
        backend: str = "memory",
        backend_opts: Mapping[str, Any] | None = None,
        **keywords: Unpack[ManagerKeywords],
    ) -> None:
        config, options = settings_from_keywords(
            backend, backend_opts, keywords, named_by="SessionManager()"
        )
        self._setup(config, options)

    @classmethod
    def from_config(
        cls, path: str | os.PathLike[str] | None = None, **options: Unpack[OptionKeywords]
    ) -> SessionManager:
        """Open the manager a config file describes (lookup order of :func:`load_config`).

        The keyword arguments (``clock``, ``plugins``, ``read_only``, ``base_dir``,
        ``schedule``) are those of the constructor that a file cannot give.
        """
        return cls.from_settings(
            load_config(path, named_by="SessionManager.from_config()"), **options
        )

    @classmethod
    def from_settings(cls, config: Config, **options: Unpack[OptionKeywords]) -> SessionManager:
        """Open the manager for an already validated :class:`~sessionkeeper.Config`.

        The keyword arguments are those of :meth:`from_config`; ``schedule=False`` leaves the
        cleanup scheduler off whatever ``cleanup_interval`` says (the CLI's one-shot commands
        and the async manager, which runs its own, use it).
        """
        return cls._open(
            config,
            options_from_keywords(options, named_by="SessionManager.from_settings()"),
        )

    @classmethod
    def _open(cls, config: Config, options: ManagerOptions) -> SessionManager:
        """Open the manager for ``config`` run as ``options`` say (what every constructor and
        the async manager come down to)."""
        self = cls.__new__(cls)
        self._setup(config, options)
        return self

    # --- set-up and tear-down ---------------------------------------------------------------

    def _setup(self, config: Config, options: ManagerOptions) -> None:
        self.config = config
        self.options = options
        self.clock: Clock = options.clock or system_clock
        read_only = self.read_only = options.read_only
        self._closed = True  # until the backend is open
        self._sweep_lock = threading.Lock()
        self._touch_resolution = config.touch_resolution
        self._max_metadata = config.max_metadata_bytes
        self._default_timeout = config.default_timeout
        self._scheduler: CleanupScheduler | None = None
        self._stats: StatsPlugin | None = None

        backend = _build_backend(config, base_dir=options.base_dir, read_only=read_only)
        self.backend_name = config.backend
        self.capabilities: Capabilities = type(backend).capabilities
        self._atomic = self.capabilities.atomic
        self.backend = backend

        pm = self.plugin_manager = PluginManager()
        pm.add_listener(self._rebind)
        pm.register(backend, name=_BACKEND_PLUGIN)
        self._check_backend_hooks()
        if config.stats:
            self._stats = StatsPlugin()
            pm.register(self._stats, name=_STATS_PLUGIN)
            # Hits and misses are judged by the manager, at the one clock reading of a fetch.
            setattr(self, "fetch", _counted_fetch(weakref.ref(self), self._stats))  # noqa: B010
        for plugin in options.plugins:
            pm.register(plugin)
        pm.load_wrapper_plugins()
        if os.environ.get(TRACE_ENV):
            pm.enable_tracing()

        try:
            pm.hook.sessionkeeper_open()
            self.inline_hooks: frozenset[str] = self._ask_inline_hooks()
        except BaseException as exc:
            close_plugins(pm, self.backend_name)
            if isinstance(exc, SessionKeeperError) or not isinstance(exc, Exception):
                raise
            raise StorageError(config.backend, f"cannot open: {type(exc).__name__}: {exc}") from exc
        self._closed = False
        self._rebind()
        self._finalizer = weakref.finalize(self, _finalize, pm, self.backend_name)
        self._finalizer.atexit = False
        _open_managers.add(self)
        if options.schedule and config.cleanup_interval and not read_only:
            self._scheduler = CleanupScheduler(
                self.cleanup_expired,
                config.cleanup_interval,
                name=f"sessionkeeper-cleanup-{config.backend}",
            )
            self._scheduler.start()

    def _ask_inline_hooks(self) -> frozenset[str]:
        """The hooks the opened backend serves without blocking (see
        :func:`~sessionkeeper.hookspecs.sessionkeeper_inline_hooks`): every hook when its
        capabilities say ``blocking=False``, else what it answers (nothing when it does not)."""
        if not self.capabilities.blocking:
            return ALL_HOOKS
        answer = self.plugin_manager.hook.sessionkeeper_inline_hooks()
        if answer is None:
            return frozenset()
        if isinstance(answer, str) or not isinstance(answer, Iterable):
            raise PluginValidationError(
                self.config.backend,
                f"sessionkeeper_inline_hooks returned {type(answer).__name__} {answer!r}, "
                "not a collection of hook names",
            )
        names = frozenset(answer)
        unknown = sorted(map(repr, names - ALL_HOOKS))
        if unknown:
            raise PluginValidationError(
                self.config.backend,
                f"sessionkeeper_inline_hooks names {', '.join(unknown)}, not hooks of the "
                "specification (names are spelled 'sessionkeeper_fetch', ...)",
            )
        return names

    def _check_backend_hooks(self) -> None:
        """Refuse a backend that lacks a required hook (the atomic ones too when its
        capabilities say ``atomic``) or implements an ``async_`` hook without its sync twin."""
        implemented = backend_hooks(self)
        required: tuple[str, ...] = hookspecs.REQUIRED_HOOKS
        if self.capabilities.atomic:  # its capability promises the atomic hooks
            required += hookspecs.ATOMIC_HOOKS
        missing = [name for name in required if name not in implemented]
        if missing:
            raise PluginValidationError(
                self.config.backend,
                f"{type(self.backend).__qualname__} does not mark {', '.join(missing)} "
                "with @sessionkeeper.backend.hookimpl",
            )
        check_async_twins(self.config.backend, implemented)

    def _rebind(self) -> None:
        """Choose, per operation, a direct call to the lone implementation or pluggy's
        dispatch (see :func:`bind_hooks`)."""
        bind_hooks(self, self.plugin_manager, _OPERATIONS, closed=self._closed)

    def close(self) -> None:
        """Stop the scheduler and close every plugin (LIFO), logging their errors. Idempotent."""
        if self._closed:
            return
        if self._scheduler is not None:
            self._scheduler.stop()
        with self._sweep_lock:
            self._closed = True
            self._rebind()
            self._finalizer.detach()
            _open_managers.discard(self)
            close_plugins(self.plugin_manager, self.backend_name)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SessionManager backend={self.backend_name!r} {state}>"

    # --- wrapper plugins --------------------------------------------------------------------

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register a wrapper plugin; from the next call on it sees every operation."""
        return self.plugin_manager.register(plugin, name)

    def unregister(self, plugin: object) -> None:
        """Unregister a plugin registered with :meth:`register`."""
        self.plugin_manager.unregister(plugin)

    # --- operations -------------------------------------------------------------------------
    # The attributes _store, _fetch, ... are bound by _rebind().
    _store: Callable[[Session], None]
    _store_many: Callable[[list[Session]], int | None] | None
    _fetch: Callable[[str], Session | None]
    _touch: Callable[[str, int], Session | None]
    _delete: Callable[[str], bool | None]
    _list: Callable[[int], list[str] | None]
    _count: Callable[[int], int | None]
    _iter_sessions: Callable[[], Iterable[Session] | None]
    _cleanup_expired: Callable[[int], int | None]
    _session_created: Callable[[Session], None] | None

    def create(
        self,
        timeout_ms: int | _Default | None = DEFAULT,
        metadata: Mapping[str, Any] | None = None,
        *,
        owner: str | None = None,
        absolute_timeout_ms: int | None = None,
    ) -> Session:
        """Create, store and return a new session (version 1) with a fresh 256-bit id.

        :param timeout_ms: idle ms before it expires; ``None`` never; default: ``default_timeout``.
        :param metadata: JSON-compatible dict, at most ``max_metadata_bytes`` encoded.
        :param owner: the principal it belongs to (see :meth:`list`, :meth:`delete_owner`).
        :param absolute_timeout_ms: ms after creation at which it expires whatever the activity.
        """
        session = self._new_session(timeout_ms, metadata, owner, absolute_timeout_ms)
        self._call("create", self._store, session)
        if self._session_created is not None:  # checked here: no call when nothing listens
            self._call("create", self._session_created, session)
        return session

    def _new_session(
        self,
        timeout_ms: int | _Default | None,
        metadata: Mapping[str, Any] | None,
        owner: str | None,
        absolute_timeout_ms: int | None,
    ) -> Session:
        """The session ``create`` stores (both managers'): checked arguments, a fresh id,
        version 1, created and accessed now."""
        timeout = self._default_timeout if isinstance(timeout_ms, _Default) else timeout_ms
        check_timeout(timeout)
        if owner is not None:
            owner = check_owner(owner)
        if absolute_timeout_ms is not None:
            check_absolute_timeout(absolute_timeout_ms)
        packed = pack_metadata(metadata)
        self._check_size(packed)
        now = self.clock()
        return Session._trusted(
            generate_id(), now, now, timeout, packed, 1, owner, absolute_timeout_ms
        )

    def store(self, session: Session, *, if_version: int | None = None) -> Session:
        """Insert ``session`` or replace the one with its id; return it as stored, with the
        version the store gave it (the live stored version + 1; 1 when there was none).

        With ``if_version`` the write is conditional: it happens only if the live stored
        version is ``if_version`` (``0``: only if no live session has this id), else
        :class:`~sessionkeeper.VersionConflict` and nothing is written. Conditional writes need
        a backend with the ``atomic`` capability (:class:`~sessionkeeper.Unsupported`
        elsewhere); on a backend without it the version is still counted, but not atomically.
        """
        # _check_session written inline: the call cost this hot path 1.08x (issue 15 follow-up,
        # bench_memory's paired timing of the two, alternating, same run).
        if type(session) is not Session:
            raise InvalidSession("session", f"{_STORE_TAKES}, got {type(session).__name__}")
        if len(session._metadata) > self._max_metadata:
            self._check_size(session._metadata)
        if if_version is None and self._atomic and session.version < _MAX_VERSION:
            # The common store, written inline (two call frames less, issue 14 follow-up): the
            # backend's store_if gives it the next version.
            try:
                stored = self._store_if(session, None, self.clock())
            except SessionKeeperError:
                raise
            except Exception as exc:
                raise self._failure("store", exc) from exc
            return stored if type(stored) is Session else _as_stored(session, stored)
        return self._store_versioned(session, if_version)

    def store_many(self, sessions: Iterable[Session]) -> int:
        """Store every session in ``sessions`` (insert or replace each), in as few round trips
        as the backend allows; return how many were stored.

        Every session is checked first: when one is invalid, nothing is stored. An id given
        twice keeps its last session. A backend without batches stores them one by one. When
        the store fails part-way, any part of the batch may be stored (each session whole):
        store the batch again.
        """
        batch = self._batch(sessions)
        if not batch:
            return 0
        try:
            if self._store_many is not None:
                self._store_many(list(batch.values()))
            else:
                store = self._store
                for session in batch.values():
                    store(session)
        except SessionKeeperError:
            raise
        except Exception as exc:
            raise self._failure("store_many", exc) from exc
        return len(batch)

    def _batch(self, sessions: Iterable[Session]) -> dict[str, Session]:
        """``store_many``'s sessions (both managers'), each checked, by id (the last of an id
        given twice)."""
        batch: dict[str, Session] = {}
        for session in sessions:
            self._check_session(session, "store_many() takes sessionkeeper.Session objects")
            batch[session.id] = session
        return batch

    def _check_session(self, session: Session, takes: str) -> None:
        """Refuse what is not a :class:`Session` (``takes`` says what the method takes), or one
        whose metadata is over ``max_metadata_bytes``."""
        if type(session) is not Session:
            raise InvalidSession("session", f"{takes}, got {type(session).__name__}")
        if len(session._metadata) > self._max_metadata:
            self._check_size(session._metadata)

    def _check_size(self, packed: PackedMetadata) -> None:
        if len(packed) > self._max_metadata:
            raise InvalidSession(
                "metadata",
                f"encodes to {len(packed)} bytes, over max_metadata_bytes={self._max_metadata}",
            )

    def fetch(self, session_id: str) -> Session:
        """The live session ``session_id``, touched: an access slides ``last_accessed`` forward.

        The write-back is coalesced: it happens only when ``last_accessed`` would move by more
        than ``touch_resolution`` ms, or by more than a tenth of the session's timeout.
        Raises :class:`~sessionkeeper.SessionNotFound` (also a ``KeyError``) when there is no
        live session with this id, :class:`~sessionkeeper.InvalidSession` for a malformed id.
        """
        session = self._stored(session_id, "fetch")
        now = self.clock()
        # _accessed's rule, written inline: the hot path. The call to _accessed measured 1.09x
        # (in order) and 1.15x (random) this inline copy, best of 15 alternating timings over
        # bench_memory's 20,000 sessions in one run (issue 15 follow-up). Change both together;
        # tests/test_async_native.py checks that they judge alike.
        absolute = session.absolute_timeout_ms
        if absolute is not None and now - session.created_at > absolute:
            raise SessionNotFound(session_id)
        idle = now - session.last_accessed
        timeout = session.timeout_ms
        if timeout is not None:
            if idle > timeout:
                raise SessionNotFound(session_id)
            if idle > timeout // 10:
                return self._write_touch(session_id, now, session)
        if idle > self._touch_resolution:
            return self._write_touch(session_id, now, session)
        return session

    def _accessed(self, session: Session, now: int) -> bool:
        """Judge an access to ``session`` at ``now`` (``fetch``'s rule; :meth:`fetch` writes it
        inline): raise ``SessionNotFound`` when it has expired, else say whether the access must
        be written back (``last_accessed`` would move by more than ``touch_resolution`` or a
        tenth of the session's timeout)."""
        absolute = session.absolute_timeout_ms
        if absolute is not None and now - session.created_at > absolute:
            raise SessionNotFound(session.id)
        idle = now - session.last_accessed
        timeout = session.timeout_ms
        if timeout is not None:
            if idle > timeout:
                raise SessionNotFound(session.id)
            if idle > timeout // 10:
                return True
        return idle > self._touch_resolution

    def _stored(self, session_id: str, operation: str) -> Session:
        """The stored session ``session_id``, expired or not; raises ``SessionNotFound`` when
        there is none (``InvalidSession`` for a malformed id)."""
        try:
            session = self._fetch(session_id)
        except SessionKeeperError:
            raise
        except Exception as exc:
            raise self._failure(operation, exc, session_id) from exc
        if session is None:
            raise self._not_found(session_id)
        return session

    def _write_touch(self, session_id: str, now: int, read: Session | None = None) -> Session:
        if read is not None and self.read_only:
            return read  # an inspecting manager never writes; the access is not recorded
        try:
            touched = self._touch(session_id, now)
        except SessionKeeperError:
            raise
        except Exception as exc:
            raise self._failure("touch", exc, session_id) from exc
        if touched is None:  # deleted since we read it
            raise SessionNotFound(session_id)
        return touched

    def _not_found(self, session_id: object) -> SessionNotFound:
        validate_id(session_id)
        return SessionNotFound(session_id)

    def _failure(self, operation: str, exc: Exception, session_id: object = _NO_ID) -> Exception:
        """The error to raise for an exception a backend let escape: a bad id, else StorageError."""
        if session_id is not _NO_ID:
            validate_id(session_id)  # an unhashable or malformed id is the caller's mistake
        return StorageError(self.backend_name, f"{operation} failed: {type(exc).__name__}: {exc}")

    def _call(self, operation: str, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except SessionKeeperError:
            raise
        except Exception as exc:
            raise self._failure(operation, exc) from exc

    def peek(self, session_id: str, *, include_expired: bool = False) -> Session:
        """The live session ``session_id`` without touching it (for inspection and export).

        ``include_expired=True`` also returns a session that has expired but is still stored
        (cleanup has not removed it yet): what migrations compare.
        """
        session = self._stored(session_id, "peek")
        if not include_expired and session.is_expired(self.clock()):
            raise SessionNotFound(session_id)
        return session

    def touch(self, session_id: str) -> Session:
        """Slide ``last_accessed`` of a live session to now (always writes); return it.

        The clock is read once: the session is judged live and touched at the same instant.
        """
        session = self._stored(session_id, "touch")
        now = self.clock()
        if session.is_expired(now):
            raise SessionNotFound(session_id)
        return self._write_touch(session_id, now)

    def delete(self, session_id: str) -> bool:
        """Remove the session; ``True`` if it was stored, ``False`` if there was none."""
        validate_id(session_id)
        return bool(self._call("delete", self._delete, session_id))

    def list(self, owner: str | None = None) -> list[str]:
        """The ids of every live session; with ``owner``, of that principal's live sessions
        (from the backend's owner index, or a scan of every session when it has none)."""
        if owner is not None:
            return self._owner_ids(owner)
        return list(self._call("list", self._list, self.clock()) or ())

    def count(self, owner: str | None = None) -> int:
        """How many sessions are live; with ``owner``, how many of that principal's."""
        if owner is not None:
            return self._owner_count(owner)
        return int(self._call("count", self._count, self.clock()) or 0)

    def iter_sessions(self, *, include_expired: bool = False) -> Iterator[Session]:
        """Every stored session, lazily, without touching (export, backup, migrate)."""
        now = self.clock()
        sessions = iter(self._call("iter_sessions", self._iter_sessions) or ())
        while True:
            try:
                session = next(sessions)
            except StopIteration:
                return
            except SessionKeeperError:
                raise
            except Exception as exc:
                raise self._failure("iter_sessions", exc) from exc
            if include_expired or not session.is_expired(now):
                yield session

    def cleanup_expired(self) -> int:
        """Remove every expired session now; return how many. Never runs two sweeps at once."""
        with self._sweep_lock:
            return int(self._call("cleanup_expired", self._cleanup_expired, self.clock()) or 0)

    def identity(self) -> str | None:
        """The name of the store the backend opened, the same however its options spelled it
        (see :func:`~sessionkeeper.hookspecs.sessionkeeper_identity`); ``None`` when the backend
        cannot tell. Two managers on one store have equal identities."""
        result = self._call("identity", self.plugin_manager.hook.sessionkeeper_identity)
        return None if result is None else str(result)

    def stats(self) -> dict[str, Any]:
        """What the manager knows: backend, capabilities, live count, plugin figures, counters."""
        result: dict[str, Any] = {
            "backend": self.backend_name,
            "capabilities": self.capabilities.as_dict(),
            "live_sessions": self.count(),
            "config": _config_summary(self.config),
        }
        plugins: dict[str, Any] = {}

        def collect(impl: Any) -> Callable[[], Any]:
            def call() -> Any:
                figures = impl.function()
                if figures is not None:
                    plugins[impl.plugin_name] = figures
                return figures

            return call

        pm = self.plugin_manager
        call_each(pm, "sessionkeeper_stats", collect)
        # In the order the plugins were registered (pluggy calls them the other way round).
        names = [impl.plugin_name for impl in plain_impls(pm.hook.sessionkeeper_stats)]
        plugins = {name: plugins[name] for name in names if name in plugins}
        result["backend_stats"] = plugins.pop(_BACKEND_PLUGIN, {})
        if plugins:
            result["plugins"] = plugins
        if self._stats is not None:
            result["counters"] = self._stats.snapshot()
        if self._scheduler is not None:
            result["scheduler"] = {
                "interval_ms": self.config.cleanup_interval,
                "runs": self._scheduler.runs,
                "failures": self._scheduler.failures,
            }
        return result


def _counted_fetch(
    manager: weakref.ref[SessionManager], stats: StatsPlugin
) -> Callable[[str], Session]:
    """The ``fetch`` of a manager with ``stats = true``: :meth:`SessionManager.fetch`, and a hit
    or a miss counted for the stats plugin.

    The manager judges it, at the one clock reading of the fetch itself: the stats plugin never
    reads the clock, so it cannot call a session the fetch returned expired. The manager is held
    weakly, so that a manager dropped without ``close()`` is still collected at once.
    """
    plain_fetch = SessionManager.fetch

    @functools.wraps(plain_fetch)
    def fetch(session_id: str) -> Session:
        self = manager()
        if self is None:  # pragma: no cover - only reachable through a leaked reference
            raise ManagerClosed("this SessionManager was collected")
        try:
            session = plain_fetch(self, session_id)
        except SessionNotFound:
            stats.record_fetch(hit=False)
            raise
        stats.record_fetch(hit=True)
        return session

    return fetch


def _build_backend(
    config: Config, *, base_dir: str | os.PathLike[str] | None, read_only: bool
) -> Any:
    """Import the configured backend class, validate its options and construct it (not open);
    ``base_dir``, when given, replaces the config's."""
    backend_cls = load_backend_class(config.backend, source=config.source)
    options = structure_options(
        backend_cls.options_class, config.backend_opts, source=config.source
    )
    context = BackendContext(
        name=config.backend,
        base_dir=Path(base_dir) if base_dir is not None else config.base_dir,
        read_only=read_only,
    )
    try:
        return backend_cls(options, context)
    except SessionKeeperError:
        raise
    except Exception as exc:
        raise StorageError(config.backend, f"cannot start: {type(exc).__name__}: {exc}") from exc


def _config_summary(config: Config) -> dict[str, Any]:
    summary = attrs.asdict(config, filter=lambda a, _: a.name not in ("backend_opts", "source"))
    summary["source"] = str(config.source) if config.source is not None else None
    return summary


_open_managers: weakref.WeakSet[SessionManager] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Close managers still open at interpreter exit, so buffered writes are committed."""
    for manager in list(_open_managers):
        manager.close()


def _finalize(pm: PluginManager, backend: str) -> None:
    warnings.warn(
        f"a SessionManager ({backend} backend) was not closed; closing it now",
        ResourceWarning,
        stacklevel=1,
    )
    close_plugins(pm, backend)


def check_store(
    config: Config,
    *,
    repair: bool = False,
    base_dir: str | os.PathLike[str] | None = None,
    plugins: Iterable[object] = (),
) -> dict[str, Any] | None:
    """Run the configured backend's integrity check (``sessionkeeper check``) without opening it.

    Returns the backend's report (see :func:`~sessionkeeper.hookspecs.sessionkeeper_check`), or
    ``None`` when the backend has no check. Configuration errors raise as for a manager. The
    wrapper plugins of a manager see the call: ``plugins`` and those of the
    ``sessionkeeper.plugins`` entry-point group.
    """
    backend = _build_backend(config, base_dir=base_dir, read_only=not repair)
    pm = PluginManager()
    pm.register(backend, name=_BACKEND_PLUGIN)
    for plugin in plugins:
        pm.register(plugin)
    pm.load_wrapper_plugins()
    if os.environ.get(TRACE_ENV):
        pm.enable_tracing()
    try:
        report: dict[str, Any] | None = pm.hook.sessionkeeper_check(repair=repair)
    except SessionKeeperError:
        raise
    except Exception as exc:
        raise StorageError(config.backend, f"check failed: {type(exc).__name__}: {exc}") from exc
    return report
