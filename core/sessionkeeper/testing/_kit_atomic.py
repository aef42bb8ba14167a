"""The conformance tests of concurrent state (issue 14): versions, owners, the absolute timeout,
and the atomic operations with their races.

:class:`AtomicConformance` is a base of :class:`~sessionkeeper.testing.BackendConformance`, so
every backend's suite runs these. The owner, version and absolute-timeout semantics apply to
every backend. The atomic operations run on a backend that declares ``atomic``; on one that does
not, the kit checks instead that the manager refuses them with
:class:`~sessionkeeper.Unsupported` and writes nothing. The races run with threads sharing one
manager and, when :meth:`AtomicConformance.shared_store_config` says how, with separate
processes on one store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

import pytest

from sessionkeeper import (
    InvalidSession,
    Session,
    SessionManager,
    SessionNotFound,
    Unsupported,
    VersionConflict,
)

from ._clock import ManualClock
from ._races import (
    race_delete_owner_with_creates,
    race_inserts_if_absent,
    race_rotate_with_fetches,
    race_takes,
    race_updates,
)
from ._rules import assert_same_session

__all__ = ["ATOMIC_ONLY", "AtomicConformance"]

F = TypeVar("F", bound=Callable[..., Any])


def _session(session_id: str, now: int, **fields: Any) -> Session:
    timeout = fields.pop("timeout_ms", None)
    metadata = fields.pop("metadata", None)
    return Session(session_id, now, now, timeout, metadata, **fields)


def _needs_atomic(test: F) -> F:
    """Mark a kit test that runs only on a backend declaring ``atomic`` (it skips elsewhere):
    :data:`ATOMIC_ONLY` lists them."""
    test.kit_needs_atomic = True  # type: ignore[attr-defined]
    return test


def _gone(manager: SessionManager, session_id: str) -> bool:
    try:
        manager.peek(session_id, include_expired=True)
    except SessionNotFound:
        return True
    return False


class AtomicConformance:
    """Versions, owners, the absolute timeout and the atomic operations (see the module)."""

    #: Workers of each race (threads, and processes where the store allows them).
    race_workers: ClassVar[int] = 4
    #: ``update``s per worker in the counter race.
    race_updates: ClassVar[int] = 50
    #: Rounds of each one-winner race (take, insert-if-absent, rotate).
    race_rounds: ClassVar[int] = 20
    #: ``update``s per process in the multi-process counter race (each process starts an
    #: interpreter, so fewer rounds are run there).
    process_updates: ClassVar[int] = 25

    def shared_store_config(self, backend_opts: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The ``backend_opts`` (JSON-compatible) with which another *process* opens the store
        that ``backend_opts`` opened in this one, or ``None`` (the default) when several
        processes cannot use one store: then the multi-process races are skipped. A backend
        that is ``shared`` (a server, a file in shared mode) overrides it; the kit runs each
        worker as ``python -m sessionkeeper.testing._worker`` with this mapping."""
        return None

    if TYPE_CHECKING:

        def _backend_name(self) -> str: ...

    # --- helpers ----------------------------------------------------------------------------

    def _atomic(self, manager: SessionManager) -> None:
        if not manager.capabilities.atomic:
            pytest.skip(f"the {manager.backend_name} backend does not declare atomic")

    def _store_for_processes(
        self, manager: SessionManager, backend_options: Mapping[str, Any], tmp_path: Path
    ) -> dict[str, Any]:
        self._atomic(manager)
        opts = self.shared_store_config(backend_options)
        if opts is None:
            pytest.skip(f"{type(self).__name__} does not say how processes share a store")
        return {
            "backend": self._backend_name(),
            "backend_opts": dict(opts),
            "base_dir": str(tmp_path),
        }

    # --- every backend: the new fields ------------------------------------------------------

    def test_versions_owners_and_absolute_timeouts_round_trip(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``store_many`` (what import and migrate use) writes sessions exactly as given,
        version, owner and absolute timeout included; ``store`` returns the session with the
        version the store counted (1 for a new id, then one more per write)."""
        carried = _session(
            "carried", clock.now, version=41, owner="user_456", absolute_timeout_ms=10**9
        )
        assert manager.store_many([carried]) == 1
        assert_same_session(manager.peek("carried"), carried)
        assert manager.peek("carried").version == 41
        assert manager.peek("carried").owner == "user_456"
        assert manager.peek("carried").absolute_timeout_ms == 10**9
        first = manager.store(_session("counted", clock.now, version=7))
        assert first.version == 1
        second = manager.store(_session("counted", clock.now, metadata={"k": 2}))
        assert second.version == 2
        assert manager.peek("counted").version == 2
        assert manager.create(owner="o").version == 1

    def test_absolute_timeout_expires_a_session_whatever_the_activity(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """A session past ``created_at + absolute_timeout_ms`` is not fetched, peeked, touched,
        listed or counted however recently it was used, and cleanup removes it; equal is still
        live."""
        start = clock.now
        session = manager.create(timeout_ms=60_000, absolute_timeout_ms=5_000, owner="abs")
        kept = manager.create(timeout_ms=None, owner="abs")
        for _ in range(5):
            clock.advance(1_000)
            manager.touch(session.id)
        assert clock.now == start + 5_000
        assert manager.fetch(session.id).id == session.id
        clock.advance(1)
        for read in (manager.fetch, manager.peek, manager.touch):
            with pytest.raises(SessionNotFound):
                read(session.id)
        assert manager.list() == [kept.id]
        assert manager.count() == 1
        assert manager.list(owner="abs") == [kept.id]
        assert manager.count(owner="abs") == 1
        assert manager.cleanup_expired() == 1
        assert _gone(manager, session.id)

    def test_list_and_count_by_owner(self, manager: SessionManager, clock: ManualClock) -> None:
        """``list(owner=)`` and ``count(owner=)`` give exactly the owner's live sessions, after
        stores, replacements that change the owner, deletes, expiry and cleanup; an invalid
        owner is ``InvalidSession``."""
        alice = [manager.create(timeout_ms=None, owner="alice") for _ in range(3)]
        bob = manager.create(timeout_ms=1_000, owner="bob")
        manager.create(timeout_ms=None)
        assert sorted(manager.list(owner="alice")) == sorted(s.id for s in alice)
        assert manager.count(owner="alice") == 3
        manager.store(manager.peek(alice[0].id).replace(owner="bob"))
        manager.delete(alice[1].id)
        assert manager.list(owner="alice") == [alice[2].id]
        assert sorted(manager.list(owner="bob")) == sorted([alice[0].id, bob.id])
        clock.advance(1_001)
        assert manager.list(owner="bob") == [alice[0].id]
        assert manager.count(owner="bob") == 1
        manager.cleanup_expired()
        assert manager.count(owner="bob") == 1
        assert manager.list(owner="nobody") == []
        assert manager.count(owner="nobody") == 0
        bad_owners: list[Any] = ["", "a\nb", "x" * 257, 42]
        for bad in bad_owners:
            with pytest.raises(InvalidSession, match="owner"):
                manager.list(owner=bad)
            with pytest.raises(InvalidSession, match="owner"):
                manager.count(owner=bad)

    def test_a_backend_without_atomic_refuses_the_atomic_operations(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """Without the ``atomic`` capability, ``update``, ``take``, ``rotate``, a conditional
        ``store`` and ``delete_owner`` raise ``Unsupported`` naming the backend, and change
        nothing stored."""
        if manager.capabilities.atomic:
            pytest.skip(f"the {manager.backend_name} backend declares atomic")
        stored = manager.store(_session("kept", clock.now, owner="o", metadata={"n": 1}))
        attempts: list[Callable[[], object]] = [
            lambda: manager.update("kept", lambda md: {"n": 2}),
            lambda: manager.take("kept"),
            lambda: manager.rotate("kept"),
            lambda: manager.store(_session("kept", clock.now), if_version=stored.version),
            lambda: manager.store(_session("new", clock.now), if_version=0),
            lambda: manager.delete_owner("o"),
        ]
        for attempt in attempts:
            with pytest.raises(Unsupported, match=manager.backend_name) as info:
                attempt()
            assert info.value.backend == manager.backend_name
            assert info.value.capability == "atomic"
        assert_same_session(manager.peek("kept"), stored)
        assert manager.list() == ["kept"]

    # --- atomic backends: one operation at a time ---------------------------------------------

    @_needs_atomic
    def test_conditional_store_checks_the_live_version(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``store(s, if_version=v)`` writes only if the live stored version is ``v`` (0: no
        live session), and otherwise raises ``VersionConflict`` naming the id, the expected
        and the stored version, writing nothing; an expired session counts as absent."""
        self._atomic(manager)
        first = manager.store(_session("c", clock.now, metadata={"v": 1}), if_version=0)
        assert first.version == 1
        with pytest.raises(VersionConflict) as info:
            manager.store(_session("c", clock.now, metadata={"v": "lost"}), if_version=0)
        assert (info.value.session_id, info.value.expected, info.value.actual) == ("c", 0, 1)
        second = manager.store(_session("c", clock.now, metadata={"v": 2}), if_version=1)
        assert second.version == 2
        with pytest.raises(VersionConflict, match="expected version 1") as info:
            manager.store(_session("c", clock.now, metadata={"v": "stale"}), if_version=1)
        assert info.value.actual == 2
        assert manager.peek("c").metadata == {"v": 2}
        with pytest.raises(VersionConflict) as info:
            manager.store(_session("missing", clock.now), if_version=3)
        assert info.value.actual == 0
        assert _gone(manager, "missing")
        manager.store(_session("short", clock.now, timeout_ms=1_000), if_version=0)
        clock.advance(1_001)
        revived = manager.store(_session("short", clock.now, metadata={"new": 1}), if_version=0)
        assert revived.version == 1
        bad_versions: list[Any] = [-1, 1.5, "1", True]
        for bad in bad_versions:
            with pytest.raises(InvalidSession, match="if_version"):
                manager.store(_session("c", clock.now), if_version=bad)
        assert manager.peek("c").version == 2

    @_needs_atomic
    def test_store_if_hook_returns_the_stored_session(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """The backend's ``sessionkeeper_store_if`` returns the session as stored (with its
        new version), not a bare number."""
        self._atomic(manager)
        hook = manager.plugin_manager.hook.sessionkeeper_store_if
        stored = hook(session=_session("h", clock.now, version=9), if_version=None, now=clock.now)
        assert type(stored) is Session
        assert stored.version == 1
        assert_same_session(manager.peek("h"), stored)

    @_needs_atomic
    def test_take_removes_and_returns_the_live_session_once(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``take`` returns the live session and removes it, so a second take and a fetch
        find nothing; an expired session is not returned (it is removed)."""
        self._atomic(manager)
        stored = manager.store(_session("t", clock.now, owner="o", metadata={"k": 1}))
        assert_same_session(manager.take("t"), stored)
        with pytest.raises(SessionNotFound):
            manager.take("t")
        with pytest.raises(SessionNotFound):
            manager.fetch("t")
        assert manager.list(owner="o") == []
        manager.store(_session("old", clock.now, timeout_ms=1_000))
        clock.advance(1_001)
        with pytest.raises(SessionNotFound):
            manager.take("old")
        assert _gone(manager, "old")
        with pytest.raises(InvalidSession):
            manager.take("bad id")

    @_needs_atomic
    def test_rotate_moves_the_session_to_a_new_id(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``rotate`` returns the session under a fresh id with version + 1 and
        ``last_accessed`` now, every other field unchanged; the old id is gone, the owner index
        follows; an expired or unknown session is ``SessionNotFound``."""
        self._atomic(manager)
        stored = manager.store(
            _session("r", clock.now, owner="o", metadata={"k": 1}, absolute_timeout_ms=10**6)
        )
        now = clock.advance(500)
        rotated = manager.rotate("r")
        assert rotated.id != "r"
        assert len(rotated.id) == 43
        assert rotated.to_dict() == {
            **stored.to_dict(),
            "id": rotated.id,
            "version": stored.version + 1,
            "last_accessed": now,
        }
        assert_same_session(manager.peek(rotated.id), rotated)
        assert _gone(manager, "r")
        assert manager.list(owner="o") == [rotated.id]
        with pytest.raises(SessionNotFound):
            manager.rotate("r")
        manager.store(_session("old", clock.now, timeout_ms=1_000))
        clock.advance(1_001)
        with pytest.raises(SessionNotFound):
            manager.rotate("old")
        assert manager.list() == [rotated.id]

    @_needs_atomic
    def test_update_writes_new_metadata_and_counts_the_version(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``update`` gives ``fn`` a copy of the metadata and stores what it returns, with
        ``last_accessed`` now and version + 1; bad metadata from ``fn`` is ``InvalidSession``
        and an exception from ``fn`` propagates, both writing nothing."""
        self._atomic(manager)
        stored = manager.store(_session("u", clock.now, owner="o", metadata={"n": 1}))
        seen: list[dict[str, Any]] = []

        def bump(metadata: dict[str, Any]) -> dict[str, Any]:
            seen.append(metadata)
            metadata["n"] += 1  # a copy: changing it changes nothing stored
            return metadata

        now = clock.advance(50)
        updated = manager.update("u", bump)
        assert seen == [{"n": 2}]
        assert updated.metadata == {"n": 2}
        assert (updated.version, updated.last_accessed, updated.owner) == (
            stored.version + 1,
            now,
            "o",
        )
        assert_same_session(manager.peek("u"), updated)
        with pytest.raises(InvalidSession, match="metadata"):
            manager.update("u", lambda md: ["not", "a", "dict"])  # type: ignore[arg-type, return-value]

        def fail(metadata: dict[str, Any]) -> dict[str, Any]:
            raise LookupError("fn failed")

        with pytest.raises(LookupError, match="fn failed"):
            manager.update("u", fail)
        assert_same_session(manager.peek("u"), updated)
        with pytest.raises(SessionNotFound):
            manager.update("missing", bump)

    @_needs_atomic
    def test_update_never_calls_fn_on_an_expired_session(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """An ``update`` of a session that has expired (idle or absolute) raises
        ``SessionNotFound`` without calling ``fn``."""
        self._atomic(manager)
        manager.store(_session("idle", clock.now, timeout_ms=1_000))
        manager.store(_session("absolute", clock.now, absolute_timeout_ms=1_000))
        clock.advance(1_001)
        called: list[dict[str, Any]] = []

        def record(metadata: dict[str, Any]) -> dict[str, Any]:
            called.append(metadata)
            return metadata

        for session_id in ("idle", "absolute"):
            with pytest.raises(SessionNotFound):
                manager.update(session_id, record)
        assert called == []

    @_needs_atomic
    def test_delete_owner_removes_every_session_of_the_owner(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """``delete_owner`` removes every session of the owner, expired ones included, returns
        how many, and leaves other owners' sessions alone."""
        self._atomic(manager)
        mine = [manager.create(timeout_ms=None, owner="me") for _ in range(3)]
        manager.create(timeout_ms=1_000, owner="me")
        other = manager.create(timeout_ms=None, owner="other")
        anonymous = manager.create(timeout_ms=None)
        clock.advance(1_001)
        assert manager.delete_owner("me") == 4
        assert manager.list(owner="me") == []
        assert all(_gone(manager, s.id) for s in mine)
        assert sorted(manager.list()) == sorted([other.id, anonymous.id])
        assert manager.delete_owner("me") == 0
        with pytest.raises(InvalidSession, match="owner"):
            manager.delete_owner(None)  # type: ignore[arg-type]

    # --- atomic backends: races with threads -----------------------------------------------------

    @_needs_atomic
    def test_concurrent_updates_lose_nothing(self, manager: SessionManager) -> None:
        """Threads each ``update`` one session many times adding 1: the counter ends exactly
        at workers x updates (no update lost, none applied twice)."""
        self._atomic(manager)
        race_updates(manager, self.race_workers, self.race_updates)

    @_needs_atomic
    def test_concurrent_takes_have_exactly_one_winner(self, manager: SessionManager) -> None:
        """Threads ``take`` one session at once, round after round: exactly one gets it."""
        self._atomic(manager)
        race_takes(manager, self.race_workers, self.race_rounds)

    @_needs_atomic
    def test_concurrent_inserts_if_absent_have_exactly_one_winner(
        self, manager: SessionManager
    ) -> None:
        """Threads ``store(..., if_version=0)`` one new id at once, round after round: exactly
        one succeeds and the stored session is the winner's."""
        self._atomic(manager)
        race_inserts_if_absent(manager, self.race_workers, self.race_rounds)

    @_needs_atomic
    def test_rotate_racing_fetches_never_shows_both_ids(
        self, manager: SessionManager, clock: ManualClock
    ) -> None:
        """While threads fetch a session (writing it back), another rotates it: after the
        rotation the old id never comes back and only the new id is live."""
        self._atomic(manager)
        race_rotate_with_fetches(manager, clock.advance, self.race_workers - 1, self.race_rounds)

    @_needs_atomic
    def test_delete_owner_racing_creates_leaves_none_created_before(
        self, manager: SessionManager
    ) -> None:
        """While threads create sessions of one owner, ``delete_owner`` runs: every session
        created before it began is gone, every one created after it returned is live."""
        self._atomic(manager)
        race_delete_owner_with_creates(manager, self.race_workers - 1, 30)

    # --- atomic backends: races with processes ---------------------------------------------------

    @_needs_atomic
    @pytest.mark.sessionkeeper_slow
    def test_concurrent_updates_across_processes_lose_nothing(
        self, manager: SessionManager, backend_options: dict[str, Any], tmp_path: Path
    ) -> None:
        """Separate processes on one store each ``update`` one session adding 1: the counter
        ends exactly at processes x updates."""
        store = self._store_for_processes(manager, backend_options, tmp_path)
        race_updates(manager, self.race_workers, self.process_updates, store=store)

    @_needs_atomic
    @pytest.mark.sessionkeeper_slow
    def test_concurrent_takes_across_processes_have_exactly_one_winner(
        self, manager: SessionManager, backend_options: dict[str, Any], tmp_path: Path
    ) -> None:
        """Separate processes ``take`` one session at once: exactly one gets it."""
        store = self._store_for_processes(manager, backend_options, tmp_path)
        race_takes(manager, self.race_workers, 3, store=store)

    @_needs_atomic
    @pytest.mark.sessionkeeper_slow
    def test_concurrent_inserts_across_processes_have_exactly_one_winner(
        self, manager: SessionManager, backend_options: dict[str, Any], tmp_path: Path
    ) -> None:
        """Separate processes ``store(..., if_version=0)`` one id at once: exactly one wins."""
        store = self._store_for_processes(manager, backend_options, tmp_path)
        race_inserts_if_absent(manager, self.race_workers, 3, store=store)

    @_needs_atomic
    @pytest.mark.sessionkeeper_slow
    def test_delete_owner_across_processes_leaves_none_created_before(
        self, manager: SessionManager, backend_options: dict[str, Any], tmp_path: Path
    ) -> None:
        """Processes create sessions of one owner while another process runs
        ``delete_owner``: none created before it began survives, none created after it
        returned is lost."""
        store = self._store_for_processes(manager, backend_options, tmp_path)
        race_delete_owner_with_creates(manager, self.race_workers - 1, 30, store=store)


#: The kit tests that skip on a backend without ``atomic`` (the others run on every backend).
ATOMIC_ONLY: Final = tuple(
    sorted(
        name
        for name, value in vars(AtomicConformance).items()
        if getattr(value, "kit_needs_atomic", False)
    )
)
