"""The conformance suite every backend runs: :class:`BackendConformance`.

Every test drives a real :class:`~sessionkeeper.SessionManager` over the backend under test, with a
:class:`~sessionkeeper.testing.ManualClock` so that expiry is exercised without sleeping. Each test
checks one shared semantic (docs/backends.md) and its docstring states it.

The module is long because the kit is one class a backend's test subclasses, the whole contract
in one place to read; the atomic, async and stateful parts live in their own modules.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest

from sessionkeeper import (
    InvalidSession,
    Session,
    SessionKeeperError,
    SessionManager,
    SessionNotFound,
    StorageError,
)

from ._clock import ManualClock, TickingClock
from ._kit_atomic import AtomicConformance
from ._races import HANG_S, run_threads
from ._rules import VISIBLE_ASCII, assert_same_session, touch_window

__all__ = ["BackendConformance", "ManagerFactory"]

EDGE_IDS: dict[str, str] = {
    "one-char": "a",
    "max-length": "x" * 256,
    "every-visible-ascii": VISIBLE_ASCII,
    "quotes": "\"'`",
    "backslashes": "\\\\x\\",
    "sql-like-wildcards": "%_%",
    "glob-wildcards": "*?[!]",
    "path-like": "../../etc/passwd",
    "json-like": '{"id":1}',
    "digits": "0123456789",
}

BAD_IDS: dict[str, object] = {
    "empty": "",
    "too-long": "x" * 257,
    "space": "has space",
    "tab": "tab\tid",
    "newline": "new\nline",
    "nul": "nul\x00id",
    "delete-char": "del\x7f",
    "non-ascii": "caf\u00e9",
    "int": 42,
    "none": None,
    "bytes": b"bytes-id",
    "list": ["list"],
}

NOT_SESSIONS: dict[str, object] = {
    "none": None,
    "str": "some-id",
    "dict": {
        "id": "some-id",
        "created_at": 1,
        "last_accessed": 1,
        "timeout_ms": None,
        "metadata": {},
    },
    "tuple": ("some-id", 1, 1, None, {}),
}

#: Metadata that exercises every JSON-compatible type at its edges.
RICH_METADATA: dict[str, Any] = {
    "user_id": "user_456",
    "unicode": "h\u00e9llo w\u00f6rld \u2603 \U0001d11e \u4e2d\u6587 "
    "\u0645\u0631\u062d\u0628\u0627",
    "\u043a\u043b\u044e\u0447": "\u0437\u043d\u0430\u0447\u0435\u043d\u0438\u0435",
    "": "empty key",
    "quote\"'\\": "key with quotes",
    "empty": "",
    "nul": "a\x00b",
    "ints": [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1],
    "floats": [0.1, -2.5, 1e300, 5e-324, 1.7976931348623157e308, -0.0, 0.0],
    "bools": [True, False],
    "none": None,
    "nested": {"a": {"b": {"c": [1, {"d": []}, {}, [[]]]}}},
    "mixed": [1, 1.0, True, "1", None, {"1": 1}],
}


class ManagerFactory(Protocol):
    """The ``make_manager`` fixture: open (another) manager over the backend under test.

    Keyword arguments override the defaults: ``backend_opts`` (the test's options),
    ``clock`` (the test's :class:`ManualClock`), and any :class:`SessionManager` keyword such as
    ``read_only`` or ``touch_resolution``. Every manager it opens is closed after the test.
    """

    def __call__(self, **overrides: Any) -> SessionManager: ...


def _session(
    session_id: str,
    now: int,
    *,
    timeout_ms: int | None = 60_000,
    metadata: Mapping[str, Any] | None = None,
    idle: int = 0,
    age: int = 0,
) -> Session:
    """A session last accessed ``idle`` ms before ``now`` and created ``age`` ms before that."""
    last_accessed = now - idle
    return Session(session_id, last_accessed - age, last_accessed, timeout_ms, metadata)


def _ids(manager: SessionManager, *, include_expired: bool = False) -> list[str]:
    return sorted(s.id for s in manager.iter_sessions(include_expired=include_expired))


def _assert_not_found(manager: SessionManager, session_id: str, *operations: str) -> None:
    """Call each of ``operations`` (``fetch``, ``peek`` or ``touch``) on ``session_id`` in turn,
    and check that each raises ``SessionNotFound`` naming that id."""
    for operation in operations:
        with pytest.raises(SessionNotFound) as info:
            getattr(manager, operation)(session_id)
        assert info.value.session_id == session_id, f"{operation}({session_id!r})"


@pytest.mark.sessionkeeper_conformance
class BackendConformance(AtomicConformance):
    """The semantics every backend must share (docs/backends.md), as a test class to subclass.

    A backend's test suite subclasses it, names its entry point and, if the backend needs
    options, says how to build them for one test::

        from sessionkeeper.testing import BackendConformance

        class TestMyBackendConformance(BackendConformance):
            backend = "mybackend"

            def backend_opts(self, tmp_path):
                return {"file_path": str(tmp_path / "sessions.db")}

    Tests that need a capability (persistence, read-only opening, ``atomic``) skip themselves
    when the backend's :class:`~sessionkeeper.backend.Capabilities` do not declare it. The tests of
    concurrent state come from :class:`~sessionkeeper.testing._kit_atomic.AtomicConformance`:
    a backend whose store several processes can open overrides :meth:`shared_store_config` so
    that the atomicity races also run across processes. Every test is marked
    ``sessionkeeper_conformance``; the ``pytest11`` plugin ``sessionkeeper`` registers the marker
    and rewrites the kit's asserts so failures show the values compared.

    Fixtures a subclass may use or override: ``clock`` (a :class:`ManualClock`),
    ``backend_options`` (what :meth:`backend_opts` returned, computed once per test),
    ``make_manager`` (a :class:`ManagerFactory`), ``manager`` (the first manager) and
    ``open_store_again`` (a :class:`ManagerFactory` over the same store, with the options of
    :meth:`reopen_opts`).
    """

    #: The backend's entry-point name in group ``sessionkeeper.backends``.
    backend: ClassVar[str]
    #: Extra :class:`~sessionkeeper.SessionManager` keyword arguments for every manager.
    manager_kwargs: ClassVar[Mapping[str, Any]] = {}
    #: Threads used by the concurrency tests.
    threads: ClassVar[int] = 4
    #: Sessions stored by the "many sessions" test.
    many: ClassVar[int] = 1000
    #: Hypothesis settings of the stateful comparison with a dict model
    #: (:class:`hypothesis.settings` keywords, applied over the active profile).
    stateful_settings: ClassVar[Mapping[str, Any]] = {
        "max_examples": 50,
        "stateful_step_count": 30,
        "deadline": None,
    }

    # --- hooks for the backend author ---------------------------------------------------------

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        """The ``backend_opts`` of a fresh, empty store for one test; ``tmp_path`` is its own.

        Called once per test (and once per example of the stateful test, with a fresh
        directory). Override it; the default is no options.
        """
        return {}

    def reopen_opts(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        """The ``backend_opts`` that reopen the store ``opts`` created (persistence tests).

        The default reuses ``opts`` unchanged.
        """
        return dict(opts)

    def corrupt_stored_session(self, manager: SessionManager, session_id: str) -> None:
        """Back door: damage the stored record of ``session_id`` behind the manager's back.

        A backend that stores encoded records (a file, a database, a peer) overrides this to
        overwrite the record with bytes that do not decode, so the kit can check that damage is
        reported as a :class:`~sessionkeeper.StorageError` and never as "not found". The
        default raises :class:`NotImplementedError`, which skips that test.
        """
        raise NotImplementedError

    # --- fixtures -----------------------------------------------------------------------------

    @pytest.fixture
    def clock(self) -> ManualClock:
        """The clock every manager of the test reads: a :class:`TickingClock` at step 0, which
        moves only when the test says so (as a :class:`ManualClock`) and counts its reads."""
        return TickingClock(step=0)

    @pytest.fixture
    def backend_options(self, tmp_path: Path) -> dict[str, Any]:
        """The test's ``backend_opts``, from :meth:`backend_opts`."""
        return self.backend_opts(tmp_path)

    @pytest.fixture
    def make_manager(
        self, clock: ManualClock, backend_options: dict[str, Any], tmp_path: Path
    ) -> Iterator[ManagerFactory]:
        """Open managers over the backend under test; each is closed after the test."""
        opened: list[SessionManager] = []

        def make(**overrides: Any) -> SessionManager:
            kwargs: dict[str, Any] = {
                "backend": self._backend_name(),
                "backend_opts": backend_options,
                "clock": clock,
                "cleanup_interval": 0,
                "base_dir": tmp_path,
                **self.manager_kwargs,
                **overrides,
            }
            manager = SessionManager(**kwargs)
            opened.append(manager)
            return manager

        yield make
        for manager in reversed(opened):
            manager.close()

    @pytest.fixture
    def manager(self, make_manager: ManagerFactory) -> SessionManager:
        """A manager over a fresh, empty store."""
        return make_manager()

    @pytest.fixture
    def open_store_again(
        self, make_manager: ManagerFactory, backend_options: dict[str, Any]
    ) -> ManagerFactory:
        """Open another manager over the test's store, with the options :meth:`reopen_opts`
        gives (keywords as for ``make_manager``); the persistence tests close ``manager`` first."""

        def open_again(**overrides: Any) -> SessionManager:
            return make_manager(backend_opts=self.reopen_opts(backend_options), **overrides)

        return open_again

    def _backend_name(self) -> str:
        name = getattr(self, "backend", None)
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"{type(self).__name__} must set the class attribute `backend` to the backend's "
                "entry-point name (group sessionkeeper.backends)"
            )
        return name

    # --- round trips ----------------------------------------------------------------------------

    def test_store_then_fetch_returns_every_field_exactly(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A stored session is fetched back with every field equal and of the same type,
        including unicode, nested, big-integer and float metadata."""
        stored = _session("round-trip", clock.now, age=5_000, metadata=RICH_METADATA)
        manager.store(stored)
        assert_same_session(manager.fetch("round-trip"), stored)
        assert_same_session(manager.peek("round-trip"), stored)

    def test_session_without_timeout_round_trips(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A session with ``timeout_ms=None`` is read back with ``timeout_ms`` still ``None``."""
        stored = _session("no-timeout", clock.now, timeout_ms=None, metadata={"k": "v"})
        manager.store(stored)
        assert_same_session(manager.peek("no-timeout"), stored)

    def test_times_at_the_edges_round_trip(self, manager: SessionManager) -> None:
        """Times of 0 and of 2**63-1 ms, and a deadline beyond 2**63, are stored exactly."""
        sessions = [
            Session("epoch", 0, 0, None),
            Session("end-of-time", 2**63 - 1, 2**63 - 1, None),
            Session("huge-timeout", 1, 2**63 - 1, 2**63 - 1),
        ]
        for session in sessions:
            manager.store(session)
        for session in sessions:
            assert_same_session(manager.peek(session.id), session)
        assert manager.cleanup_expired() == 0
        assert manager.count() == 3

    def test_create_stores_a_new_session(self, manager: SessionManager, clock: ManualClock) -> None:
        """``create`` stores a session with a fresh id, created and accessed now, as given."""
        first = manager.create(timeout_ms=300_000, metadata={"user_id": "user_456"})
        second = manager.create(timeout_ms=None)
        assert first.id != second.id
        assert first.created_at == first.last_accessed == clock.now
        assert_same_session(manager.peek(first.id), first)
        assert_same_session(manager.peek(second.id), second)
        assert manager.peek(second.id).timeout_ms is None

    def test_create_uses_the_default_timeout(self, make_manager: ManagerFactory) -> None:
        """A session created without ``timeout_ms`` gets the manager's ``default_timeout``."""
        manager = make_manager(default_timeout=123_456)
        session = manager.create()
        assert manager.peek(session.id).timeout_ms == 123_456

    def test_changing_fetched_metadata_changes_nothing_stored(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """The metadata of a fetched session is a copy: changing it does not change the store."""
        manager.store(_session("copy", clock.now, metadata={"items": [1, 2]}))
        fetched = manager.fetch("copy").metadata
        fetched["items"].append(3)
        fetched["new"] = True
        assert manager.peek("copy").metadata == {"items": [1, 2]}

    # --- not found --------------------------------------------------------------------------------

    def test_fetch_of_unknown_id_raises_session_not_found(self, manager: SessionManager) -> None:
        """Fetching an id that was never stored raises ``SessionNotFound``, also a ``KeyError``,
        naming the id."""
        with pytest.raises(SessionNotFound, match="never-stored") as info:
            manager.fetch("never-stored")
        assert isinstance(info.value, KeyError)
        assert info.value.session_id == "never-stored"

    def test_peek_and_touch_of_unknown_id_raise_session_not_found(
        self, manager: SessionManager
    ) -> None:
        """``peek`` and ``touch`` of an unknown id raise ``SessionNotFound`` and store nothing."""
        _assert_not_found(manager, "never-stored", "peek", "touch")
        assert manager.count() == 0
        assert _ids(manager, include_expired=True) == []

    # --- touching ---------------------------------------------------------------------------------

    def test_peek_does_not_touch(self, manager: SessionManager, clock: ManualClock) -> None:
        """``peek`` leaves ``last_accessed`` where it was, however long ago that was."""
        stored = _session("peeked", clock.now)
        manager.store(stored)
        clock.advance(30_000)
        assert manager.peek("peeked").last_accessed == stored.last_accessed
        assert manager.peek("peeked").last_accessed == stored.last_accessed

    def test_fetch_slides_last_accessed(self, manager: SessionManager, clock: ManualClock) -> None:
        """A fetch after more than the touch resolution returns and stores ``last_accessed=now``."""
        manager.store(_session("slides", clock.now, timeout_ms=None))
        now = clock.advance(manager.config.touch_resolution + 1)
        assert manager.fetch("slides").last_accessed == now
        assert manager.peek("slides").last_accessed == now

    def test_fetch_within_touch_resolution_does_not_write_back(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A fetch that would move ``last_accessed`` by no more than the touch resolution
        writes nothing back (touches are coalesced)."""
        stored = _session("coalesced", clock.now, timeout_ms=None)
        manager.store(stored)
        clock.advance(manager.config.touch_resolution)
        manager.fetch("coalesced")
        assert manager.peek("coalesced").last_accessed == stored.last_accessed

    def test_touch_window_is_at_most_a_tenth_of_the_timeout(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """For a short timeout a fetch writes back once ``last_accessed`` lags by more than a
        tenth of it, even within the touch resolution."""
        resolution = manager.config.touch_resolution
        if resolution < 2:
            pytest.skip("the touch resolution is already below a tenth of any timeout")
        timeout = 5 * resolution
        window = touch_window(resolution, timeout)
        assert window < resolution
        stored = _session("short", clock.now, timeout_ms=timeout)
        manager.store(stored)
        clock.advance(window)
        manager.fetch("short")
        assert manager.peek("short").last_accessed == stored.last_accessed
        now = clock.advance(1)
        manager.fetch("short")
        assert manager.peek("short").last_accessed == now

    def test_regular_fetches_keep_a_session_alive(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A session fetched every nine tenths of its timeout never expires."""
        manager.store(_session("kept", clock.now, timeout_ms=1_000))
        for _ in range(20):
            clock.advance(900)
            assert manager.fetch("kept").id == "kept"
        assert manager.cleanup_expired() == 0
        assert manager.list() == ["kept"]

    def test_touch_moves_last_accessed_to_now(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``touch`` writes ``last_accessed=now`` even within the touch resolution."""
        manager.store(_session("touched", clock.now))
        now = clock.advance(1)
        assert manager.touch("touched").last_accessed == now
        assert manager.peek("touched").last_accessed == now

    def test_touch_never_moves_last_accessed_backwards(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Touching a session whose ``last_accessed`` is ahead of the clock leaves it there."""
        ahead = _session("ahead", clock.now + 10_000)
        manager.store(ahead)
        assert manager.touch("ahead").last_accessed == ahead.last_accessed
        assert manager.fetch("ahead").last_accessed == ahead.last_accessed
        assert_same_session(manager.peek("ahead"), ahead)

    def test_iter_sessions_does_not_touch(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Iterating over the sessions leaves every ``last_accessed`` unchanged."""
        stored = [_session(f"s{i}", clock.now, timeout_ms=None) for i in range(5)]
        for session in stored:
            manager.store(session)
        clock.advance(60_000)
        assert len(list(manager.iter_sessions())) == 5
        for session in stored:
            assert manager.peek(session.id).last_accessed == session.last_accessed

    # --- one instant per operation ---------------------------------------------------------------
    # The kit's clock is a TickingClock at step 0 (a ManualClock that counts its reads). These
    # tests set its step to 1, so that no two reads return the same millisecond: an operation
    # that reads the clock twice then decides at one instant and acts at another.

    def _ticking(self, clock: ManualClock) -> TickingClock:
        if not isinstance(clock, TickingClock):
            pytest.skip(
                f"the clock fixture of {type(self).__name__} is a {type(clock).__name__}, "
                "not a sessionkeeper.testing.TickingClock"
            )
        clock.step = 1
        return clock

    def _accessed_at_one_instant(
        self, manager: SessionManager, clock: ManualClock, operation: str
    ) -> None:
        """A session idle for exactly its timeout, then ``operation`` (``fetch`` or ``touch``)
        on it once the clock ticks: it returns the session, and stores it, accessed at the
        instant the operation read."""
        # Stored while the clock stands still (an atomic backend's store reads it too).
        manager.store(_session("edge", clock.now, timeout_ms=100, idle=100))
        ticking = self._ticking(clock)
        instant = ticking.now
        assert getattr(manager, operation)("edge").last_accessed == instant
        assert manager.peek("edge", include_expired=True).last_accessed == instant

    def test_touch_decides_and_writes_at_one_instant(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``touch`` reads the clock once: a session idle for exactly its timeout at that instant
        is live and is touched to that instant, never to a later one at which it had expired."""
        self._accessed_at_one_instant(manager, clock, "touch")

    def test_fetch_decides_and_writes_at_one_instant(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``fetch`` reads the clock once: the session live at that instant is written back with
        ``last_accessed`` at that instant."""
        self._accessed_at_one_instant(manager, clock, "fetch")

    def test_create_is_created_and_accessed_at_one_instant(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``create`` reads the clock once: ``created_at`` equals ``last_accessed``."""
        ticking = self._ticking(clock)
        instant = ticking.now
        created = manager.create(timeout_ms=100)
        assert created.created_at == created.last_accessed == instant
        assert_same_session(manager.peek(created.id), created)

    def test_each_operation_reads_the_clock_at_most_once(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """No operation of a :class:`SessionManager` reads the clock more than once (one
        instant per decision). Counted on a real manager only: a stand-in that spreads one call
        over several managers is judged by the behaviour tests above."""
        if type(manager) is not SessionManager:
            pytest.skip(f"the manager fixture is a {type(manager).__name__}")
        ticking = self._ticking(clock)
        manager.store(_session("kept", ticking.now, timeout_ms=None))
        created = manager.create(timeout_ms=10)
        operations: dict[str, Callable[[], object]] = {
            "create": lambda: manager.create(timeout_ms=10),
            "store": lambda: manager.store(_session("other", ticking.now)),
            "fetch": lambda: manager.fetch("kept"),
            "peek": lambda: manager.peek("kept"),
            "touch": lambda: manager.touch("kept"),
            "list": manager.list,
            "count": manager.count,
            "iter_sessions": lambda: list(manager.iter_sessions()),
            "cleanup_expired": manager.cleanup_expired,
            "delete": lambda: manager.delete(created.id),
        }
        plugins = {name for name, _ in manager.plugin_manager.list_name_plugin()}
        for name, operation in operations.items():
            before = ticking.reads
            operation()
            reads = ticking.reads - before
            assert reads <= 1, f"{name} read the clock {reads} times (plugins: {plugins})"

    # --- expiry -----------------------------------------------------------------------------------

    def _store_one_expired(self, manager: SessionManager, clock: ManualClock) -> Session:
        """Store ``gone`` (expired once the clock moved) beside ``kept`` (never expires)."""
        gone = _session("gone", clock.now, timeout_ms=1_000)
        manager.store(gone)
        manager.store(_session("kept", clock.now, timeout_ms=None))
        clock.advance(1_001)
        return gone

    def test_expired_session_is_not_fetched_before_cleanup(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``fetch`` raises ``SessionNotFound`` for an expired session that cleanup has not
        removed yet."""
        self._store_one_expired(manager, clock)
        _assert_not_found(manager, "gone", "fetch", "fetch")

    def test_expired_session_is_not_peeked_or_touched_before_cleanup(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``peek`` and ``touch`` raise ``SessionNotFound`` for an expired session, and the
        touch does not bring it back."""
        self._store_one_expired(manager, clock)
        _assert_not_found(manager, "gone", "peek", "touch", "peek")

    def test_expired_session_is_not_listed_or_counted_before_cleanup(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``list``, ``count`` and ``iter_sessions()`` leave out an expired session that cleanup
        has not removed yet."""
        self._store_one_expired(manager, clock)
        assert manager.list() == ["kept"]
        assert manager.count() == 1
        assert _ids(manager) == ["kept"]

    def test_expired_session_stays_stored_until_cleanup(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``iter_sessions(include_expired=True)`` still yields an expired session, unchanged,
        until a cleanup removes it."""
        gone = self._store_one_expired(manager, clock)
        found = {s.id: s for s in manager.iter_sessions(include_expired=True)}
        assert sorted(found) == ["gone", "kept"]
        assert_same_session(found["gone"], gone)

    def test_idle_for_exactly_the_timeout_is_still_live(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A session idle for exactly ``timeout_ms`` is live (expiry is strictly greater)."""
        stored = _session("boundary", clock.now, timeout_ms=5_000)
        manager.store(stored)
        clock.advance(5_000)
        assert_same_session(manager.peek("boundary"), stored)
        assert manager.list() == ["boundary"]
        assert manager.count() == 1
        assert manager.cleanup_expired() == 0
        assert manager.fetch("boundary").last_accessed == clock.now

    def test_idle_one_ms_past_the_timeout_is_expired(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A session idle for ``timeout_ms + 1`` is expired everywhere."""
        manager.store(_session("boundary", clock.now, timeout_ms=5_000))
        clock.advance(5_001)
        _assert_not_found(manager, "boundary", "peek")
        assert manager.list() == []
        assert manager.count() == 0
        _assert_not_found(manager, "boundary", "fetch")
        assert manager.cleanup_expired() == 1

    def test_session_without_timeout_never_expires(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A session with ``timeout_ms=None`` is live after any idle time and no cleanup
        removes it."""
        stored = _session("forever", clock.now, timeout_ms=None)
        manager.store(stored)
        clock.advance(100 * 365 * 24 * 3_600_000)
        assert manager.cleanup_expired() == 0
        assert_same_session(manager.peek("forever"), stored)
        assert manager.list() == ["forever"]
        assert manager.count() == 1

    # --- delete and replace -----------------------------------------------------------------------

    def test_delete_returns_true_then_false(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Deleting a stored session returns ``True``; deleting it again returns ``False``."""
        manager.store(_session("doomed", clock.now))
        assert manager.delete("doomed") is True
        assert manager.delete("doomed") is False
        _assert_not_found(manager, "doomed", "peek")

    def test_delete_of_a_never_stored_id_returns_false(self, manager: SessionManager) -> None:
        """Deleting an id that was never stored is not an error: it returns ``False``."""
        assert manager.delete("never-stored") is False
        assert manager.count() == 0

    def test_delete_leaves_other_sessions(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Deleting one session leaves every other session as stored."""
        others = [_session(f"other-{i}", clock.now, metadata={"i": i}) for i in range(3)]
        for session in [*others, _session("doomed", clock.now)]:
            manager.store(session)
        assert manager.delete("doomed") is True
        for session in others:
            assert_same_session(manager.peek(session.id), session)

    def test_store_replaces(self, manager: SessionManager, clock: ManualClock) -> None:
        """Storing a session with the id of a stored one replaces it entirely."""
        manager.store(_session("same", clock.now, metadata={"version": 1, "old": True}))
        newer = _session("same", clock.now, timeout_ms=None, metadata={"version": 2}, age=7)
        stored = manager.store(newer)
        assert stored.version == 2  # the store counts the writes of one id
        assert_same_session(stored, newer.with_version(2))
        assert_same_session(manager.peek("same"), stored)
        assert manager.count() == 1
        assert _ids(manager, include_expired=True) == ["same"]

    def test_store_many_stores_every_session_and_replaces(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``store_many`` stores a batch as ``store`` would one by one: new ids are inserted,
        stored ones replaced entirely, an id given twice keeps its last session, and it returns
        how many distinct sessions it stored."""
        manager.store(_session("kept", clock.now, metadata={"old": True}))
        manager.store(_session("replaced", clock.now, metadata={"version": 1}))
        batch = [_session(f"batch-{i}", clock.now, metadata={"i": i}) for i in range(300)]
        newer = _session("replaced", clock.now, timeout_ms=None, metadata={"version": 2}, age=5)
        twice = [_session("twice", clock.now, metadata={"n": 1})]
        twice.append(_session("twice", clock.now, metadata={"n": 2}))
        assert manager.store_many([*batch, newer, *twice]) == 302
        for session in [*batch, newer, twice[1]]:
            assert_same_session(manager.peek(session.id), session)
        assert manager.peek("kept").metadata == {"old": True}
        assert manager.count() == 303
        assert manager.store_many([]) == 0
        assert manager.count() == 303

    def test_store_many_with_one_invalid_session_stores_nothing(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A batch holding anything but a ``Session``, or a session whose metadata is over
        ``max_metadata_bytes``, raises ``InvalidSession`` before any session of it is stored."""
        sentinel = self._store_sentinel(manager, clock)
        good = [_session(f"good-{i}", clock.now) for i in range(3)]
        limit = manager.config.max_metadata_bytes
        huge = _session("huge", clock.now, metadata={"blob": "x" * (limit + 1)})
        with pytest.raises(InvalidSession, match="max_metadata_bytes"):
            manager.store_many([*good, huge])
        with pytest.raises(InvalidSession, match="Session"):
            manager.store_many([*good, "not a session"])  # type: ignore[list-item]
        self._assert_only_sentinel(manager, sentinel)

    def test_touch_after_delete_does_not_resurrect(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """After a delete, neither ``touch`` nor a ``fetch`` that would write back brings the
        session back."""
        manager.store(_session("deleted", clock.now, timeout_ms=None))
        assert manager.delete("deleted") is True
        clock.advance(manager.config.touch_resolution + 1)
        _assert_not_found(manager, "deleted", "touch", "fetch")
        assert manager.count() == 0
        assert _ids(manager, include_expired=True) == []

    def test_store_after_delete_stores_again(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A deleted id can be stored again and is then found as newly stored."""
        manager.store(_session("again", clock.now, metadata={"n": 1}))
        manager.delete("again")
        again = _session("again", clock.now, metadata={"n": 2})
        manager.store(again)
        assert_same_session(manager.peek("again"), again)

    # --- the backend's hooks, called directly -------------------------------------------------
    # The manager reads before it touches, so a touch that races a delete, or a touch with an
    # older time, reaches the backend only under concurrency. These tests call the hook itself.

    def test_touch_hook_after_delete_returns_none_and_stores_nothing(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """The backend's ``sessionkeeper_touch`` of a deleted id returns ``None`` and does not
        store the session again."""
        manager.store(_session("deleted", clock.now, timeout_ms=None))
        manager.delete("deleted")
        hook = manager.plugin_manager.hook
        assert hook.sessionkeeper_touch(session_id="deleted", last_accessed=clock.now + 5) is None
        assert hook.sessionkeeper_fetch(session_id="deleted") is None
        assert _ids(manager, include_expired=True) == []

    def test_touch_hook_never_moves_last_accessed_backwards(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """The backend's ``sessionkeeper_touch`` with a time before the stored
        ``last_accessed`` leaves the session unchanged and returns it."""
        stored = _session("s", clock.now, age=100)
        manager.store(stored)
        hook = manager.plugin_manager.hook
        returned = hook.sessionkeeper_touch(session_id="s", last_accessed=clock.now - 50)
        assert_same_session(returned, stored)
        assert_same_session(manager.peek("s"), stored)

    def test_fetch_hook_returns_expired_sessions(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """The backend's ``sessionkeeper_fetch`` returns a stored session even when it has
        expired (the manager applies expiry, so the clock stays in one place)."""
        gone = self._store_one_expired(manager, clock)
        found = manager.plugin_manager.hook.sessionkeeper_fetch(session_id="gone")
        assert_same_session(found, gone)

    # --- cleanup ----------------------------------------------------------------------------------

    def test_cleanup_removes_the_expired_and_returns_how_many(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``cleanup_expired`` removes exactly the expired sessions, returns their number and
        leaves the live ones as stored."""
        for i in range(3):
            manager.store(_session(f"expiring-{i}", clock.now, timeout_ms=1_000 + i))
        live = [
            _session("live-long", clock.now, timeout_ms=60_000),
            _session("live-forever", clock.now, timeout_ms=None),
        ]
        for session in live:
            manager.store(session)
        clock.advance(1_003)
        assert manager.cleanup_expired() == 3
        assert _ids(manager, include_expired=True) == ["live-forever", "live-long"]
        for session in live:
            assert_same_session(manager.peek(session.id), session)
        assert manager.cleanup_expired() == 0

    def test_cleanup_of_an_empty_store_returns_zero(self, manager: SessionManager) -> None:
        """Cleaning up an empty store removes nothing and returns 0."""
        assert manager.cleanup_expired() == 0

    def test_cleanup_after_touches_removes_exactly_the_expired(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Sessions touched after they were stored are kept by cleanup until their new deadline,
        then removed; untouched ones go at their original deadline."""
        start = clock.now
        for i in range(10):
            manager.store(_session(f"s{i}", start, timeout_ms=1_000))
        clock.set(start + 900)
        for i in range(0, 10, 2):
            manager.fetch(f"s{i}")  # 900 ms > a tenth of the timeout: written back
        clock.set(start + 1_500)
        assert manager.cleanup_expired() == 5
        assert sorted(manager.list()) == [f"s{i}" for i in range(0, 10, 2)]
        clock.set(start + 1_900)
        assert manager.cleanup_expired() == 0
        assert manager.count() == 5
        clock.set(start + 1_901)
        assert manager.cleanup_expired() == 5
        assert _ids(manager, include_expired=True) == []

    def test_cleanup_after_replace_uses_the_new_timeout(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Cleanup honours the timeout of the session as last stored, whether the replacement
        lengthened, shortened or removed the timeout."""
        now = clock.now
        for sid, first in [("lengthened", 1_000), ("shortened", 60_000), ("unlimited", 1_000)]:
            manager.store(_session(sid, now, timeout_ms=first))
        manager.store(_session("lengthened", now, timeout_ms=60_000))
        manager.store(_session("shortened", now, timeout_ms=1_000))
        manager.store(_session("unlimited", now, timeout_ms=None))
        manager.store(_session("limited", now, timeout_ms=None))
        manager.store(_session("limited", now, timeout_ms=1_000))
        clock.advance(5_000)
        assert manager.cleanup_expired() == 2
        assert _ids(manager, include_expired=True) == ["lengthened", "unlimited"]

    def test_cleanup_does_not_count_deleted_sessions(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A session deleted before it expired is not counted by a later cleanup."""
        manager.store(_session("deleted", clock.now, timeout_ms=1_000))
        manager.store(_session("expired", clock.now, timeout_ms=1_000))
        manager.delete("deleted")
        clock.advance(2_000)
        assert manager.cleanup_expired() == 1

    def test_cleanup_removes_sessions_stored_already_expired(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A session stored with a ``last_accessed`` long past its timeout is never returned
        and is removed by the next cleanup."""
        manager.store(_session("stale", clock.now, timeout_ms=1_000, idle=50_000))
        _assert_not_found(manager, "stale", "peek")
        assert manager.count() == 0
        assert manager.cleanup_expired() == 1
        assert _ids(manager, include_expired=True) == []

    # --- listing ----------------------------------------------------------------------------------

    def test_empty_store_lists_nothing(self, manager: SessionManager) -> None:
        """A fresh store lists no ids, counts 0 and iterates over nothing."""
        assert manager.list() == []
        assert manager.count() == 0
        assert list(manager.iter_sessions(include_expired=True)) == []

    def test_count_and_list_agree(self, manager: SessionManager, clock: ManualClock) -> None:
        """``count`` equals the number of ids ``list`` returns, each listed once, with live,
        expired, deleted and replaced sessions mixed."""
        for i in range(20):
            manager.store(_session(f"s{i}", clock.now, timeout_ms=(i + 1) * 100))
        manager.store(_session("s3", clock.now, timeout_ms=None))
        manager.delete("s4")
        manager.delete("s15")
        clock.advance(1_000)
        listed = manager.list()
        expected = {"s3"} | {f"s{i}" for i in range(9, 20)} - {"s15"}
        assert len(listed) == len(set(listed)), f"ids listed twice: {sorted(listed)}"
        assert set(listed) == expected
        assert manager.count() == len(expected)
        assert all(type(sid) is str for sid in listed)

    def test_iter_sessions_yields_every_stored_session_once(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``iter_sessions(include_expired=True)`` yields each stored session exactly once, as
        stored; without ``include_expired`` it yields the live ones."""
        stored = {
            f"s{i}": _session(
                f"s{i}", clock.now, timeout_ms=None if i % 3 else 500, metadata={"i": i}
            )
            for i in range(60)
        }
        for session in stored.values():
            manager.store(session)
        clock.advance(501)
        seen = list(manager.iter_sessions(include_expired=True))
        assert sorted(s.id for s in seen) == sorted(stored)
        for session in seen:
            assert_same_session(session, stored[session.id])
        assert _ids(manager) == sorted(sid for sid in stored if int(sid[1:]) % 3)

    # --- ids --------------------------------------------------------------------------------------

    @pytest.mark.parametrize("session_id", EDGE_IDS.values(), ids=EDGE_IDS.keys())
    def test_ids_at_the_edges(
        self, manager: SessionManager, clock: ManualClock, session_id: str
    ) -> None:
        """Every valid id is stored, fetched, listed and deleted under exactly that id."""
        session = _session(session_id, clock.now, metadata={"id": session_id})
        manager.store(session)
        assert_same_session(manager.fetch(session_id), session)
        assert manager.list() == [session_id]
        assert _ids(manager) == [session_id]
        assert manager.delete(session_id) is True
        assert manager.count() == 0

    def test_ids_that_prefix_each_other_stay_distinct(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Ids that are prefixes of one another, or differ only in case, are separate sessions."""
        family = ["a", "ab", "abc", "A", "AB", "a%", "a_"]
        for sid in family:
            manager.store(_session(sid, clock.now, metadata={"id": sid}))
        assert manager.delete("ab") is True
        assert sorted(manager.list()) == sorted(set(family) - {"ab"})
        for sid in set(family) - {"ab"}:
            assert manager.peek(sid).metadata == {"id": sid}

    # --- scale ------------------------------------------------------------------------------------

    def test_many_sessions(self, manager: SessionManager, clock: ManualClock) -> None:
        """A thousand sessions are all stored, counted, listed and found; cleanup removes
        exactly the half that expired."""
        n = self.many
        for i in range(n):
            manager.store(_session(f"many-{i}", clock.now, timeout_ms=1_000 if i % 2 else None))
        assert manager.count() == n
        assert len(set(manager.list())) == n
        for i in range(0, n, 7):
            assert manager.peek(f"many-{i}").id == f"many-{i}"
        clock.advance(1_001)
        assert manager.count() == (n + 1) // 2
        assert manager.cleanup_expired() == n // 2
        assert sorted(manager.list()) == sorted(f"many-{i}" for i in range(0, n, 2))

    # --- concurrency ------------------------------------------------------------------------------

    def test_concurrent_stores_fetches_and_deletes_lose_nothing(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Several threads storing, fetching and deleting their own sessions at once leave
        exactly the sessions each one kept."""
        per_thread = 150

        def work(thread: int) -> None:
            for i in range(per_thread):
                sid = f"t{thread}-{i}"
                manager.store(_session(sid, clock.now, timeout_ms=None, metadata={"t": thread}))
                assert manager.fetch(sid).metadata == {"t": thread}
                if i % 3 == 0:
                    assert manager.delete(sid) is True

        run_threads(self.threads, work)
        expected = {f"t{t}-{i}" for t in range(self.threads) for i in range(per_thread) if i % 3}
        assert set(manager.list()) == expected
        assert manager.count() == len(expected)
        for sid in expected:
            assert manager.peek(sid).metadata == {"t": int(sid[1 : sid.index("-")])}

    def test_concurrent_writers_of_the_same_ids_leave_one_whole_version(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """When threads replace the same sessions at once, each id ends up holding one
        thread's version, whole."""
        shared = [f"shared-{i}" for i in range(20)]

        def work(thread: int) -> None:
            for _ in range(10):
                for sid in shared:
                    manager.store(
                        _session(sid, clock.now, timeout_ms=None, metadata={"t": thread, "id": sid})
                    )
                    manager.fetch(sid)

        run_threads(self.threads, work)
        assert sorted(manager.list()) == sorted(shared)
        for sid in shared:
            metadata = manager.peek(sid).metadata
            assert metadata["id"] == sid
            assert metadata["t"] in range(self.threads)

    def test_concurrent_fetches_never_resurrect_a_deleted_session(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """While threads keep fetching a session (each fetch writing back), a delete removes it
        for good: once a thread sees it gone, it stays gone."""
        resolution = manager.config.touch_resolution
        manager.store(_session("contested", clock.now, timeout_ms=None))
        fetched = threading.Semaphore(0)
        threads = max(self.threads, 2)
        readers = threads - 1

        def work(thread: int) -> None:
            if thread == readers:  # the deleter: wait until every reader has fetched a few times
                for _ in range(readers * 20):
                    assert fetched.acquire(timeout=HANG_S), "readers stopped fetching"
                assert manager.delete("contested") is True
                return
            gone = False
            for _ in range(200):
                clock.advance(resolution + 1)
                try:
                    manager.fetch("contested")
                except SessionNotFound:
                    gone = True
                else:
                    assert not gone, "a deleted session came back"
                fetched.release()

        run_threads(threads, work)
        _assert_not_found(manager, "contested", "peek")
        assert _ids(manager, include_expired=True) == []
        assert manager.count() == 0

    # --- invalid input ----------------------------------------------------------------------------

    def _store_sentinel(self, manager: SessionManager, clock: ManualClock) -> Session:
        sentinel = _session("sentinel", clock.now, metadata={"keep": "me"})
        manager.store(sentinel)
        return sentinel

    def _assert_only_sentinel(self, manager: SessionManager, sentinel: Session) -> None:
        assert manager.list() == ["sentinel"]
        assert manager.count() == 1
        assert_same_session(manager.peek("sentinel"), sentinel)

    @pytest.mark.parametrize("operation", ["fetch", "peek", "touch", "delete"])
    @pytest.mark.parametrize("bad_id", BAD_IDS.values(), ids=BAD_IDS.keys())
    def test_invalid_ids_are_rejected(
        self, manager: SessionManager, clock: ManualClock, operation: str, bad_id: Any
    ) -> None:
        """An id that breaks the id rules raises ``InvalidSession`` naming the id field, and
        changes nothing stored."""
        sentinel = self._store_sentinel(manager, clock)
        with pytest.raises(InvalidSession, match="invalid session id") as info:
            getattr(manager, operation)(bad_id)
        assert info.value.field == "id"
        self._assert_only_sentinel(manager, sentinel)

    @pytest.mark.parametrize("value", NOT_SESSIONS.values(), ids=NOT_SESSIONS.keys())
    def test_store_of_a_non_session_is_rejected(
        self, manager: SessionManager, clock: ManualClock, value: Any
    ) -> None:
        """``store`` of anything but a ``Session`` raises ``InvalidSession`` and changes nothing."""
        sentinel = self._store_sentinel(manager, clock)
        with pytest.raises(InvalidSession, match="Session"):
            manager.store(value)
        self._assert_only_sentinel(manager, sentinel)

    def test_store_of_oversized_metadata_is_rejected(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Metadata over ``max_metadata_bytes`` raises ``InvalidSession`` naming the limit, and
        neither stores the session nor replaces the one with its id."""
        sentinel = self._store_sentinel(manager, clock)
        limit = manager.config.max_metadata_bytes
        huge = {"blob": "x" * (limit + 1)}
        with pytest.raises(InvalidSession, match="max_metadata_bytes"):
            manager.store(_session("huge", clock.now, metadata=huge))
        with pytest.raises(InvalidSession, match="max_metadata_bytes"):
            manager.store(sentinel.replace(metadata=huge))
        with pytest.raises(InvalidSession, match="max_metadata_bytes"):
            manager.create(metadata=huge)
        self._assert_only_sentinel(manager, sentinel)

    @pytest.mark.parametrize(
        ("timeout_ms", "metadata"),
        [
            (0, None),
            (-1, None),
            (1.5, None),
            ("60000", None),
            (1_000, {1: "int key"}),
            (1_000, {"f": float("nan")}),
            (1_000, {"s": {1, 2}}),
            (1_000, ["not", "a", "dict"]),
        ],
        ids=[
            "zero-timeout",
            "negative-timeout",
            "float-timeout",
            "str-timeout",
            "int-key",
            "nan",
            "set-value",
            "list-metadata",
        ],
    )
    def test_create_with_invalid_fields_is_rejected(
        self, manager: SessionManager, clock: ManualClock, timeout_ms: Any, metadata: Any
    ) -> None:
        """``create`` with a bad timeout or non-JSON metadata raises ``InvalidSession`` and
        stores nothing."""
        sentinel = self._store_sentinel(manager, clock)
        with pytest.raises(InvalidSession):
            manager.create(timeout_ms=timeout_ms, metadata=metadata)
        self._assert_only_sentinel(manager, sentinel)

    # --- lifecycle --------------------------------------------------------------------------------

    def test_close_is_idempotent(self, manager: SessionManager, clock: ManualClock) -> None:
        """Closing a manager twice is not an error, and a closed manager refuses operations."""
        manager.store(_session("s", clock.now))
        manager.close()
        manager.close()
        assert manager.closed
        with pytest.raises(SessionKeeperError):
            manager.peek("s")

    def test_stats_are_json_compatible(self, manager: SessionManager, clock: ManualClock) -> None:
        """``stats()`` names the backend, counts the live sessions and is JSON-compatible."""
        manager.store(_session("s", clock.now))
        stats = manager.stats()
        assert stats["backend"] == self._backend_name()
        assert stats["live_sessions"] == 1
        assert json.loads(json.dumps(stats)) == stats

    # --- capabilities -----------------------------------------------------------------------------

    def _require(self, manager: SessionManager, capability: str) -> None:
        if not getattr(manager.capabilities, capability):
            pytest.skip(f"the {manager.backend_name} backend does not declare {capability}")

    def test_identity_names_one_store_the_same_way(
        self, manager: SessionManager, open_store_again: ManagerFactory
    ) -> None:
        """``identity()`` (hook ``sessionkeeper_identity``) gives the same answer at every call:
        ``None`` when the backend cannot tell, else a string prefixed with the backend's name
        that, for a persistent backend, is the same after close and reopen."""
        if getattr(manager, "identity", None) is None:
            pytest.skip(f"the manager fixture is a {type(manager).__name__} without identity()")
        first = manager.identity()
        assert manager.identity() == first
        if first is None:
            return
        assert isinstance(first, str)
        assert first.startswith(manager.backend_name), first
        if manager.capabilities.persistent:
            manager.close()
            assert open_store_again().identity() == first

    def test_sessions_survive_close_and_reopen(
        self, manager: SessionManager, clock: ManualClock, open_store_again: ManagerFactory
    ) -> None:
        """A persistent backend gives back, after close and reopen, every session as last
        stored or touched."""
        self._require(manager, "persistent")
        stored = [
            _session("rich", clock.now, metadata=RICH_METADATA, age=10),
            _session("forever", clock.now, timeout_ms=None),
            _session("touched", clock.now),
            *(_session(f"s{i}", clock.now, metadata={"i": i}) for i in range(50)),
        ]
        for session in stored:
            manager.store(session)
        now = clock.advance(5_000)
        manager.fetch("touched")
        expected = {s.id: s for s in stored} | {"touched": stored[2].touched(now)}
        manager.close()
        reopened = open_store_again()
        assert reopened.count() == len(expected)
        for session in expected.values():
            assert_same_session(reopened.peek(session.id), session)

    def test_deletes_and_cleanups_survive_reopen(
        self, manager: SessionManager, clock: ManualClock, open_store_again: ManagerFactory
    ) -> None:
        """A persistent backend does not bring back, after reopen, sessions that were deleted,
        replaced or removed by cleanup."""
        self._require(manager, "persistent")
        manager.store(_session("kept", clock.now, timeout_ms=None))
        manager.store(_session("deleted", clock.now, timeout_ms=None))
        manager.store(_session("expired", clock.now, timeout_ms=1_000))
        manager.store(_session("replaced", clock.now, metadata={"version": 1}))
        replacement = manager.store(_session("replaced", clock.now, metadata={"version": 2}))
        manager.delete("deleted")
        clock.advance(1_001)
        assert manager.cleanup_expired() == 1
        manager.close()
        reopened = open_store_again()
        assert _ids(reopened, include_expired=True) == ["kept", "replaced"]
        assert_same_session(reopened.peek("replaced"), replacement)

    def test_expired_sessions_stay_expired_after_reopen(
        self, manager: SessionManager, clock: ManualClock, open_store_again: ManagerFactory
    ) -> None:
        """A session that expired before a persistent store was closed is not returned after
        reopen, and a cleanup then removes it."""
        self._require(manager, "persistent")
        manager.store(_session("expiring", clock.now, timeout_ms=1_000))
        clock.advance(1_001)
        manager.close()
        reopened = open_store_again()
        _assert_not_found(reopened, "expiring", "fetch")
        assert reopened.count() == 0
        assert reopened.cleanup_expired() == 1

    def test_read_only_open_reads_and_refuses_writes(
        self, manager: SessionManager, clock: ManualClock, open_store_again: ManagerFactory
    ) -> None:
        """A backend that declares ``read_only_open`` can be opened read-only beside its owner:
        it reads what was stored and refuses writes with a ``StorageError`` naming the backend."""
        self._require(manager, "read_only_open")
        stored = _session("inspected", clock.now, metadata={"k": "v"})
        manager.store(stored)
        owner = manager
        if manager.capabilities.persistent:  # make sure the store is on disk
            manager.close()
            owner = open_store_again()
        reader = open_store_again(read_only=True)
        assert_same_session(reader.peek("inspected"), stored)
        assert reader.list() == ["inspected"]
        assert reader.count() == 1
        for write in (
            lambda: reader.store(_session("intruder", clock.now)),
            lambda: reader.delete("inspected"),
        ):
            with pytest.raises(StorageError) as info:
                write()
            assert info.value.backend == reader.backend_name
        assert owner.list() == ["inspected"]
        assert_same_session(owner.peek("inspected"), stored)

    def test_damaged_record_raises_storage_error_not_not_found(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A stored record that no longer decodes makes ``fetch`` and ``peek`` raise a
        ``StorageError`` naming the backend (never ``SessionNotFound``), and leaves every other
        session readable."""
        intact = _session("intact", clock.now, metadata={"k": "v"})
        manager.store(intact)
        manager.store(_session("damaged", clock.now))
        try:
            self.corrupt_stored_session(manager, "damaged")
        except NotImplementedError:
            pytest.skip(f"{type(self).__name__} does not implement corrupt_stored_session")
        for read in (manager.fetch, manager.peek):
            with pytest.raises(StorageError) as info:
                read("damaged")
            assert not isinstance(info.value, SessionNotFound)
            assert info.value.backend == manager.backend_name
        assert_same_session(manager.peek("intact"), intact)

    # --- the model ----------------------------------------------------------------------------

    def test_matches_a_dict_model(self, tmp_path: Path) -> None:
        """Random sequences of store, fetch, peek, touch, delete, list, count, clock moves and
        cleanup leave the backend agreeing with a plain dict model after every step."""
        pytest.importorskip("hypothesis", reason="the stateful test needs hypothesis")
        from ._stateful import run_backend_state_machine

        counter = itertools.count()
        name = self._backend_name()

        def open_manager(clock: ManualClock) -> SessionManager:
            directory = tmp_path / f"example-{next(counter)}"
            directory.mkdir()
            kwargs: dict[str, Any] = {
                "backend": name,
                "backend_opts": self.backend_opts(directory),
                "clock": clock,
                "cleanup_interval": 0,
                "base_dir": directory,
                **self.manager_kwargs,
            }
            return SessionManager(**kwargs)

        run_backend_state_machine(open_manager, self.stateful_settings)
