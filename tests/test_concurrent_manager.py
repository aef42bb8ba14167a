"""The managers' concurrent-state operations (issue 14) over small backends whose behaviour is
known exactly (tests/fixtures/stub_backend/sk_dict_backend.py): retries, refusals, owners, and the
conformance kit run on a correct atomic backend, on a shared file backend across processes, and
against deliberately racy backends, which it must catch."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper import (
    AsyncSessionManager,
    InvalidSession,
    Session,
    SessionManager,
    SessionNotFound,
    Unsupported,
    VersionConflict,
)
from sessionkeeper._concurrent import BACKOFF_BASE_S, BACKOFF_CAP_S, backoff_delay
from sessionkeeper.backend import PluginValidationError
from sessionkeeper.testing import BackendConformance, ManualClock
from sessionkeeper.testing._races import (
    race_inserts_if_absent,
    race_rotate_with_fetches,
    race_takes,
    race_updates,
)

from .conftest import MakeDist

_tables = itertools.count()


@pytest.fixture
def dict_backends(make_dist: MakeDist, stub_backend: str) -> None:
    """Install the test backends of sk_dict_backend under their entry-point names."""
    from sk_dict_backend import ENTRY_POINTS

    make_dist("sk-dict-backends", {}, {"sessionkeeper.backends": dict(ENTRY_POINTS)})


def _open(backend: str, clock: ManualClock, **kwargs: Any) -> SessionManager:
    opts: dict[str, Any] = {"table": f"t{next(_tables)}"}
    return SessionManager(
        backend=backend, backend_opts=opts, clock=clock, cleanup_interval=0, **kwargs
    )


@pytest.fixture
def atomic(dict_backends: None, clock: ManualClock) -> Iterator[SessionManager]:
    """A manager over the correct atomic dict backend."""
    with _open("test-atomic", clock) as manager:
        yield manager


@pytest.fixture
def plain(dict_backends: None, clock: ManualClock) -> Iterator[SessionManager]:
    """A manager over the dict backend without ``atomic``."""
    with _open("test-dict", clock) as manager:
        yield manager


class TestUpdateRetries:
    def test_a_conflict_makes_update_read_again_and_retry(
        self, atomic: SessionManager, clock: ManualClock
    ) -> None:
        """When another writer stores the session between update's read and its write, the
        write is refused and fn is called again on the fresh read: both changes survive."""
        atomic.store(Session("s", clock.now, clock.now, None, {"n": 0, "other": 0}))
        calls: list[dict[str, Any]] = []

        def add_one(metadata: dict[str, Any]) -> dict[str, Any]:
            calls.append(dict(metadata))
            if len(calls) == 1:  # a concurrent writer, between our read and our write
                current = atomic.peek("s")
                atomic.store(current.replace(metadata={**current.metadata, "other": 1}))
            return {**metadata, "n": metadata["n"] + 1}

        updated = atomic.update("s", add_one)
        assert calls == [{"n": 0, "other": 0}, {"n": 0, "other": 1}]
        assert updated.metadata == {"n": 1, "other": 1}
        assert updated.version == 3  # store -> 1, the other writer -> 2, the update -> 3
        assert atomic.peek("s") == updated

    def test_update_gives_up_after_attempts_with_version_conflict(
        self, atomic: SessionManager, clock: ManualClock
    ) -> None:
        """When every attempt loses its race, update raises VersionConflict (naming the id,
        the version read and the one stored) after exactly ``attempts`` calls of fn, and
        nothing of fn's is written."""
        atomic.store(Session("s", clock.now, clock.now, None, {"n": 0}))
        calls = 0

        def always_beaten(metadata: dict[str, Any]) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            atomic.store(atomic.peek("s"))  # someone else writes every time
            return {"n": -1}

        with pytest.raises(VersionConflict) as info:
            atomic.update("s", always_beaten, attempts=3)
        assert calls == 3
        assert info.value.session_id == "s"
        assert info.value.actual == info.value.expected + 1
        assert atomic.peek("s").metadata == {"n": 0}

    def test_a_session_that_expires_between_attempts_is_not_found(
        self, atomic: SessionManager, clock: ManualClock
    ) -> None:
        """If the session expires while update retries, the next attempt raises
        SessionNotFound and does not call fn again."""
        atomic.store(Session("s", clock.now, clock.now, 1_000, {"n": 0}))
        calls = 0

        def beaten_then_late(metadata: dict[str, Any]) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            atomic.store(atomic.peek("s"))
            clock.advance(1_001)
            return metadata

        with pytest.raises(SessionNotFound):
            atomic.update("s", beaten_then_late)
        assert calls == 1

    @pytest.mark.parametrize("attempts", [0, -1, 1.5, "3", None])
    def test_bad_attempts_are_refused(self, atomic: SessionManager, attempts: Any) -> None:
        """attempts must be an int >= 1: anything else is a ValueError naming it."""
        with pytest.raises(ValueError, match="attempts must be an int >= 1"):
            atomic.update("s", dict, attempts=attempts)

    def test_backoff_is_jittered_exponential_and_capped(self) -> None:
        """The wait after the n-th conflict is uniform below min(50 ms, 1 ms * 2**n)."""
        for attempt in range(40):
            bound = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
            assert backoff_delay(attempt, rand=lambda: 0.0) == 0.0
            assert backoff_delay(attempt, rand=lambda: 0.5) == pytest.approx(bound / 2)
            assert 0 <= backoff_delay(attempt) < bound
        assert backoff_delay(100, rand=lambda: 0.999) < BACKOFF_CAP_S


