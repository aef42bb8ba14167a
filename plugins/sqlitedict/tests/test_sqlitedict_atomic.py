"""Concurrent state on the single owner (issue 14): what the kit cannot see from the outside.

The kit checks the atomic semantics through the manager; here the file is read behind the
owner's back (the owner serves reads from its copy), so each test shows that the copy and the
file change together: after a race, a failed commit, an undecodable row, and across a reopen.
The kit's multi-process races do not apply: one process owns the file (a second owner is
refused, see test_sqlitedict_processes.py); the races here run with threads.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlitedict_stores import open_owner

from sessionkeeper import Session, SessionManager, SessionNotFound, StorageError, VersionConflict
from sessionkeeper.backend import decode_session
from sessionkeeper.testing import ManualClock

NOW = 1_700_000_000_000
#: A format-1 record (written before issue 14), literally: ``[1, "old", NOW, NOW, None,
#: bin(packed {"a": 1})]``.
FORMAT_1_RECORD = bytes.fromhex("9601a36f6c64cf0000018bcfe56800cf0000018bcfe56800c0c40481a16101")
MODES = [pytest.param(0, id="durable"), pytest.param(20, id="interval")]


def rows(path: Path) -> dict[str, bytes]:
    """The rows on disk, read with a connection of the test's own."""
    connection = sqlite3.connect(path)
    try:
        return dict(connection.execute('SELECT key, value FROM "sessions"'))
    finally:
        connection.close()


def on_disk(path: Path) -> dict[str, Session]:
    return {key: decode_session(value) for key, value in rows(path).items()}


def put_row(path: Path, key: str, value: bytes) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(
            'CREATE TABLE IF NOT EXISTS "sessions" (key TEXT PRIMARY KEY, value BLOB)'
        )
        connection.execute('INSERT OR REPLACE INTO "sessions" VALUES (?, ?)', (key, value))
    connection.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "sessions.sqlite"


@pytest.fixture
def open_store(path: Path) -> Iterator[Callable[..., SessionManager]]:
    """Open managers on ``path`` (closed after the test; ``close`` commits a buffer)."""
    opened: list[SessionManager] = []

    def make(auto_save: int = 0, **opts: Any) -> SessionManager:
        manager = open_owner(path, clock=ManualClock(NOW), auto_save=auto_save, **opts)
        opened.append(manager)
        return manager

    yield make
    for manager in reversed(opened):
        manager.close()


