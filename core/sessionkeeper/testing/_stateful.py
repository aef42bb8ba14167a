"""The model-based test: a backend and a plain ``dict`` driven side by side by Hypothesis."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from sessionkeeper import (
    Session,
    SessionManager,
    SessionNotFound,
    Unsupported,
    VersionConflict,
)

from ._clock import ManualClock
from ._rules import VISIBLE_ASCII, assert_same_session, fetch_writes_back

__all__ = ["BackendStateMachine", "run_backend_state_machine"]

#: A few ids that every rule draws often, so operations meet the same sessions.
_POOL = ("a", "b", "ab", "A", "\"'\\%_*?", "x" * 256)

_pool_ids = st.sampled_from(_POOL)
ids = st.one_of(
    _pool_ids,
    _pool_ids,
    _pool_ids,
    st.text(alphabet=VISIBLE_ASCII, min_size=1, max_size=6),
)
timeouts = st.one_of(
    st.none(),
    st.sampled_from([1, 9, 10, 11, 100, 1_000, 2_000, 5_000]),
    st.integers(min_value=1, max_value=20_000),
)
#: Clock moves: 0, around a tenth of the timeouts, around the touch resolution, past timeouts.
steps = st.one_of(
    st.sampled_from([0, 1, 9, 10, 11, 99, 100, 101, 999, 1_000, 1_001, 2_000, 2_001, 5_001]),
    st.integers(min_value=0, max_value=30_000),
)
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
#: Absolute timeouts: mostly none, else around the clock moves.
absolute_timeouts = st.one_of(
    st.none(),
    st.none(),
    st.sampled_from([1, 100, 1_000, 5_000]),
    st.integers(min_value=1, max_value=40_000),
)
#: A few owners, so that owners hold several sessions.
owners = st.sampled_from([None, None, "alice", "bob", "\u00e9ve"])
metadatas = st.dictionaries(
    st.text(max_size=6),
    st.recursive(
        _leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(st.text(max_size=4), children, max_size=3),
        ),
        max_leaves=6,
    ),
    max_size=3,
)


class BackendStateMachine(RuleBasedStateMachine):
    """Drives a :class:`~sessionkeeper.SessionManager` and a ``dict`` model side by side.

    The model holds every stored session (expired ones too, until a cleanup) and applies the
    shared rules themselves: expiry is ``now - last_accessed > timeout_ms`` or ``now -
    created_at > absolute_timeout_ms``, a fetch writes ``last_accessed`` back only beyond the
    touch window, ``touch`` always writes, and nothing moves ``last_accessed`` backwards. It
    counts versions (every accepted ``store`` gives the live version + 1, ``store_many`` writes
    them as given) and answers ``list``/``count`` by owner. On a backend that declares
    ``atomic`` it also drives conditional stores, ``update``, ``take``, ``rotate`` and
    ``delete_owner``; elsewhere it checks that they are refused. After every step the backend
    must hold exactly what the model holds.

    :param open_manager: opens a manager over a fresh, empty store that reads the given clock.
    """

    def __init__(self, open_manager: Callable[[ManualClock], SessionManager]) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.manager = open_manager(self.clock)
        self.resolution = self.manager.config.touch_resolution
        self.atomic = self.manager.capabilities.atomic
        self.model: dict[str, Session] = {}

    def teardown(self) -> None:
        self.manager.close()

    # --- helpers ------------------------------------------------------------------------------

    def _pick(self, data: st.DataObject) -> str:
        """An id: mostly one the model holds, else one from the shared pool or a new one."""
        if self.model:
            # Insertion order, not sorted: ids from create() are random, and sorting them would
            # map the same draw to another session on replay (FlakyStrategyDefinition).
            known = st.sampled_from(list(self.model))
            return data.draw(st.one_of(known, known, known, ids), label="session_id")
        return data.draw(ids, label="session_id")

    def _live(self, session_id: str) -> Session | None:
        session = self.model.get(session_id)
        if session is None or session.is_expired(self.clock.now):
            return None
        return session

    def _unsupported(self, call: Callable[[], object]) -> bool:
        """Whether the backend lacks ``atomic``: then ``call`` (an atomic operation) raises
        :class:`~sessionkeeper.Unsupported`, checked here."""
        if self.atomic:
            return False
        with pytest.raises(Unsupported):
            call()
        return True

    def _proceeds(self, call: Callable[[], object], expected: Session | None) -> Session | None:
        """``expected``, the live session, when ``call`` (an atomic operation on its id) is to
        succeed; else ``None``, once ``call`` was checked to fail: with
        :class:`~sessionkeeper.Unsupported` without ``atomic``, with
        :class:`~sessionkeeper.SessionNotFound` when no session is live."""
        if self._unsupported(call):
            return None
        if expected is None:
            with pytest.raises(SessionNotFound):
                call()
        return expected

    def _live_ids(self, owner: str | None = None) -> set[str]:
        now = self.clock.now
        return {
            sid
            for sid, session in self.model.items()
            if not session.is_expired(now) and (owner is None or session.owner == owner)
        }

    def _live_version(self, session_id: str) -> int:
        live = self._live(session_id)
        return 0 if live is None else live.version

    # --- rules --------------------------------------------------------------------------------

    @initialize(
        sessions=st.lists(st.tuples(_pool_ids, timeouts, metadatas), max_size=len(_POOL)),
    )
    def store_some(self, sessions: list[tuple[str, int | None, dict[str, Any]]]) -> None:
        """Start from a few stored sessions, last accessed now."""
        now = self.clock.now
        for session_id, timeout_ms, metadata in sessions:
            session = Session(session_id, now, now, timeout_ms, metadata)
            expected = session.with_version(self._live_version(session_id) + 1)
            assert_same_session(self.manager.store(session), expected)
            self.model[session_id] = expected

    @rule(
        data=st.data(),
        timeout_ms=timeouts,
        metadata=metadatas,
        idle=st.one_of(st.just(0), st.integers(min_value=0, max_value=25_000)),
        age=st.integers(min_value=0, max_value=1_000),
        owner=owners,
        absolute=absolute_timeouts,
        as_data=st.booleans(),
        # Not up to 2**63-1: a write of a session at the largest version would overflow it
        # (an open question for every backend; see the issue 14 report).
        version=st.integers(min_value=1, max_value=2**62),
    )
    def store(
        self,
        data: st.DataObject,
        timeout_ms: int | None,
        metadata: dict[str, Any],
        idle: int,
        age: int,
        owner: str | None,
        absolute: int | None,
        as_data: bool,
        version: int,
    ) -> None:
        """Store a new session, or replace one, last accessed ``idle`` ms ago: with ``store``
        (the version counted: the live one + 1) or with ``store_many`` (the version as given,
        what import and migrate do)."""
        last_accessed = self.clock.now - idle
        session = Session(
            self._pick(data),
            last_accessed - age,
            last_accessed,
            timeout_ms,
            metadata,
            version=version,
            owner=owner,
            absolute_timeout_ms=absolute,
        )
        if as_data:
            assert self.manager.store_many([session]) == 1
            self.model[session.id] = session
            return
        expected = session.with_version(self._live_version(session.id) + 1)
        stored = self.manager.store(session)
        assert_same_session(stored, expected)
        assert stored.version == expected.version
        self.model[session.id] = expected

    @rule(timeout_ms=timeouts, metadata=metadatas, owner=owners, absolute=absolute_timeouts)
    def create(
        self,
        timeout_ms: int | None,
        metadata: dict[str, Any],
        owner: str | None,
        absolute: int | None,
    ) -> None:
        """Create a session: a new id, created and accessed now, version 1."""
        session = self.manager.create(
            timeout_ms=timeout_ms, metadata=metadata, owner=owner, absolute_timeout_ms=absolute
        )
        assert session.id not in self.model, f"create reused the id {session.id!r}"
        assert session.created_at == session.last_accessed == self.clock.now
        assert (session.version, session.owner, session.absolute_timeout_ms) == (
            1,
            owner,
            absolute,
        )
        self.model[session.id] = session

    @rule(data=st.data())
    def fetch(self, data: st.DataObject) -> None:
        """Fetch: the live session, written back beyond the touch window; else not found."""
        session_id = self._pick(data)
        expected = self._live(session_id)
        if expected is None:
            with pytest.raises(SessionNotFound):
                self.manager.fetch(session_id)
            return
        now = self.clock.now
        if fetch_writes_back(expected, now, self.resolution):
            expected = self.model[session_id] = expected.touched(now)
        assert_same_session(self.manager.fetch(session_id), expected)

    @rule(data=st.data())
    def peek(self, data: st.DataObject) -> None:
        """Peek: the live session as stored; else not found."""
        session_id = self._pick(data)
        expected = self._live(session_id)
        if expected is None:
            with pytest.raises(SessionNotFound):
                self.manager.peek(session_id)
            return
        assert_same_session(self.manager.peek(session_id), expected)

    @rule(data=st.data())
    def touch(self, data: st.DataObject) -> None:
        """Touch: a live session moves to now (never back); else not found."""
        session_id = self._pick(data)
        expected = self._live(session_id)
        if expected is None:
            with pytest.raises(SessionNotFound):
                self.manager.touch(session_id)
            return
        expected = self.model[session_id] = expected.touched(self.clock.now)
        assert_same_session(self.manager.touch(session_id), expected)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        """Delete: True when a session (live or expired) was stored."""
        session_id = self._pick(data)
        was_stored = self.model.pop(session_id, None) is not None
        assert self.manager.delete(session_id) is was_stored

    @rule()
    def list_ids(self) -> None:
        """List: each live id once."""
        listed = self.manager.list()
        assert len(listed) == len(set(listed)), f"list() repeats ids: {sorted(listed)}"
        assert set(listed) == self._live_ids()

    @rule()
    def count(self) -> None:
        """Count: the live sessions."""
        assert self.manager.count() == len(self._live_ids())

    @rule(owner=owners.filter(lambda owner: owner is not None))
    def by_owner(self, owner: str) -> None:
        """List and count by owner: each of the owner's live ids once."""
        listed = self.manager.list(owner=owner)
        assert len(listed) == len(set(listed)), f"list(owner=) repeats ids: {sorted(listed)}"
        assert set(listed) == self._live_ids(owner)
        assert self.manager.count(owner=owner) == len(self._live_ids(owner))

    # --- the atomic operations ------------------------------------------------------------------

    @rule(data=st.data(), metadata=metadatas, choice=st.sampled_from(["right", "absent", "wrong"]))
    def conditional_store(self, data: st.DataObject, metadata: dict[str, Any], choice: str) -> None:
        """store(if_version=): written only if the live version matches (0: none live); a
        conflict names the live version and writes nothing."""
        session_id = self._pick(data)
        now = self.clock.now
        current = self._live_version(session_id)
        if_version = {"right": current, "absent": 0, "wrong": current + 1}[choice]
        session = Session(session_id, now, now, None, metadata)
        if self._unsupported(lambda: self.manager.store(session, if_version=if_version)):
            return
        if if_version != current:
            with pytest.raises(VersionConflict) as info:
                self.manager.store(session, if_version=if_version)
            assert (info.value.expected, info.value.actual) == (if_version, current)
            return
        stored = self.manager.store(session, if_version=if_version)
        self.model[session_id] = session.with_version(current + 1)
        assert_same_session(stored, self.model[session_id])

    @rule(data=st.data(), add=st.integers(min_value=-3, max_value=3))
    def update(self, data: st.DataObject, add: int) -> None:
        """update: the live session's metadata changed by fn, accessed now, version + 1; fn
        never called on an expired or missing session."""
        session_id = self._pick(data)
        expected = self._live(session_id)
        calls: list[dict[str, Any]] = []

        def change(metadata: dict[str, Any]) -> dict[str, Any]:
            calls.append(metadata)
            return {**metadata, "_n": add}

        expected = self._proceeds(lambda: self.manager.update(session_id, change), expected)
        if expected is None:
            assert calls == [], "update called fn on a session that is not live"
            return
        now = self.clock.now
        updated = self.manager.update(session_id, change)
        assert calls == [expected.metadata]
        self.model[session_id] = expected.replace(
            metadata={**expected.metadata, "_n": add},
            last_accessed=max(now, expected.last_accessed),
            version=expected.version + 1,
        )
        assert_same_session(updated, self.model[session_id])

    @rule(data=st.data())
    def take(self, data: st.DataObject) -> None:
        """take: the live session, removed; an expired one removed and not returned."""
        session_id = self._pick(data)
        expected = self._proceeds(lambda: self.manager.take(session_id), self._live(session_id))
        if expected is None:
            if self.atomic:  # none live: an expired one is removed
                self.model.pop(session_id, None)
            return
        assert_same_session(self.manager.take(session_id), expected)
        del self.model[session_id]

    @rule(data=st.data())
    def rotate(self, data: st.DataObject) -> None:
        """rotate: the live session under a new id, version + 1, accessed now."""
        session_id = self._pick(data)
        expected = self._proceeds(lambda: self.manager.rotate(session_id), self._live(session_id))
        if expected is None:
            return
        rotated = self.manager.rotate(session_id)
        assert rotated.id not in self.model, f"rotate reused the id {rotated.id!r}"
        del self.model[session_id]
        self.model[rotated.id] = expected.replace(
            id=rotated.id,
            last_accessed=max(self.clock.now, expected.last_accessed),
            version=expected.version + 1,
        )
        assert_same_session(rotated, self.model[rotated.id])

    @rule(owner=owners.filter(lambda owner: owner is not None))
    def delete_owner(self, owner: str) -> None:
        """delete_owner: every session of the owner, expired ones included, counted."""
        if self._unsupported(lambda: self.manager.delete_owner(owner)):
            return
        doomed = [sid for sid, session in self.model.items() if session.owner == owner]
        assert self.manager.delete_owner(owner) == len(doomed)
        for sid in doomed:
            del self.model[sid]

    @rule(include_expired=st.booleans())
    def iter_sessions(self, include_expired: bool) -> None:
        """Iterate: every stored (or every live) session once, as stored."""
        now = self.clock.now
        expected = {
            sid: session
            for sid, session in self.model.items()
            if include_expired or not session.is_expired(now)
        }
        seen = list(self.manager.iter_sessions(include_expired=include_expired))
        assert sorted(s.id for s in seen) == sorted(expected)
        for session in seen:
            assert_same_session(session, expected[session.id])

    @rule(ms=steps)
    def advance_clock(self, ms: int) -> None:
        """Move the clock forward."""
        self.clock.advance(ms)

    @rule()
    def cleanup(self) -> None:
        """Cleanup: removes and counts exactly the expired sessions."""
        now = self.clock.now
        expired = [sid for sid, session in self.model.items() if session.is_expired(now)]
        assert self.manager.cleanup_expired() == len(expired)
        for sid in expired:
            del self.model[sid]

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def backend_holds_what_the_model_holds(self) -> None:
        """The backend stores exactly the model's sessions and counts its live ones."""
        stored = list(self.manager.iter_sessions(include_expired=True))
        ids_stored = sorted(s.id for s in stored)
        assert ids_stored == sorted(self.model), (
            f"stored ids {ids_stored} differ from the model's {sorted(self.model)}"
        )
        for session in stored:
            assert_same_session(session, self.model[session.id])
        assert self.manager.count() == len(self._live_ids())


def run_backend_state_machine(
    open_manager: Callable[[ManualClock], SessionManager],
    settings_kwargs: Mapping[str, Any],
) -> None:
    """Run :class:`BackendStateMachine` as a test, each example on a manager from
    ``open_manager``, with :class:`hypothesis.settings` built from ``settings_kwargs`` over the
    active profile."""

    def factory() -> BackendStateMachine:
        return BackendStateMachine(open_manager)

    # Hypothesis accepts any zero-argument factory (its docstring); its annotation says a class.
    run_state_machine_as_test(
        cast("type[RuleBasedStateMachine]", factory), settings=settings(**settings_kwargs)
    )