class TestWithoutAtomic:
    def test_refusals_name_the_backend_and_the_backends_that_can(
        self, plain: SessionManager, clock: ManualClock
    ) -> None:
        """Unsupported names the backend, the capability, the operations it covers and the
        project's backends that have it; the session is unchanged."""
        stored = plain.store(Session("s", clock.now, clock.now, None, {"k": 1}))
        with pytest.raises(Unsupported) as info:
            plain.update("s", dict)
        message = str(info.value)
        assert message.startswith("the test-dict backend does not support atomic operations")
        assert "(update, take, rotate, conditional store, delete_owner)" in message
        assert "backends that do: memory, sqlitedict, leveldb, redis, postgres" in message
        assert info.value.backends == ("memory", "sqlitedict", "leveldb", "redis", "postgres")
        assert plain.peek("s") == stored

    def test_store_still_counts_versions(self, plain: SessionManager, clock: ManualClock) -> None:
        """Without atomic, store gives the live stored version + 1 (best effort), an expired
        session counting as absent."""
        assert plain.store(Session("s", clock.now, clock.now, 1_000)).version == 1
        assert plain.store(Session("s", clock.now, clock.now, 1_000)).version == 2
        clock.advance(1_001)
        assert plain.store(Session("s", clock.now, clock.now, 1_000)).version == 1

    def test_owner_queries_scan_when_the_backend_has_no_owner_index(
        self, plain: SessionManager
    ) -> None:
        """list(owner=) and count(owner=) work on a backend without the owner hooks."""
        mine = {plain.create(owner="me").id for _ in range(3)}
        plain.create(owner="you")
        assert set(plain.list(owner="me")) == mine
        assert plain.count(owner="me") == 3


class TestBackendContract:
    def test_an_atomic_backend_must_implement_the_atomic_hooks(
        self, make_dist: MakeDist, stub_backend: str, clock: ManualClock
    ) -> None:
        """A backend declaring atomic without the atomic hooks is refused at start, naming
        the hooks it lacks."""
        make_dist(
            "sk-liar",
            {
                "sk_liar": """
                from sk_dict_backend import DictBackend
                from sessionkeeper.backend import Capabilities

                class Liar(DictBackend):
                    capabilities = Capabilities(blocking=False, atomic=True)
                """
            },
            {"sessionkeeper.backends": {"liar": "sk_liar:Liar"}},
        )
        with pytest.raises(PluginValidationError, match="sessionkeeper_store_if") as info:
            _open("liar", clock)
        assert "sessionkeeper_delete_owner" in str(info.value)
        assert info.value.plugin == "liar"

    def test_a_store_if_returning_the_version_number_is_still_accepted(
        self, make_dist: MakeDist, stub_backend: str, clock: ManualClock
    ) -> None:
        """A sessionkeeper_store_if written to the hook's first draft (returning the new
        version) still works: the manager builds the stored session from it."""
        make_dist(
            "sk-draft",
            {
                "sk_draft": """
                from sk_dict_backend import AtomicDictBackend
                from sessionkeeper.backend import hookimpl

                class Draft(AtomicDictBackend):
                    @hookimpl
                    def sessionkeeper_store_if(self, session, if_version, now):
                        return AtomicDictBackend.sessionkeeper_store_if(
                            self, session, if_version, now
                        ).version
                """
            },
            {"sessionkeeper.backends": {"draft": "sk_draft:Draft"}},
        )
        with _open("draft", clock) as manager:
            first = manager.store(Session("s", clock.now, clock.now, None, {"k": 1}))
            assert (first.version, first.metadata) == (1, {"k": 1})
            assert manager.update("s", lambda md: {"k": 2}).version == 2