def run_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` in ``count`` threads started together; return their results (an
    exception is returned as it was raised). Bounded: a hang fails the test."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a worker hung"
    return results


@pytest.mark.parametrize("auto_save", MODES)
class TestRacesReachTheFile:
    def test_concurrent_updates_are_all_in_the_file(
        self, open_store: Callable[..., SessionManager], path: Path, auto_save: int
    ) -> None:
        """4 threads x 25 updates adding 1 leave exactly 100 in the copy and, after a close,
        in the file, with one version per write."""
        manager = open_store(auto_save)
        created = manager.create(metadata={"n": 0})

        def add(_: int) -> None:
            for _ in range(25):
                manager.update(created.id, lambda md: {**md, "n": md["n"] + 1})

        assert run_threads(4, add) == [None] * 4
        assert manager.peek(created.id).metadata == {"n": 100}
        manager.close()
        stored = on_disk(path)[created.id]
        assert (stored.metadata, stored.version) == ({"n": 100}, 101)

    def test_concurrent_takes_have_one_winner_and_the_row_is_gone(
        self, open_store: Callable[..., SessionManager], path: Path, auto_save: int
    ) -> None:
        """Of 8 threads taking one id, exactly one gets the session, and the row leaves the
        file."""
        manager = open_store(auto_save)
        for round_ in range(5):
            created = manager.create(metadata={"round": round_})
            results = run_threads(8, lambda _, sid=created.id: manager.take(sid))
            winners = [r for r in results if isinstance(r, Session)]
            assert len(winners) == 1, results
            assert winners[0].metadata == {"round": round_}
        manager.close()
        assert rows(path) == {}

    def test_concurrent_inserts_if_absent_have_one_winner(
        self, open_store: Callable[..., SessionManager], path: Path, auto_save: int
    ) -> None:
        """Of 8 threads storing one id with if_version=0, exactly one succeeds; the others get
        VersionConflict, and the file holds the winner's session."""
        manager = open_store(auto_save)
        results = run_threads(
            8, lambda i: manager.store(Session("one", NOW, NOW, None, {"by": i}), if_version=0)
        )
        winners = [r for r in results if isinstance(r, Session)]
        assert len(winners) == 1, results
        assert all(isinstance(r, VersionConflict) for r in results if r is not winners[0])
        manager.close()
        assert on_disk(path)["one"] == winners[0]

    def test_delete_owner_racing_creates_and_rotates_keeps_the_index_exact(
        self, open_store: Callable[..., SessionManager], path: Path, auto_save: int
    ) -> None:
        """Creates, rotations and delete_owner racing on one owner leave the owner index equal
        to the sessions stored, in the copy, in the file and after a reopen."""
        manager = open_store(auto_save)

        def work(i: int) -> object:
            if i == 0:
                return sum(manager.delete_owner("alice") for _ in range(20))
            for _ in range(20):
                created = manager.create(owner="alice")
                with contextlib.suppress(SessionNotFound):  # deleted meanwhile
                    manager.rotate(created.id)
            return None

        run_threads(4, work)
        listed = sorted(manager.list(owner="alice"))
        assert listed == sorted(s.id for s in manager.iter_sessions() if s.owner == "alice")
        manager.close()
        assert listed == sorted(k for k, s in on_disk(path).items() if s.owner == "alice")
        reopened = open_store(auto_save)
        assert sorted(reopened.list(owner="alice")) == listed
        assert reopened.count(owner="alice") == len(listed)


class TestFailedCommit:
    def test_a_failed_commit_undoes_every_atomic_operation(
        self, open_store: Callable[..., SessionManager], path: Path
    ) -> None:
        """In durable mode, when the commit fails (another connection holds SQLite's write
        lock), update, take, rotate, a conditional store and delete_owner raise StorageError,
        and neither the copy (sessions, versions, owner index) nor the file changed."""
        manager = open_store(0, busy_timeout=0)
        first = manager.create(owner="bob", metadata={"n": 1})
        second = manager.create(owner="bob")
        before = on_disk(path)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageError, match="locked"):
                manager.update(first.id, lambda md: {"n": 2})
            with pytest.raises(StorageError, match="locked"):
                manager.take(first.id)
            with pytest.raises(StorageError, match="locked"):
                manager.rotate(first.id)
            with pytest.raises(StorageError, match="locked"):
                manager.store(first.replace(metadata={"n": 3}), if_version=first.version)
            with pytest.raises(StorageError, match="locked"):
                manager.delete_owner("bob")
            assert manager.peek(first.id) == first
            assert manager.peek(second.id) == second
            assert sorted(manager.list(owner="bob")) == sorted([first.id, second.id])
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert on_disk(path) == before
        assert manager.delete_owner("bob") == 2
        assert rows(path) == {}


@pytest.mark.parametrize("auto_save", MODES)
class TestUndecodableRows:
    def test_an_unconditional_store_replaces_an_undecodable_row(
        self, open_store: Callable[..., SessionManager], path: Path, auto_save: int
    ) -> None:
        """A plain store (store_if with no condition) over a row that does not decode treats
        it as absent: the new session is stored with version 1, in the copy and the file."""
        put_row(path, "bad", b"junk")
        manager = open_store(auto_save)
        stored = manager.store(Session("bad", NOW, NOW, None, {"ok": True}))
        assert stored.version == 1
        assert manager.peek("bad") == stored
        manager.close()
        assert on_disk(path)["bad"] == stored

    def test_conditional_operations_on_an_undecodable_row_raise_and_keep_it(
        self, open_store: Callable[..., SessionManager], path: Path, auto_save: int
    ) -> None:
        """A conditional store (any if_version, 0 included), a take, a rotate and an update of
        an id whose row does not decode raise StorageError naming the key (never a conflict
        nor "not found"), and the row stays as it was."""
        put_row(path, "bad", b"junk")
        manager = open_store(auto_save)
        fresh = Session("bad", NOW, NOW, None, {})
        for if_version in (0, 1):
            with pytest.raises(StorageError, match="'bad'"):
                manager.store(fresh, if_version=if_version)
        with pytest.raises(StorageError, match="'bad'"):
            manager.take("bad")
        with pytest.raises(StorageError, match="'bad'"):
            manager.rotate("bad")
        with pytest.raises(StorageError, match="'bad'"):
            manager.update("bad", lambda md: md)
        manager.close()
        assert rows(path) == {"bad": b"junk"}


@pytest.mark.parametrize("auto_save", MODES)
def test_format_1_rows_read_as_version_1_and_take_the_new_format_when_written(
    open_store: Callable[..., SessionManager], path: Path, auto_save: int
) -> None:
    """A row written by the previous release (format 1, literal bytes) opens as version 1 with
    no owner; a conditional store on version 1 succeeds and writes format 2 (version 2), and
    a conditional store on a stale version is refused."""
    put_row(path, "old", FORMAT_1_RECORD)
    manager = open_store(auto_save)
    old = manager.peek("old")
    assert (old.version, old.owner, old.absolute_timeout_ms, old.metadata) == (
        1,
        None,
        None,
        {"a": 1},
    )
    assert manager.list(owner="anyone") == []
    updated = manager.store(old.replace(metadata={"a": 2}, owner="carol"), if_version=1)
    assert updated.version == 2
    with pytest.raises(VersionConflict):
        manager.store(old, if_version=1)
    manager.close()
    assert rows(path)["old"][1] == 2  # the record's format: [2, ...]
    assert on_disk(path)["old"] == updated
    assert open_store(auto_save).list(owner="carol") == ["old"]
