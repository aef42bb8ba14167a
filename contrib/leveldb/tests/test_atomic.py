"""Concurrent state on the leveldb backend (issue 14): the owner index as a key range, deadlines
at ``expires_at``, tables written before owners existed, damaged records met by the atomic
operations, and races between threads.

The kit (test_conformance.py) runs the shared atomicity tests with threads on one manager. Its
multi-process races do not apply here and are skipped: LevelDB lets one process open a database
(test_durability.py shows a second one refused), so every user of a store is a thread of the
owning process, and the backend's lock, shared by every manager of that process, serialises
them. The races below therefore run threads through several managers on one database, and check
the key ranges themselves afterwards. test_durability.py kills a process in the middle of these
operations.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import plyvel  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings

from sessionkeeper import Session, SessionManager, SessionNotFound, StorageError, VersionConflict
from sessionkeeper.backend import decode_session
from sessionkeeper.testing import ManualClock
from sessionkeeper_leveldb import LAYOUT_VERSION, LevelDBBackend, TableKeys

#: Workers of each thread race, and rounds of each one-winner race.
WORKERS = 8
ROUNDS = 30


def backend_of(manager: SessionManager) -> LevelDBBackend:
    backend = manager.backend
    assert isinstance(backend, LevelDBBackend)
    return backend


def owner_entries(manager: SessionManager) -> set[tuple[str, str]]:
    """``(owner, id)`` of every owner-index entry of the manager's table."""
    backend = backend_of(manager)
    keys = backend.keys
    found = set()
    with backend.db.iterator(start=keys.owners, stop=keys.owners_end, include_value=False) as it:
        for entry in it:
            owner, nul, raw_id = entry[len(keys.owners) :].partition(b"\0")
            assert nul, f"an owner entry without its separator: {entry!r}"
            found.add((owner.decode("utf-8"), raw_id.decode("ascii")))
    return found


def audit(manager: SessionManager) -> dict[str, Session]:
    """Check that both indexes agree exactly with the stored records (an expiry entry at
    ``expires_at`` for each session that can expire, an owner entry for each owned one, nothing
    else); return the stored sessions."""
    backend = backend_of(manager)
    keys, db = backend.keys, backend.db
    with db.iterator(start=keys.sessions, stop=keys.sessions_end) as records:
        stored = {keys.session_id(key): decode_session(record) for key, record in records}
    with db.iterator(start=keys.index, stop=keys.index_end, include_value=False) as entries:
        expiry = {keys.parse_entry(entry) for entry in entries}
    assert expiry == {
        (s.expires_at, sid.encode("ascii")) for sid, s in stored.items() if s.expires_at is not None
    }
    assert owner_entries(manager) == {
        (s.owner, sid) for sid, s in stored.items() if s.owner is not None
    }
    return stored


def session(session_id: str, now: int, timeout_ms: int | None = 60_000, **fields: Any) -> Session:
    metadata = fields.pop("metadata", None)
    return Session(session_id, now, now, timeout_ms, metadata, **fields)


def run_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(index)`` in ``count`` threads released together by a barrier; return the
    results in index order, or re-raise the first failure. A thread still running after a
    generous wait fails the test (a deadlock), it does not hang the run."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(60)
            results[index] = work(index)
        except BaseException as exc:  # re-raised in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(thread.is_alive() for thread in threads), "a worker deadlocked"
    if failures:
        raise failures[0]
    return results


