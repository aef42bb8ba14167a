"""Real processes on one file: SIGKILLed writers, clean exits, restarts, a second owner, the CLI.

The writer is ``sqlitedict_worker.py``, run with this interpreter. It prints ``ack <i>`` after
each ``store`` of session ``s<i>`` returned, so every complete ``ack`` line the parent read is an
acknowledged write. ``SESSIONKEEPER_CRASH_KILLS`` sets how many times the durable writer is
killed (default 20); ``SESSIONKEEPER_CRASH_SEED`` fixes the random kill points.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlitedict_procs import HANG_S, WorkerProcess, run_cli
from sqlitedict_stores import open_owner

from sessionkeeper import Session, SessionManager, StorageError

WORKER = Path(__file__).with_name("sqlitedict_worker.py")
KILLS = int(os.environ.get("SESSIONKEEPER_CRASH_KILLS", "20"))
SEED = int(os.environ.get("SESSIONKEEPER_CRASH_SEED", str(random.randrange(2**32))))

pytestmark = pytest.mark.sessionkeeper_slow


def expected_metadata(i: int) -> dict[str, Any]:
    return {"i": i, "user": f"user_{i}", "payload": "x" * 200, "nested": {"list": [i, str(i)]}}


class Worker(WorkerProcess):
    """A running ``sqlitedict_worker.py``."""

    def __init__(self, *args: object, stdin: bool = False) -> None:
        super().__init__(WORKER, *args, stdin=stdin)

    def expect(self, word: str) -> list[str]:
        """The words of the next line, which must start with ``word``."""
        return self.next_expected(word).split()

    def rest(self) -> Iterator[str]:
        """The lines still to come (after the worker ended)."""
        self._reader.join(HANG_S)
        while True:
            line = self.lines.get_nowait() if not self.lines.empty() else None
            if line is None:
                return
            yield line

    def finish(self) -> int:
        code = self.process.wait(HANG_S)
        self._reader.join(HANG_S)
        return code


def assert_sessions(path: Path, indices: set[int], where: str) -> None:
    """Every session ``s<i>`` for ``i`` in ``indices`` is in the file with its metadata."""
    with open_owner(path) as manager:
        stored = {s.id: s for s in manager.iter_sessions(include_expired=True)}
    missing = sorted(i for i in indices if f"s{i:07d}" not in stored)
    assert not missing, f"{where}: acknowledged sessions lost: {missing[:20]} (seed {SEED})"
    for i in indices:
        assert stored[f"s{i:07d}"].metadata == expected_metadata(i)


def integrity(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return [row[0] for row in connection.execute("PRAGMA integrity_check")]
    finally:
        connection.close()


def run_worker(*args: object) -> tuple[int, list[str], str]:
    worker = Worker(*args)
    try:
        code = worker.finish()
        return code, list(worker.rest()), worker.stderr()
    finally:
        worker.close()


class TestCrashes:
    @pytest.mark.parametrize("threads", [1, 8], ids=["one-thread", "eight-threads"])
    def test_durable_writer_killed_at_random_points_loses_nothing_acknowledged(
        self, tmp_path: Path, threads: int
    ) -> None:
        """A durable-mode writer SIGKILLed at random points, again and again: the file always
        reopens, passes SQLite's integrity check and holds every acknowledged session. With
        eight threads storing at once (their writes share commits), the same holds."""
        path = tmp_path / "durable.sqlite"
        rng = random.Random(SEED + threads)
        acknowledged: set[int] = set()
        start = 0
        for round_ in range(KILLS if threads == 1 else max(3, KILLS // 2)):
            worker = Worker("write", path, 0, start, threads)
            try:
                target = rng.choice([0, 0, 1, 2, 3, 5, 8, 13, 21, 34, 55])
                if target == 0:
                    # Kill early: while opening (locking, loading) or just after.
                    time.sleep(rng.uniform(0.0, 0.4))
                else:
                    worker.expect("ready")
                    seen = 0
                    while seen < target:
                        words = worker.expect("ack")
                        acknowledged.add(int(words[1]))
                        seen += 1
                    time.sleep(rng.uniform(0.0, 0.01))  # land anywhere in the next store
                worker.kill()
                for line in worker.rest():
                    if line.startswith("ack"):
                        acknowledged.add(int(line.split()[1]))
            finally:
                worker.close()
            assert integrity(path) == ["ok"], f"round {round_}: damaged file (seed {SEED})"
            assert_sessions(path, acknowledged, f"round {round_}")
            start = max(acknowledged, default=-1) + 1
        assert acknowledged, "no write was acknowledged in any round"

    def test_interval_writer_killed_loses_at_most_the_last_window(self, tmp_path: Path) -> None:
        """An interval-mode writer SIGKILLed at random points keeps every session that was
        acknowledged before its last completed commit: the loss is bounded by one window."""
        path = tmp_path / "interval.sqlite"
        rng = random.Random(SEED + 1)
        guaranteed: set[int] = set()
        start = 0
        for round_ in range(max(3, KILLS // 4)):
            worker = Worker("write", path, 25, start)
            committed = 0
            last_ack = start - 1
            try:
                worker.expect("ready")
                extra = rng.randint(0, 30)
                commits_seen = 0
                while commits_seen < 2 or extra > 0:
                    line = worker.next_line()
                    assert line is not None, worker.stderr()
                    word, value = line.split()
                    if word == "ack":
                        last_ack = int(value)
                        if commits_seen >= 2:
                            extra -= 1
                    elif word == "committed" and int(value) > committed:
                        committed = int(value)
                        commits_seen += 1
                worker.kill()
                for line in worker.rest():
                    word, value = line.split()
                    if word == "committed":
                        committed = max(committed, int(value))
            finally:
                worker.close()
            # Writes are numbered in order from ``start``; ``committed`` of them were on disk.
            guaranteed |= set(range(start, start + committed))
            assert integrity(path) == ["ok"], f"round {round_}: damaged file (seed {SEED})"
            assert_sessions(path, guaranteed, f"round {round_}")
            start = last_ack + 1
        assert guaranteed

    @pytest.mark.parametrize("ending", ["close", "exit"])
    def test_clean_shutdown_in_interval_mode_loses_nothing(
        self, tmp_path: Path, ending: str
    ) -> None:
        """With a long auto_save, every buffered write is committed when the manager is closed,
        and also when the interpreter exits with the manager still open."""
        path = tmp_path / "clean.sqlite"
        code, lines, stderr = run_worker("fill", path, 600_000, 500, ending)
        assert code == 0, stderr
        assert lines == ["stored 500"]
        assert_sessions(path, set(range(500)), ending)


class TestGroupCommit:
    def test_concurrent_durable_writers_are_all_on_disk_for_a_new_process(
        self, tmp_path: Path
    ) -> None:
        """Eight threads store 200 sessions each in durable mode, delete every tenth and all
        touch one shared session with their own times: a new process reopening the file finds
        exactly the surviving sessions, and the shared one at the latest time (never moved
        back), as each touch reported."""
        path = tmp_path / "group.sqlite"
        now = time.time_ns() // 1_000_000
        threads, per_thread = 8, 200
        with open_owner(path) as manager:
            backend = manager.backend
            manager.store(Session("shared", now, now, None, {"shared": True}))
            started = threading.Barrier(threads)
            errors: list[BaseException] = []

            def write(t: int) -> None:
                started.wait()
                try:
                    for i in range(per_thread):
                        session_id = f"g{t}-{i:03d}"
                        manager.store(Session(session_id, now, now, None, {"t": t, "i": i}))
                        if i % 10 == 9:
                            assert backend.sessionkeeper_delete(session_id) is True
                        at = now + 1 + i * threads + t
                        touched = backend.sessionkeeper_touch("shared", at)
                        assert touched is not None
                        assert touched.last_accessed >= at
                except BaseException as exc:
                    errors.append(exc)

            workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(HANG_S)
                assert not worker.is_alive(), "a durable writer hung"
            assert not errors, errors
            stats = manager.stats()["backend_stats"]
            assert stats["committed_writes"] == stats["writes"]
            assert 0 < stats["commits"] <= stats["committed_writes"]
        code, lines, stderr = run_worker("dump", path)
        assert code == 0, stderr
        stored = json.loads(lines[0])["stored"]
        expected = {
            f"g{t}-{i:03d}": {"t": t, "i": i}
            for t in range(threads)
            for i in range(per_thread)
            if i % 10 != 9
        }
        assert {key: value["metadata"] for key, value in stored.items() if key != "shared"} == (
            expected
        )
        assert len(expected) == threads * per_thread * 9 // 10
        assert stored["shared"]["last_accessed"] == now + per_thread * threads


class TestRestart:
    def test_sessions_survive_a_restart_in_a_new_process(self, tmp_path: Path) -> None:
        """Sessions created by one process are found by the next with their metadata and
        timestamps; an expired one is not returned and is removed by cleanup."""
        path = tmp_path / "restart.sqlite"
        now = time.time_ns() // 1_000_000
        code, lines, stderr = run_worker("create", path, now)
        assert (code, lines) == (0, ["created"]), stderr
        code, lines, stderr = run_worker("dump", path)
        assert code == 0, stderr
        found = json.loads(lines[0])
        ids = [f"s{i:07d}" for i in range(100)]
        assert found["live"] == sorted(["forever", "live", *ids])
        assert found["stored"]["live"] == {
            "id": "live",
            "created_at": now - 5_000,
            "last_accessed": now - 1_000,
            "timeout_ms": 3_600_000,
            "metadata": {"kind": "live"},
            "version": 1,
            "owner": None,
            "absolute_timeout_ms": None,
        }
        assert found["stored"]["forever"]["timeout_ms"] is None
        assert found["stored"]["expired"]["last_accessed"] == now - 60_000
        for i in (0, 42, 99):
            stored = found["stored"][f"s{i:07d}"]
            assert stored["metadata"] == expected_metadata(i)
            assert stored["created_at"] == stored["last_accessed"] == now
        assert found["removed"] == 1
        assert "expired" not in found["after_cleanup"]
        assert len(found["after_cleanup"]) == 102


class TestSecondProcess:
    @pytest.fixture
    def owner(self, tmp_path: Path) -> Iterator[tuple[Worker, Path]]:
        """A process owning ``owned.sqlite`` (with three sessions) until the test ends."""
        path = tmp_path / "owned.sqlite"
        with open_owner(path) as manager:
            for name in ("alpha", "beta", "gamma"):
                manager.create(metadata={"name": name})
        worker = Worker("hold", path, stdin=True)
        try:
            worker.expect("ready")
            yield worker, path
        finally:
            worker.close()

    def test_second_writer_is_refused_naming_file_and_pid(self, owner: tuple[Worker, Path]) -> None:
        """Opening a file another process owns for writing fails with a StorageError naming
        the file and the owner's pid; once the owner has exited, the open succeeds."""
        worker, path = owner
        with pytest.raises(StorageError) as info:
            open_owner(path)
        message = str(info.value)
        assert str(path) in message
        assert f"process {worker.process.pid}" in message
        assert worker.process.stdin is not None
        worker.process.stdin.close()
        assert worker.expect("closed")
        assert worker.finish() == 0
        with open_owner(path) as manager:
            assert manager.count() == 3

    @pytest.mark.parametrize("link", ["symlink", "hard-link"])
    @pytest.mark.parametrize("through", ["second", "owner"])
    def test_a_second_writer_through_a_link_is_refused(
        self, tmp_path: Path, link: str, through: str
    ) -> None:
        """Issue 12 item 4: one owning process per *real* file. With ``other`` a symlink or a
        hard link to the file, a second writer is refused naming the owner's pid, whichever
        name the owner ("owner") or the second writer ("second") used; the owner's sessions
        stay as it wrote them, and once it has exited the other name opens."""
        real = tmp_path / "real.sqlite"
        other = tmp_path / "other.sqlite"
        with open_owner(real) as manager:
            manager.create(metadata={"name": "alpha"})
        if link == "symlink":
            other.symlink_to(real)
        else:
            os.link(real, other)
        owned, second = (real, other) if through == "second" else (other, real)
        worker = Worker("hold", owned, stdin=True)
        try:
            worker.expect("ready")
            with pytest.raises(StorageError) as info:
                open_owner(second)
            message = str(info.value)
            assert "locked by" in message, message
            assert f"process {worker.process.pid}" in message
            assert str(second) in message
            assert worker.process.stdin is not None
            worker.process.stdin.close()
            assert worker.expect("closed")
            assert worker.finish() == 0
        finally:
            worker.close()
        with open_owner(second) as manager:
            assert [s.metadata for s in manager.iter_sessions()] == [{"name": "alpha"}]

    def test_read_only_opens_work_beside_the_owner(self, owner: tuple[Worker, Path]) -> None:
        """A read-only manager reads a file another process owns, without taking its lock."""
        _, path = owner
        with SessionManager(
            backend="sqlitedict",
            backend_opts={"file_path": str(path)},
            read_only=True,
            cleanup_interval=0,
        ) as reader:
            assert reader.count() == 3
            names = sorted(s.metadata["name"] for s in reader.iter_sessions())
        assert names == ["alpha", "beta", "gamma"]

    def test_cli_inspects_the_store_while_the_owner_runs(
        self, owner: tuple[Worker, Path], tmp_path: Path
    ) -> None:
        """``sessionkeeper list``, ``stats`` and ``check`` run beside the owner; ``check
        --repair`` and ``cleanup`` (which write) are refused with the owner's pid, exit 4."""
        worker, path = owner
        config = tmp_path / "sessionkeeper.toml"
        config.write_text(
            textwrap.dedent(
                f"""\
                [sessionkeeper]
                backend = "sqlitedict"

                [sessionkeeper.backend_opts]
                file_path = "{path.name}"
                """
            ),
            encoding="utf-8",
        )

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return run_cli(config, *args)

        listed = cli("list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["count"] == 3
        # "--" before the id: one generated id in 64 starts with "-" (see `show --help`).
        shown = cli("show", "--json", "--", json.loads(listed.stdout)["ids"][0])
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["metadata"]["name"] in {"alpha", "beta", "gamma"}
        stats = cli("stats", "--json")
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["backend_stats"]["mode"] == "read-only"
        checked = cli("check", "--json")
        assert checked.returncode == 0, checked.stderr
        assert json.loads(checked.stdout)["intact"] == 3
        for command in (("check", "--repair"), ("cleanup",)):
            refused = cli(*command)
            assert refused.returncode == 4, refused.stderr
            assert f"process {worker.process.pid}" in refused.stderr