class TestAsync:
    def test_async_manager_has_the_concurrent_operations(
        self, dict_backends: None, clock: ManualClock
    ) -> None:
        """AsyncSessionManager offers create(owner=, absolute_timeout_ms=), store(if_version=),
        update (retrying with asyncio.sleep), take, rotate, list/count(owner=) and
        delete_owner, with the sync semantics."""

        async def scenario() -> None:
            opts = {"table": f"t{next(_tables)}"}
            sessions = AsyncSessionManager(
                backend="test-atomic", backend_opts=opts, clock=clock, cleanup_interval=0
            )
            async with sessions:
                s = await sessions.create(owner="o", absolute_timeout_ms=10_000, metadata={})
                assert (s.version, s.owner, s.absolute_timeout_ms) == (1, "o", 10_000)
                again = await sessions.store(s, if_version=1)
                assert again.version == 2
                with pytest.raises(VersionConflict):
                    await sessions.store(s, if_version=1)
                beaten = False

                def add(metadata: dict[str, Any]) -> dict[str, Any]:
                    nonlocal beaten
                    if not beaten:
                        beaten = True
                        sessions.sync.store(sessions.sync.peek(s.id))
                    return {"n": metadata.get("n", 0) + 1}

                updated = await sessions.update(s.id, add)
                assert (updated.metadata, updated.version) == ({"n": 1}, 4)
                rotated = await sessions.rotate(s.id)
                assert await sessions.list(owner="o") == [rotated.id]
                assert await sessions.count(owner="o") == 1
                taken = await sessions.take(rotated.id)
                assert taken.id == rotated.id
                await sessions.create(owner="o")
                assert await sessions.delete_owner("o") == 1
                assert await sessions.count() == 0

        asyncio.run(scenario())


# --- the kit itself: passes on correct backends, catches racy ones -------------------------------


class TestKitOnAnAtomicDict(BackendConformance):
    """The whole conformance kit on the correct atomic dict backend (threads)."""

    backend = "test-atomic"

    @pytest.fixture(autouse=True)
    def _installed(self, dict_backends: None) -> None:
        """The test backends are installed for every test of the class."""

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        return {"table": f"kit-{next(_tables)}"}


class TestKitOnAPlainDict(TestKitOnAnAtomicDict):
    """The kit on the dict backend without atomic: the atomic tests skip, the refusals run."""

    backend = "test-dict"


class TestKitOnASharedFile(BackendConformance):
    """The kit on the flock'ed file backend, whose store several processes share: the
    multi-process races run too."""

    backend = "test-file"
    race_rounds = 5
    many = 100  # every write rewrites the whole file

    @pytest.fixture(autouse=True)
    def _installed(self, dict_backends: None) -> None:
        """The test backends are installed for every test of the class."""

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        return {"file_path": str(tmp_path / "sessions.json")}

    def shared_store_config(self, backend_opts: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return dict(backend_opts)


class TestKitCatchesRacyBackends:
    """A backend that declares atomic but checks and writes in two steps fails the races."""

    @pytest.fixture
    def racy(self, dict_backends: None, clock: ManualClock) -> Iterator[SessionManager]:
        with _open("test-racy", clock) as manager:
            yield manager

    def test_lost_updates_are_caught(self, racy: SessionManager) -> None:
        """Concurrent updates on the racy backend lose some, and the counter race says so."""
        with pytest.raises(AssertionError, match="updates were lost"):
            race_updates(racy, 4, 20)

    def test_two_winning_takes_are_caught(self, racy: SessionManager) -> None:
        """Concurrent takes on the racy backend give the session to several callers."""
        with pytest.raises(AssertionError, match="concurrent takes got the session"):
            race_takes(racy, 4, 20)

    def test_two_winning_inserts_are_caught(self, racy: SessionManager) -> None:
        """Concurrent inserts-if-absent on the racy backend let several succeed."""
        with pytest.raises(AssertionError, match="inserts-if-absent of one id succeeded"):
            race_inserts_if_absent(racy, 4, 20)

    def test_both_ids_live_during_a_rotation_are_caught(
        self, racy: SessionManager, clock: ManualClock
    ) -> None:
        """A rotation that stores the new id before it deletes the old one, unlocked, shows
        both ids live to a reader counting the owner's sessions."""
        with pytest.raises(AssertionError, match=r"live at once|not exactly"):
            race_rotate_with_fetches(racy, clock.advance, 3, 30)

    @pytest.mark.sessionkeeper_slow
    def test_lost_updates_across_processes_are_caught(
        self, dict_backends: None, clock: ManualClock, tmp_path: Path
    ) -> None:
        """Processes updating one session in the racy file backend lose updates, and the
        multi-process counter race says so."""
        opts = {"file_path": str(tmp_path / "racy.json")}
        store = {"backend": "test-racy-file", "backend_opts": opts, "base_dir": str(tmp_path)}
        with (
            SessionManager(
                backend="test-racy-file", backend_opts=opts, clock=clock, cleanup_interval=0
            ) as manager,
            pytest.raises(AssertionError, match="updates were lost"),
        ):
            race_updates(manager, 4, 25, store=store)


class TestVersionCeilingWithoutAtomic:
    def test_non_atomic_backend_refuses_a_write_past_the_top(self, plain: SessionManager) -> None:
        """On a backend without ``atomic``, where the manager counts the version itself, a
        write past 2**63-1 is refused with InvalidSession naming the version, and nothing is
        written."""
        top = 2**63 - 1
        assert not plain.capabilities.atomic
        session = plain.create(timeout_ms=None)
        plain.store_many([session.with_version(top)])  # as an import carries it
        with pytest.raises(InvalidSession, match="version"):
            plain.store(session)
        assert plain.peek(session.id).version == top
