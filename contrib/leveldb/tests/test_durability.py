"""Crashes and competition: a writer killed with SIGKILL loses nothing it acknowledged, whether
it stores, touches and deletes or runs the atomic operations, and a second process opening a
database in use gets a clear error (LevelDB's lock, surfaced as ours).

The multi-process races of the atomicity kit do not apply to this backend: one process at a time
may open a LevelDB database, so the atomic operations only ever race between the threads of the
owning process (test_atomic.py). What a process can do to them is die in the middle of one: the
atomic-writer test kills it there."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
from click.testing import CliRunner

from sessionkeeper import SessionManager, SessionNotFound, StorageError
from sessionkeeper.cli import cli
from sessionkeeper.testing import ManualClock
from sessionkeeper_leveldb import LevelDBBackend

WRITER = Path(__file__).with_name("writer.py")
ATOMIC_WRITER = Path(__file__).with_name("atomic_writer.py")
START = 1_700_000_000_000  # the writer's clock starts here
#: Generous limit on a child process, so that a hang fails the test instead of blocking the run.
TIMEOUT_S = 120


def reopen(db: Path, now: int = START) -> SessionManager:
    """A manager on ``db`` as the test finds it after a kill: no scheduled cleanup, its clock
    at ``now``."""
    return SessionManager(
        backend="leveldb",
        backend_opts={"db_path": str(db)},
        cleanup_interval=0,
        clock=ManualClock(now),
    )


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"SESSIONKEEPER_CONFIG"}}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Acknowledgements(Protocol):
    """What a writer's output is recorded into."""

    def record(self, line: str) -> None: ...
    def intent(self, line: str) -> bool: ...


class Acknowledged:
    """What the writers acknowledged, across runs: the state a reopened store must hold."""

    def __init__(self) -> None:
        self.last_accessed: dict[str, int] = {}
        self.deleted: set[str] = set()
        #: Deletes begun but not acknowledged: the session may or may not be gone.
        self.deleting: set[str] = set()

    def record(self, line: str) -> None:
        words = line.split()
        if words[0] in {"stored", "touched"}:
            self.last_accessed[words[1]] = int(words[2])
        elif words[0] == "deleting":
            self.deleting.add(words[1])
        elif words[0] == "deleted":
            self.deleting.discard(words[1])
            self.deleted.add(words[1])
            self.last_accessed.pop(words[1], None)

    def intent(self, line: str) -> bool:
        """Whether ``line`` announces an operation rather than acknowledging one."""
        return line.startswith("deleting")

    def settle(self, stored: set[str]) -> None:
        """Resolve the deletes in flight at the kill by what the reopened store holds."""
        for sid in self.deleting - stored:
            self.deleted.add(sid)
            self.last_accessed.pop(sid, None)
        self.deleting.clear()


def run_writer_and_kill(
    arguments: list[str], acks: int, acknowledged: Acknowledgements, writer: Path = WRITER
) -> int:
    """Start ``writer`` with ``arguments``, let it acknowledge at least ``acks`` operations,
    SIGKILL it, and record every line it printed complete (acknowledgements and intents).
    Returns how many operations it acknowledged."""
    with subprocess.Popen(
        [sys.executable, str(writer), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    ) as process:  # leaving the block closes the pipes and waits for the process
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            first = process.stdout.readline()
            assert first == "ready\n", first + process.stderr.read()
            seen = 0
            while seen < acks:
                line = process.stdout.readline()
                assert line.endswith("\n"), "the writer stopped: " + process.stderr.read()
                acknowledged.record(line)
                seen += not acknowledged.intent(line)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=TIMEOUT_S)
            # Read through the same text stream: lines it already buffered are
            # acknowledgements too (communicate() would read the pipe underneath and miss them).
            rest = process.stdout.read()
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == -signal.SIGKILL
    for line in rest.splitlines(keepends=True):
        if line.endswith("\n"):  # a line cut by the kill was not acknowledged
            acknowledged.record(line)
            seen += not acknowledged.intent(line)
    return seen