class TestOwnerIndex:
    def test_the_owner_entry_is_a_key_in_the_owners_range(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """A session with an owner has one entry ``<table>\\0o<owner UTF-8>\\0<id>`` (empty
        value) beside its record and its expiry entry; one without an owner has none."""
        manager = open_manager(table_name="t")
        manager.store(session("mine", clock.now, owner="zoë"))
        manager.store(session("nobody", clock.now))
        backend = backend_of(manager)
        with backend.db.iterator(start=b"t\0o", stop=b"t\0p") as entries:
            assert list(entries) == [("t\0ozoë\0mine".encode(), b"")]
        assert backend.keys.owner_entry("zoë", b"mine") == "t\0ozoë\0mine".encode()

    def test_every_write_keeps_the_owner_index_exact(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """store, a replacement changing or dropping the owner, store_many, touch, update,
        rotate, take, delete, cleanup and delete_owner each leave exactly one owner entry per
        owned session and an expiry entry at each session's ``expires_at``."""
        manager = open_manager()
        a = manager.create(timeout_ms=60_000, owner="alice")
        b = manager.create(timeout_ms=1_000, owner="alice")
        manager.create(timeout_ms=None, owner="bob")
        audit(manager)
        manager.store(manager.peek(a.id).replace(owner="bob"))
        assert audit(manager)[a.id].owner == "bob"
        manager.store(manager.peek(a.id).replace(owner=None))
        audit(manager)
        manager.store_many([session(f"m{i}", clock.now, owner=f"o{i % 2}") for i in range(6)])
        audit(manager)
        clock.advance(500)
        manager.touch(b.id)
        manager.update("m0", lambda md: {"n": 1})
        audit(manager)
        rotated = manager.rotate("m1")
        assert ("o1", rotated.id) in owner_entries(manager)
        assert ("o1", "m1") not in owner_entries(manager)
        manager.take("m2")
        manager.delete("m3")
        audit(manager)
        clock.advance(1_001)
        assert manager.cleanup_expired() == 1  # b, idle for 1,001 ms
        audit(manager)
        assert manager.delete_owner("o0") == 2  # m0, m4
        assert {owner for owner, _ in audit(manager) and owner_entries(manager)} == {"bob", "o1"}
        assert sorted(manager.list(owner="o1")) == sorted([rotated.id, "m5"])

    def test_owners_that_share_a_prefix_are_apart(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """Owners that are prefixes of one another (``a``, ``ab``, ``a b``, ``aé``) list,
        count and delete only their own sessions: the NUL after the owner ends its range."""
        manager = open_manager()
        owners = ["a", "ab", "a b", "aé", "b"]
        for owner in owners:
            for i in range(2):
                manager.store(session(f"{owner.encode().hex()}-{i}", clock.now, owner=owner))
        for owner in owners:
            assert sorted(manager.list(owner=owner)) == [
                f"{owner.encode().hex()}-{i}" for i in (0, 1)
            ]
        assert manager.delete_owner("a") == 2
        assert [manager.count(owner=owner) for owner in owners] == [0, 2, 2, 2, 2]
        audit(manager)

    @pytest.mark.fuzz
    def test_any_owners_list_as_a_dict_model_says(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """Whatever the ids and owners (any Unicode without control characters, prefixes of
        one another), after a series of stores the owner index lists, for each owner, exactly
        the ids whose last store named it, and ``delete_owner`` removes exactly those."""
        manager = open_manager(sync=False)  # one for every example: opening one takes 0.1 s
        ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8)
        owners = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20)

        @settings(deadline=None)
        @given(st.lists(st.tuples(ids, st.none() | owners), max_size=20))
        def check(data: list[tuple[str, str | None]]) -> None:
            for stored_id in manager.list():  # the previous example's survivors
                manager.delete(stored_id)
            model: dict[str, str | None] = {}
            for session_id, owner in data:
                manager.store(session(session_id, clock.now, owner=owner))
                model[session_id] = owner
            audit(manager)
            for owner in {o for o in model.values() if o is not None}:
                mine = sorted(sid for sid, o in model.items() if o == owner)
                assert sorted(manager.list(owner=owner)) == mine
                assert manager.delete_owner(owner) == len(mine)
            assert owner_entries(manager) == set()
            assert sorted(manager.list()) == sorted(sid for sid, o in model.items() if o is None)

        check()


class TestDeadlines:
    def test_the_expiry_entry_sits_at_the_earlier_deadline(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """A session with an absolute timeout is filed at ``expires_at``, the earlier of its idle
        and absolute deadlines: a touch moves the entry while the idle deadline is earlier, and
        never past the absolute one; a cleanup at that instant + 1 removes it though it was used
        a moment before."""
        manager = open_manager()
        start = clock.now
        manager.store(session("s", start, 1_000, absolute_timeout_ms=2_500, owner="o"))
        keys = backend_of(manager).keys
        assert audit(manager)["s"].expires_at == start + 1_000
        clock.advance(900)
        manager.touch("s")  # idle deadline start + 1,900: still the earlier one
        assert audit(manager)["s"].expires_at == start + 1_900
        clock.advance(900)
        manager.touch("s")  # idle start + 2,800 is later than the absolute start + 2,500
        assert audit(manager)["s"].expires_at == start + 2_500
        with backend_of(manager).db.iterator(
            start=keys.index, stop=keys.index_end, include_value=False
        ) as entries:
            assert [keys.parse_entry(e) for e in entries] == [(start + 2_500, b"s")]
        clock.advance(700)  # start + 2,500: the last live millisecond
        assert manager.fetch("s").id == "s"
        clock.advance(1)
        assert manager.cleanup_expired() == 1
        assert audit(manager) == {}


#: Records written by the previous release (format 1: no version, owner or absolute timeout),
#: literally, with the expiry entry and the layout version it wrote.
OLD_TABLE = {
    b"sessions\0s" + b"old-expiring": (
        b"\x96\x01\xacold-expiring\xcf\x00\x00\x01\x8b\xcf\xe5h\x00\xcf\x00\x00\x01\x8b\xcf\xe5h"
        b"\x00\xcd\xea`\xc4\x13\x82\xa7user_id\xa6user_1\xa1n\x00"
    ),
    b"sessions\0s" + b"old-forever": (
        b"\x96\x01\xabold-forever\xcf\x00\x00\x01\x8b\xcf\xe5h\x00\xcf\x00\x00\x01\x8b\xcf\xe5h"
        b"\x00\xc0\xc4\x01\x80"
    ),
    b"sessions\0x" + (1_700_000_060_000).to_bytes(8, "big") + b"old-expiring": b"",
    b"sessions\0v": b"1",
}


class TestPreviousRelease:
    @pytest.fixture
    def old_database(self, tmp_path: Path) -> Path:
        """A database holding :data:`OLD_TABLE`, written with plyvel alone."""
        path = tmp_path / "db"
        db = plyvel.DB(str(path), create_if_missing=True)
        try:
            for key, value in OLD_TABLE.items():
                db.put(key, value)
        finally:
            db.close()
        return path

    def test_a_table_of_the_previous_release_reads_and_works(
        self, old_database: Path, open_manager: Any, clock: ManualClock
    ) -> None:
        """A table written before issue 14 (layout 1, format-1 records) opens: its sessions read
        as version 1 without an owner or an absolute timeout, the layout is marked 2, and
        update, owners and cleanup work on it (its old expiry entry included)."""
        clock.advance(1_700_000_001_000 - clock.now)
        manager = open_manager()
        old = manager.peek("old-expiring")
        assert (old.version, old.owner, old.absolute_timeout_ms) == (1, None, None)
        assert old.metadata == {"user_id": "user_1", "n": 0}
        assert manager.peek("old-forever").to_dict() == {
            "id": "old-forever",
            "created_at": 1_700_000_000_000,
            "last_accessed": 1_700_000_000_000,
            "timeout_ms": None,
            "metadata": {},
            "version": 1,
            "owner": None,
            "absolute_timeout_ms": None,
        }
        assert backend_of(manager).db.get(TableKeys("sessions").version) == LAYOUT_VERSION
        assert manager.list(owner="u") == []
        updated = manager.update("old-forever", lambda md: {**md, "n": 1})
        assert updated.version == 2
        manager.store(manager.peek("old-forever").replace(owner="u"))
        assert manager.list(owner="u") == ["old-forever"]
        clock.advance(1_700_000_060_001 - clock.now)  # old-expiring's idle deadline + 1
        assert manager.cleanup_expired() == 1
        assert sorted(audit(manager)) == ["old-forever"]

    def test_a_read_only_open_reads_it_and_leaves_it_as_it_was(
        self, old_database: Path, open_manager: Any
    ) -> None:
        """Opened read-only, a table of layout 1 reads (owners: none) and keeps layout 1."""
        manager = open_manager(read_only=True)
        assert sorted(manager.list()) == ["old-expiring", "old-forever"]
        assert manager.count(owner="anyone") == 0
        manager.close()
        db = plyvel.DB(str(old_database))
        try:
            assert dict(db.iterator()) == OLD_TABLE
        finally:
            db.close()


def corrupt(manager: SessionManager, session_id: str) -> None:
    backend = backend_of(manager)
    backend.db.put(backend.keys.session(session_id), b"\xc1garbage")


class TestDamagedRecords:
    def test_take_and_rotate_of_a_damaged_record_report_it_and_keep_it(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """``take`` and ``rotate`` of a record that does not decode raise a ``StorageError``
        naming the key, and leave the record where it is (no caller gets it as "gone")."""
        manager = open_manager()
        manager.store(session("d", clock.now, owner="o"))
        corrupt(manager, "d")
        for operation in (manager.take, manager.rotate):
            with pytest.raises(StorageError, match=r"damaged record.*key b'sessions\\x00sd'"):
                operation("d")
        assert backend_of(manager).db.get(backend_of(manager).keys.session("d")) == b"\xc1garbage"

    def test_a_conditional_store_over_damage_is_refused_and_a_plain_one_repairs(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """A damaged record has no version: ``store(if_version=...)`` over it is a
        ``StorageError`` that writes nothing, while ``store`` without one replaces it (version
        1) and the indexes hold the new session's entries."""
        manager = open_manager()
        manager.store(session("d", clock.now))
        corrupt(manager, "d")
        for expected in (0, 1):
            with pytest.raises(StorageError, match="damaged record"):
                manager.store(session("d", clock.now, metadata={"lost": 1}), if_version=expected)
        repaired = manager.store(session("d", clock.now, owner="o", metadata={"k": 1}))
        assert repaired.version == 1
        assert manager.peek("d") == repaired
        assert manager.list(owner="o") == ["d"]

    def test_delete_owner_deletes_damage_filed_under_the_owner_and_nothing_else(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """A damaged record filed under the owner is listed and deleted with the owner's
        sessions ("log out everywhere" leaves nothing behind); an entry left by damage that was
        replaced by another owner's session is dropped without touching that session."""
        manager = open_manager()
        manager.store(session("damaged", clock.now, owner="o"))
        manager.store(session("moved", clock.now, owner="o"))
        manager.store(session("fine", clock.now, owner="o"))
        corrupt(manager, "damaged")
        corrupt(manager, "moved")
        manager.store(session("moved", clock.now, owner="p"))  # the entry under "o" is stale
        assert sorted(manager.list(owner="o")) == ["damaged", "fine"]
        assert manager.list(owner="p") == ["moved"]
        assert manager.delete_owner("o") == 2
        assert manager.list() == ["moved"]
        assert owner_entries(manager) == {("p", "moved")}


class TestThreads:
    """Races of threads through several managers of one database (they share its handle and
    lock, as every manager of the owning process does)."""

    def test_updates_through_several_managers_lose_nothing(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """WORKERS threads spread over two managers each ``update`` one session 100 times
        adding 1: the counter ends at exactly WORKERS x 100 and the version at one more."""
        managers = [open_manager(), open_manager()]
        managers[0].store(session("counter", clock.now, owner="o", metadata={"n": 0}))

        def work(index: int) -> None:
            for _ in range(100):
                managers[index % 2].update(
                    "counter", lambda md: {"n": md["n"] + 1}, attempts=10_000
                )

        run_threads(WORKERS, work)
        final = managers[1].peek("counter")
        assert final.metadata == {"n": WORKERS * 100}
        assert final.version == 1 + WORKERS * 100
        audit(managers[0])

    def test_concurrent_takes_have_one_winner(self, open_manager: Any, clock: ManualClock) -> None:
        """Round after round, WORKERS threads over two managers ``take`` one owned session at
        once: exactly one gets it, and it leaves no entry behind."""
        managers = [open_manager(), open_manager()]
        for round_ in range(ROUNDS):
            managers[0].store(session(f"token-{round_}", clock.now, owner="o"))

            def work(index: int, round_: int = round_) -> bool:
                try:
                    managers[index % 2].take(f"token-{round_}")
                except SessionNotFound:
                    return False
                return True

            assert sum(run_threads(WORKERS, work)) == 1
        assert audit(managers[1]) == {}

    def test_concurrent_inserts_if_absent_have_one_winner(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """Round after round, WORKERS threads ``store(..., if_version=0)`` one new id, each
        with its own metadata and owner: exactly one succeeds, the others get
        ``VersionConflict`` (stored version 1), and what is stored is the winner's."""
        managers = [open_manager(), open_manager()]
        for round_ in range(ROUNDS):
            sid = f"new-{round_}"

            def work(index: int, sid: str = sid) -> int | tuple[int, int]:
                mine = session(sid, clock.now, owner=f"w{index}", metadata={"w": index})
                try:
                    managers[index % 2].store(mine, if_version=0)
                except VersionConflict as exc:
                    return (exc.expected, exc.actual)
                return index

            outcomes = run_threads(WORKERS, work)
            winners = [w for w in outcomes if isinstance(w, int)]
            assert len(winners) == 1
            assert [o for o in outcomes if not isinstance(o, int)] == [(0, 1)] * (WORKERS - 1)
            stored = managers[0].peek(sid)
            assert (stored.metadata, stored.owner, stored.version) == (
                {"w": winners[0]},
                f"w{winners[0]}",
                1,
            )
        audit(managers[0])

    def test_delete_owner_racing_creates_is_linearizable(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """While threads ``create(owner=...)`` through two managers, another thread runs
        ``delete_owner`` several times: every session whose create returned before a delete
        began is gone, every one whose create began after the last delete returned is live,
        and the index holds exactly the survivors."""
        managers = [open_manager(), open_manager()]
        events: list[tuple[str, Any]] = []  # appended under `order`: one global order
        order = threading.Lock()
        creators = WORKERS - 1

        def log(*event: Any) -> None:
            with order:
                events.append(event)

        def work(index: int) -> None:
            if index == creators:
                for _ in range(5):
                    log("delete-began", None)
                    managers[0].delete_owner("racer")
                    log("delete-returned", None)
                return
            for _ in range(40):
                ticket = object()
                log("create-began", ticket)
                created = managers[index % 2].create(owner="racer")
                log("create-returned", (ticket, created.id))

        run_threads(WORKERS, work)
        live = set(managers[1].list(owner="racer"))
        began_at = {
            event[1]: position
            for position, event in enumerate(events)
            if event[0] == "create-began"
        }
        deletes_began = [p for p, e in enumerate(events) if e[0] == "delete-began"]
        last_returned = max(p for p, e in enumerate(events) if e[0] == "delete-returned")
        for position, (kind, value) in enumerate(events):
            if kind != "create-returned":
                continue
            ticket, session_id = value
            if any(position < began for began in deletes_began):
                assert session_id not in live, "a session created before a delete survived it"
            if began_at[ticket] > last_returned:
                assert session_id in live, "a session created after the delete was lost"
        assert {sid for _, sid in owner_entries(managers[0])} == live
        audit(managers[0])

    def test_mixed_operations_match_a_model_and_keep_the_indexes_exact(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """Threads each run a random mix of store (new or replacing), update, touch, rotate,
        take, delete and store_many on their own ids (shared owners) through two managers,
        against a dict model each, while two more threads clean up and list and count by owner:
        afterwards every session is what its model says, each owner lists exactly its sessions,
        and both indexes agree with the records."""
        managers = [open_manager(), open_manager()]
        owners = ["alice", "bob", None]
        writers = WORKERS - 2
        writers_left = [writers]
        count_lock = threading.Lock()
        writers_done = threading.Event()
        Model = dict[str, tuple[dict[str, Any], str | None, int]]

        def background(manager: SessionManager) -> None:
            # Runs beside the writers until they are done; any error fails the test.
            while not writers_done.is_set():
                manager.cleanup_expired()
                for owner in ("alice", "bob"):
                    manager.list(owner=owner)
                    manager.count(owner=owner)

        def writer(index: int, manager: SessionManager) -> Model:
            rng = random.Random(index)
            model: Model = {}
            for step in range(150):
                choice = rng.randrange(7)
                known = sorted(model)
                if choice == 0 or not known:
                    replacing = bool(known) and rng.random() < 0.5
                    sid = rng.choice(known) if replacing else f"t{index}-{step}"
                    owner = rng.choice(owners)
                    stored = manager.store(session(sid, clock.now, owner=owner, metadata={"s": 0}))
                    assert stored.version == (model[sid][2] + 1 if replacing else 1)
                    model[sid] = ({"s": 0}, owner, stored.version)
                elif choice == 1:
                    sid = rng.choice(known)
                    new = manager.update(sid, lambda md: {**md, "s": md.get("s", 0) + 1})
                    metadata, owner, version = model[sid]
                    model[sid] = ({**metadata, "s": metadata.get("s", 0) + 1}, owner, version + 1)
                    assert new.version == version + 1
                elif choice == 2:
                    clock.advance(1)  # a touch that moves the expiry entry
                    manager.touch(rng.choice(known))
                elif choice == 3:
                    sid = rng.choice(known)
                    rotated = manager.rotate(sid)
                    metadata, owner, version = model.pop(sid)
                    model[rotated.id] = (metadata, owner, version + 1)
                elif choice == 4:
                    taken = manager.take(sid := rng.choice(known))
                    assert (taken.metadata, taken.owner, taken.version) == model.pop(sid)
                elif choice == 5:
                    sid = rng.choice(known)
                    assert manager.delete(sid) is True
                    del model[sid]
                else:
                    owner = rng.choice(owners)
                    batch = [
                        session(f"t{index}-{step}-{i}", clock.now, owner=owner) for i in range(3)
                    ]
                    manager.store_many(batch)
                    model.update({s.id: ({}, owner, 1) for s in batch})
            return model

        def work(index: int) -> Model:
            manager = managers[index % 2]
            if index >= writers:
                background(manager)
                return {}
            try:
                return writer(index, manager)
            finally:
                with count_lock:
                    writers_left[0] -= 1
                    if writers_left[0] == 0:
                        writers_done.set()

        results = run_threads(WORKERS, work)
        model = {sid: value for result in results for sid, value in result.items()}
        stored = audit(managers[0])
        assert {sid: (s.metadata, s.owner, s.version) for sid, s in stored.items()} == model
        for owner in ("alice", "bob"):
            mine = sorted(sid for sid, (_, o, _) in model.items() if o == owner)
            assert sorted(managers[1].list(owner=owner)) == mine
            assert managers[0].count(owner=owner) == len(mine)