def check_store(db: Path, acknowledged: Acknowledged) -> None:
    """The reopened store holds every acknowledged session (as last acknowledged or later),
    none that was acknowledged deleted, at most one write that was not acknowledged (the one in
    flight at the kill), and an expiry index that matches its sessions exactly."""
    with reopen(db) as sessions:
        stored = {s.id: s for s in sessions.iter_sessions(include_expired=True)}
        acknowledged.settle(set(stored))
        for sid, last_accessed in acknowledged.last_accessed.items():
            assert sid in stored, f"acknowledged session {sid} was lost"
            assert stored[sid].last_accessed >= last_accessed, f"touch of {sid} was lost"
            run, i = sid[1:].split("-")
            assert stored[sid].metadata == {"run": int(run), "i": int(i)}
        for sid in acknowledged.deleted:
            assert sid not in stored, f"acknowledged delete of {sid} came undone"
        unacknowledged = set(stored) - set(acknowledged.last_accessed)
        assert len(unacknowledged) <= 1, f"writes nobody made: {sorted(unacknowledged)}"
        for sid in unacknowledged:  # the write in flight at the kill landed: it is known now
            acknowledged.last_accessed[sid] = stored[sid].last_accessed

        backend = sessions.backend
        assert isinstance(backend, LevelDBBackend)
        keys = backend.keys
        with backend.db.iterator(
            start=keys.index, stop=keys.index_end, include_value=False
        ) as entries:
            index = {keys.parse_entry(entry) for entry in entries}
        expected = {
            (s.expires_at, sid.encode("ascii"))
            for sid, s in stored.items()
            if s.expires_at is not None
        }
        assert index == expected


@pytest.mark.sessionkeeper_slow
class TestKilledWriter:
    def test_sigkill_loses_nothing_acknowledged(self, tmp_path: Path) -> None:
        """A writer in sync mode, killed with SIGKILL at a random point, five times over the
        same database: after each kill the database opens, every acknowledged store, touch and
        delete is there, and the expiry index agrees with the sessions; at the end a cleanup
        through that index removes every session that can expire and nothing else."""
        db = tmp_path / "sessions.leveldb"
        acknowledged = Acknowledged()
        rng = random.Random(1234)
        total = 0
        for run in range(5):
            total += run_writer_and_kill([str(db), str(run)], rng.randint(10, 150), acknowledged)
            check_store(db, acknowledged)
        assert total >= 50
        assert acknowledged.deleted
        with reopen(db, START + 10 * 86_400_000) as sessions:
            assert sessions.cleanup_expired() > 0
            remaining = list(sessions.iter_sessions(include_expired=True))
            assert remaining
            assert all(s.timeout_ms is None for s in remaining)
            assert sessions.count() == len(remaining)


class AtomicAcknowledged:
    """What the atomic writer acknowledged, across runs (see atomic_writer.py)."""

    def __init__(self) -> None:
        self.counter = 0
        #: id -> owner of every session acknowledged created (or rotated to) and not removed.
        self.owned: dict[str, str] = {}
        self.removed: set[str] = set()
        #: Removals begun but not acknowledged: the session may or may not be gone.
        self.maybe_gone: set[str] = set()
        self.doomed_owner: str | None = None

    def intent(self, line: str) -> bool:
        return line.split()[0] in {"rotating", "taking", "deleting-owner"}

    def record(self, line: str) -> None:
        kind, *words = line.split()
        if kind == "updated":
            self.counter = int(words[0])
        elif kind == "created":
            self.owned[words[0]] = words[1]
        elif kind in {"rotating", "taking"}:
            self.maybe_gone.add(words[0])
        elif kind in {"rotated", "took"}:
            self.maybe_gone.discard(words[0])
            self.removed.add(words[0])
            del self.owned[words[0]]
            if kind == "rotated":
                self.owned[words[1]] = words[2]
        elif kind == "deleting-owner":
            self.doomed_owner = words[0]
        elif kind == "deleted-owner":
            for sid in [sid for sid, owner in self.owned.items() if owner == words[0]]:
                self.removed.add(sid)
                del self.owned[sid]
            self.doomed_owner = None

    def check(self, db: Path) -> None:
        """The reopened store: the counter holds every acknowledged update (and at most the
        one in flight), every acknowledged session is there with its owner, nothing
        acknowledged removed is, at most one session nobody acknowledged (the create or
        rotation in flight), and both indexes agree exactly with the records. Then what is
        stored becomes the known state."""
        with reopen(db) as sessions:
            stored = {s.id: s for s in sessions.iter_sessions(include_expired=True)}
            counter = stored.pop("counter")
            assert counter.metadata["n"] in {self.counter, self.counter + 1}, "an update was lost"
            assert counter.version == counter.metadata["n"] + 1
            for sid, owner in self.owned.items():
                if sid in self.maybe_gone or owner == self.doomed_owner:
                    continue
                assert sid in stored, f"acknowledged session {sid} was lost"
                assert stored[sid].owner == owner
            assert not self.removed & set(stored), "an acknowledged removal came undone"
            unknown = set(stored) - set(self.owned)
            assert len(unknown) <= 1, f"sessions nobody made: {sorted(unknown)}"
            backend = sessions.backend
            assert isinstance(backend, LevelDBBackend)
            keys, raw = backend.keys, backend.db
            with raw.iterator(start=keys.owners, stop=keys.owners_end, include_value=False) as it:
                owners = {entry[len(keys.owners) :] for entry in it}
            assert owners == {
                f"{s.owner}\0{sid}".encode() for sid, s in stored.items() if s.owner is not None
            }
            for owner in {s.owner for s in stored.values()} - {None}:
                assert sorted(sessions.list(owner=owner)) == sorted(
                    sid for sid, s in stored.items() if s.owner == owner
                )
            with raw.iterator(start=keys.index, stop=keys.index_end, include_value=False) as it:
                assert list(it) == []  # nothing here expires
        self.removed |= set(self.owned) - set(stored)
        self.owned = {sid: s.owner for sid, s in stored.items() if s.owner is not None}
        self.counter = counter.metadata["n"]
        self.maybe_gone.clear()
        self.doomed_owner = None


@pytest.mark.sessionkeeper_slow
class TestKilledAtomicWriter:
    def test_sigkill_in_atomic_operations_loses_nothing_acknowledged(self, tmp_path: Path) -> None:
        """A writer running update, create with an owner, rotate, take and delete_owner in
        sync mode, killed with SIGKILL at a random point, four times over one database: after
        each kill the counter holds every acknowledged update, every acknowledged session is
        there with its owner and no acknowledged removal came undone, and the owner index
        agrees exactly with the records (each operation is one write batch)."""
        db = tmp_path / "sessions.leveldb"
        acknowledged = AtomicAcknowledged()
        rng = random.Random(4321)
        for _ in range(4):
            run_writer_and_kill([str(db)], rng.randint(20, 120), acknowledged, ATOMIC_WRITER)
            acknowledged.check(db)
        assert acknowledged.counter >= 20
        assert acknowledged.removed


HOLDER = textwrap.dedent(
    """
    import sys
    from sessionkeeper import SessionManager

    with SessionManager(
        backend="leveldb", backend_opts={"db_path": sys.argv[1]}, cleanup_interval=0
    ) as sessions:
        sessions.create(metadata={"owner": True})
        print("ready", flush=True)
        sys.stdin.readline()
    """
)


@pytest.fixture
def held_database(tmp_path: Path) -> Iterator[Path]:
    """A database at ``tmp_path/db`` held open by another process until the test ends."""
    db = tmp_path / "db"
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    ) as holder:
        assert holder.stdout is not None
        assert holder.stderr is not None
        try:
            line = holder.stdout.readline()
            assert line == "ready\n", line + holder.stderr.read()
            yield db
        finally:
            if holder.poll() is None:
                _, errors = holder.communicate("stop\n", timeout=TIMEOUT_S)
                assert holder.returncode == 0, errors


@pytest.mark.sessionkeeper_slow
class TestSecondProcess:
    def test_opening_a_database_in_use_names_the_path(self, held_database: Path) -> None:
        """While another process has the database open, opening it here raises a
        ``StorageError`` from the leveldb backend that says it is already open by another
        process and names the database and its LOCK file."""
        with pytest.raises(StorageError, match="already open by another process") as info:
            SessionManager(
                backend="leveldb", backend_opts={"db_path": str(held_database)}, cleanup_interval=0
            )
        assert info.value.backend == "leveldb"
        assert str(held_database) in str(info.value)
        assert str(held_database / "LOCK") in str(info.value)

    def test_the_cli_reports_the_owner_with_a_storage_exit_code(
        self, held_database: Path, tmp_path: Path
    ) -> None:
        """``sessionkeeper list`` against a database its owner has open exits with the storage
        status (4) and the one-line error, not a traceback."""
        config = tmp_path / "sessionkeeper.toml"
        config.write_text(
            f'[sessionkeeper]\nbackend = "leveldb"\n'
            f"[sessionkeeper.backend_opts]\ndb_path = {str(held_database)!r}\n",
            encoding="utf-8",
        )
        result = CliRunner().invoke(cli, ["list", "--config", str(config)])
        assert result.exit_code == 4, result.output
        assert "already open by another process" in result.output
        assert "Traceback" not in result.output

    def test_the_database_opens_once_its_owner_is_gone(self, tmp_path: Path) -> None:
        """After the owning process exits, this process opens the database and finds what the
        owner stored."""
        db = tmp_path / "db"
        result = subprocess.run(
            [sys.executable, "-c", HOLDER, str(db)],
            input="\n",
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=TIMEOUT_S,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        with SessionManager(
            backend="leveldb", backend_opts={"db_path": str(db)}, cleanup_interval=0
        ) as sessions:
            (only,) = sessions.iter_sessions()
            assert only.metadata == {"owner": True}
            with pytest.raises(SessionNotFound):
                sessions.peek("not-there")
