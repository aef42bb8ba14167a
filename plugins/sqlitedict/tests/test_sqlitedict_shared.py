"""Shared mode (``shared = true``) with real processes on one file: who owns the file, reads
across processes, the index beside sqlitedict's table in both modes, busy waits, the sweep
lease, and the CLI's read-only commands beside a running writer.

The other processes are ``shared_worker.py`` (run with this interpreter) and the CLI itself.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlitedict_procs import HANG_S, WorkerProcess, run_cli
from sqlitedict_stores import open_owner

from sessionkeeper import Session, SessionManager, SessionNotFound, StorageError, VersionConflict
from sessionkeeper.backend import encode_session
from sessionkeeper_sqlitedict import check_file
from sessionkeeper_sqlitedict._lease import boot_id

WORKER = Path(__file__).with_name("shared_worker.py")
NOW = 1_700_000_000_000


class Worker(WorkerProcess):
    """A running ``shared_worker.py``, its stdin a pipe."""

    def __init__(self, mode: str, path: Path, *args: object) -> None:
        super().__init__(WORKER, mode, str(path), *args, stdin=True)

    def expect(self, word: str) -> str:
        """The rest of the next line, which must start with ``word``."""
        return self.next_expected(word)[len(word) :].strip()

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.close()


def start(workers: list[Worker], mode: str, path: Path, *args: object) -> Worker:
    worker = Worker(mode, path, *args)
    workers.append(worker)
    return worker


def shared(path: Path, *, clock: Any = None, **opts: Any) -> SessionManager:
    return SessionManager(
        backend="sqlitedict",
        backend_opts={"file_path": str(path), "shared": True, **opts},
        cleanup_interval=0,
        clock=clock or (lambda: NOW),
    )


def owner(path: Path, **opts: Any) -> SessionManager:
    return open_owner(path, clock=lambda: NOW, **opts)


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def index_matches_table(path: Path) -> bool:
    """Every row has exactly one index entry and no entry lacks its row."""
    connection = raw(path)
    try:
        missing = connection.execute(
            'SELECT count(*) FROM "sessions" s LEFT JOIN "sessions__sk_index" i '
            "ON i.key = s.key WHERE i.key IS NULL"
        ).fetchone()[0]
        orphans = connection.execute(
            'SELECT count(*) FROM "sessions__sk_index" i LEFT JOIN "sessions" s '
            "ON s.key = i.key WHERE s.key IS NULL"
        ).fetchone()[0]
        ok = connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.close()
    return bool(missing == 0 and orphans == 0 and ok)


class TestWhoOwnsTheFile:
    def test_shared_processes_open_one_file_together(
        self, tmp_path: Path, workers: list[Worker]
    ) -> None:
        """A process with ``shared = true`` opens a file another shared process has open, and
        each reads what the other wrote."""
        path = tmp_path / "s.sqlite"
        with shared(path) as first:
            first.store(Session("from-parent", NOW, NOW))
            other = start(workers, "open", path, "shared")
            assert other.expect("opened").split()[0] == str(other.pid)
            assert first.peek("from-parent").id == "from-parent"

    def test_a_single_owner_refuses_a_shared_process(
        self, tmp_path: Path, workers: list[Worker]
    ) -> None:
        """While a single owner runs, a shared open fails with a StorageError naming the
        single-owner mode and the owner's pid."""
        path = tmp_path / "s.sqlite"
        single = start(workers, "open", path, "owner")
        pid = single.expect("opened").split()[0]
        with pytest.raises(StorageError, match=rf"owned by process {pid} in single-owner mode"):
            shared(path)

    def test_a_shared_process_refuses_a_single_owner(
        self, tmp_path: Path, workers: list[Worker]
    ) -> None:
        """While shared processes run, a single owner's open fails naming shared mode and
        their pids; so does ``check --repair``, which needs the file alone."""
        path = tmp_path / "s.sqlite"
        sharer = start(workers, "open", path, "shared")
        pid = sharer.expect("opened").split()[0]
        with pytest.raises(StorageError, match=rf"shared mode \(shared = true\) by process {pid}"):
            owner(path)
        with pytest.raises(StorageError, match=rf"shared mode \(shared = true\) by process {pid}"):
            check_file(path, "sessions", backend="sqlitedict", repair=True)

    def test_the_two_modes_refuse_each_other_in_one_process(self, tmp_path: Path) -> None:
        """In one process too: a shared manager and a single owner of one file refuse each
        other, and the refused one leaves the other's file usable."""
        path = tmp_path / "s.sqlite"
        with shared(path) as sharer:
            with pytest.raises(StorageError, match="open in shared mode"):
                owner(path)
            sharer.store(Session("still-writable", NOW, NOW))
        with owner(path) as single:
            with pytest.raises(StorageError, match="single-owner manager"):
                shared(path)
            assert single.peek("still-writable").id == "still-writable"

    def test_a_forked_child_refuses_the_parents_manager(self, tmp_path: Path) -> None:
        """A forked child cannot use the manager its parent opened (StorageError saying to open
        it after forking); the parent's goes on."""
        path = tmp_path / "s.sqlite"
        with shared(path) as sessions:
            sessions.store(Session("p", NOW, NOW))
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child reports through the pipe
                try:
                    sessions.store(Session("c", NOW, NOW))
                    answer = b"stored"
                except StorageError as exc:
                    answer = b"refused" if b"after forking" in str(exc).encode() else b"other"
                os.write(write, answer)
                os._exit(0)
            os.close(write)
            answer = os.read(read, 100)
            os.close(read)
            os.waitpid(pid, 0)
            assert answer == b"refused"
            sessions.store(Session("p2", NOW, NOW))
            assert sorted(sessions.list()) == ["p", "p2"]


class TestReadsAcrossProcesses:
    def test_a_write_acknowledged_in_one_process_is_read_next_in_another(
        self, tmp_path: Path, workers: list[Worker]
    ) -> None:
        """Each store another process has acknowledged is seen by this process's next read
        (no cache between them)."""
        path = tmp_path / "s.sqlite"
        with shared(path) as reader:
            writer = start(workers, "write", path)
            writer.expect("ready")
            for _ in range(100):
                i = int(writer.expect("ack"))
                assert reader.peek(f"w{i}").metadata == {"i": i}
                assert f"w{i}" in reader.list(owner="writer")


def mappings_of(path: Path) -> int:
    """How many memory maps of ``path`` itself (not its ``-shm`` or ``-wal``) this process has."""
    name = os.path.realpath(path)
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if line.rstrip("\n").endswith(" " + name))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps")
@pytest.mark.parametrize(("mmap_size", "mapped"), [(None, True), (0, False)])
def test_reads_go_through_a_memory_map_unless_mmap_size_is_0(
    tmp_path: Path, mmap_size: int | None, mapped: bool
) -> None:
    """By default every connection reads the file through a memory map (``mmap_size``, 256
    MiB); ``mmap_size = 0`` maps nothing, and the reads are the same either way."""
    path = tmp_path / "s.sqlite"
    opts = {} if mmap_size is None else {"mmap_size": mmap_size}
    with shared(path, **opts) as sessions:
        ids = [sessions.create(metadata={"i": i}).id for i in range(200)]
        reads = [sessions.peek(session_id).metadata["i"] for session_id in ids]
        assert reads == list(range(200))
        assert (mappings_of(path) > 0) is mapped
    assert mappings_of(path) == 0  # closed: every connection's map is gone


class TestIndexInBothModes:
    def test_a_file_last_written_by_a_single_owner_gets_its_index_rebuilt(
        self, tmp_path: Path
    ) -> None:
        """A single owner changes sessions without touching the index (a replacement with a new
        owner and timeout, one delete and one insert: the row count is unchanged): the next
        shared open rebuilds the index, so owners, counts and expiry are the owner's."""
        path = tmp_path / "s.sqlite"
        with shared(path) as sessions:
            sessions.store(Session("moved", NOW, NOW, 1_000, owner="alice"))
            sessions.store(Session("deleted", NOW, NOW, None, owner="alice"))
        with owner(path) as single:
            single.store(Session("moved", NOW, NOW, None, owner="bob"))
            single.delete("deleted")
            single.store(Session("added", NOW, NOW, 1_000, owner="bob"))
        later = [NOW + 10_000]
        with shared(path, clock=lambda: later[0]) as sessions:
            assert sessions.list(owner="alice") == []
            assert sorted(sessions.list(owner="bob")) == ["moved"]
            assert sessions.count() == 1  # "added" has expired, "moved" never does
            assert sessions.cleanup_expired() == 1
            assert sessions.peek("moved").owner == "bob"
            assert sessions.stats()["backend_stats"]["index_rebuilds"] == 1
        assert index_matches_table(path)

    def test_data_written_in_shared_mode_reads_in_the_single_owner_and_back(
        self, tmp_path: Path
    ) -> None:
        """Sessions written shared open in the single owner with every field (versions and
        owners included), and what the owner writes reads shared: one file format."""
        path = tmp_path / "s.sqlite"
        with shared(path) as sessions:
            written = sessions.store(Session("a", NOW, NOW, 60_000, {"k": [1]}, owner="o"))
            written = sessions.update("a", lambda md: {**md, "n": 1})
        with owner(path) as single:
            assert single.peek("a") == written
            assert single.peek("a").version == 2
            single.store(Session("b", NOW, NOW, None, {"from": "owner"}, owner="o"))
        with shared(path) as sessions:
            assert sorted(sessions.list(owner="o")) == ["a", "b"]
            assert sessions.peek("b").metadata == {"from": "owner"}

    def test_rows_added_behind_its_back_are_indexed_at_the_next_open(self, tmp_path: Path) -> None:
        """A row another program added while no store was open (the counts then differ) is
        indexed by the next shared open: listed, counted, owned."""
        path = tmp_path / "s.sqlite"
        with shared(path) as sessions:
            sessions.store(Session("known", NOW, NOW))
        connection = raw(path)
        connection.execute(
            'INSERT INTO "sessions" VALUES (?, ?)',
            ("foreign", encode_session(Session("foreign", NOW, NOW, owner="f"))),
        )
        connection.close()
        with shared(path) as sessions:
            assert sorted(sessions.list()) == ["foreign", "known"]
            assert sessions.list(owner="f") == ["foreign"]

    @pytest.mark.sessionkeeper_slow
    def test_processes_opening_together_wait_for_one_rebuild(
        self, tmp_path: Path, workers: list[Worker]
    ) -> None:
        """Shared processes started together on a file a single owner wrote (the index to
        rebuild) all open, even with a 1 ms busy_timeout: an open waits for another's rebuild,
        and exactly one of them rebuilds."""
        path = tmp_path / "s.sqlite"
        with owner(path, auto_save=60_000) as single:
            single.store_many(
                [Session(f"s{i}", NOW, NOW, owner=f"o{i % 10}") for i in range(60_000)]
            )
        openers = [start(workers, "open", path, "shared", 1) for _ in range(3)]
        rebuilds = [int(opener.expect("opened").split()[1]) for opener in openers]
        assert sum(rebuilds) == 1
        with shared(path) as sessions:
            assert sessions.count(owner="o3") == 6_000

    def test_a_newer_layout_is_refused(self, tmp_path: Path) -> None:
        """A file whose shared layout is newer than this code knows is refused with an error
        saying to upgrade, and left as it is."""
        path = tmp_path / "s.sqlite"
        with shared(path) as sessions:
            sessions.store(Session("kept", NOW, NOW))
        connection = raw(path)
        connection.execute(
            "UPDATE sessionkeeper_meta SET value = 99 WHERE name = 'sessions:layout'"
        )
        connection.close()
        with pytest.raises(StorageError, match=r"layout is version 99.*upgrade"):
            shared(path)
        with owner(path) as single:
            assert single.peek("kept").id == "kept"

    def test_a_stale_index_entry_never_sweeps_a_live_session(self, tmp_path: Path) -> None:
        """An index entry saying a live session expired long ago (a file written by something
        else) is checked against the row: the sweep keeps the session and corrects the
        entry."""
        path = tmp_path / "s.sqlite"
        with shared(path) as sessions:
            sessions.store(Session("live", NOW, NOW, 60_000, owner="o"))
            connection = raw(path)
            connection.execute('UPDATE "sessions__sk_index" SET expires_at = 1')
            connection.close()
            assert sessions.cleanup_expired() == 0
            assert sessions.peek("live").owner == "o"
            assert sessions.count() == 1
        connection = raw(path)
        (expires,) = connection.execute('SELECT expires_at FROM "sessions__sk_index"').fetchone()
        connection.close()
        assert expires == NOW + 60_000

    def test_rows_that_are_not_sessions(self, tmp_path: Path) -> None:
        """A foreign row is indexed as undecodable: never listed, counted or swept; reading it
        is a StorageError; a conditional store over it is refused, a plain store replaces it."""
        path = tmp_path / "s.sqlite"
        connection = raw(path)
        connection.execute('CREATE TABLE "sessions" (key TEXT PRIMARY KEY, value BLOB)')
        connection.execute('INSERT INTO "sessions" VALUES (?, ?)', ("bad", b"\x80pickle"))
        connection.close()
        with shared(path) as sessions:
            assert sessions.list() == []
            assert sessions.count() == 0
            assert sessions.cleanup_expired() == 0
            with pytest.raises(StorageError, match="'bad'"):
                sessions.peek("bad")
            with pytest.raises(StorageError, match="'bad'"):
                sessions.store(Session("bad", NOW, NOW), if_version=0)
            assert sessions.stats()["backend_stats"]["undecodable_rows"] == 1
            assert sessions.store(Session("bad", NOW, NOW)).version == 1
            assert sessions.list() == ["bad"]
            assert sessions.stats()["backend_stats"]["undecodable_rows"] == 0


class TestBusy:
    def test_a_write_waiting_past_busy_timeout_names_the_file_and_the_holder(
        self, tmp_path: Path, workers: list[Worker]
    ) -> None:
        """While another process holds a write transaction, reads go on, and a write gives up
        after ``busy_timeout`` with a StorageError naming the file and that process (never
        SQLite's raw "database is locked"); once it is gone, writes go through."""
        path = tmp_path / "s.sqlite"
        with shared(path, busy_timeout=100) as sessions:
            sessions.store(Session("before", NOW, NOW))
            holder = start(workers, "hold", path)
            pid = holder.expect("held")
            assert sessions.peek("before").id == "before"
            with pytest.raises(StorageError) as info:
                sessions.store(Session("during", NOW, NOW))
            message = str(info.value)
            assert str(path) in message
            assert f"process {pid} (a write transaction)" in message
            assert "busy_timeout = 100 ms" in message
            with pytest.raises(StorageError, match=f"process {pid}"):
                sessions.update("before", lambda md: md)
            holder.close_stdin()
            holder.process.wait(HANG_S)
            sessions.store(Session("after", NOW, NOW))
            assert sorted(sessions.list()) == ["after", "before"]
            assert sessions.stats()["backend_stats"]["busy_failures"] == 2


def _expired_and_live(path: Path, expired: int, live: int) -> None:
    """Store ``expired`` sessions that expired long ago (by any clock) and ``live`` ones."""
    with shared(path) as sessions:
        sessions.store_many(
            [Session(f"e{i:05d}", 1, 1, 1_000, owner="gone") for i in range(expired)]
            + [Session(f"l{i}", 1, 1, None, owner="kept") for i in range(live)]
        )


def write_lease(path: Path, pid: int, deadline_ns: int) -> None:
    """Write a sweep lease held by process ``pid`` until ``deadline_ns`` (monotonic clock), as
    a sweeper of that process would."""
    connection = raw(path)
    connection.execute(
        "INSERT OR REPLACE INTO sessionkeeper_meta VALUES ('sessions:sweep', ?)",
        (f"{boot_id()} {pid} t0ken {deadline_ns}",),
    )
    connection.close()


class TestSweep:
    def test_one_sweep_at_a_time_and_a_dead_sweepers_lease_is_taken_over(
        self, tmp_path: Path, workers: list[Worker]
    ) -> None:
        """While a live process holds the sweep lease, a cleanup elsewhere removes nothing
        (that sweep is the other's); once that process is gone its lease is void and the
        cleanup removes every expired session."""
        path = tmp_path / "s.sqlite"
        _expired_and_live(path, 50, 5)
        holder = start(workers, "open", path, "shared")
        pid = int(holder.expect("opened").split()[0])
        write_lease(path, pid, time.monotonic_ns() + 3_600 * 10**9)
        with shared(path) as sessions:
            assert sessions.cleanup_expired() == 0
            assert sessions.stats()["backend_stats"]["sweep_lease_holder_pid"] == pid
            holder.kill()
            assert sessions.cleanup_expired() == 50
            assert sorted(sessions.list()) == [f"l{i}" for i in range(5)]
            assert sessions.stats()["backend_stats"]["sweep_lease_holder_pid"] is None

    def test_a_lease_past_its_deadline_is_taken_over(
        self, tmp_path: Path, workers: list[Worker]
    ) -> None:
        """A lease whose holder is alive but ran past its deadline (a stopped sweeper) is
        taken over."""
        path = tmp_path / "s.sqlite"
        _expired_and_live(path, 10, 1)
        holder = start(workers, "open", path, "shared")
        pid = int(holder.expect("opened").split()[0])
        write_lease(path, pid, time.monotonic_ns() - 1)
        with shared(path) as sessions:
            assert sessions.cleanup_expired() == 10

    @pytest.mark.sessionkeeper_slow
    def test_a_sweeper_killed_inside_a_batch_leaves_nothing_half_done(
        self, tmp_path: Path, workers: list[Worker]
    ) -> None:
        """A sweeping process SIGKILLed inside its third batch's transaction leaves the two
        batches it committed done and nothing of the third: another process's sweep then
        removes exactly the rest, every live session stays, and the index matches the table."""
        path = tmp_path / "s.sqlite"
        _expired_and_live(path, 3_500, 20)
        sweeper = start(workers, "sweep-stuck", path, 3)
        sweeper.expect("inside 3")
        sweeper.kill()
        assert index_matches_table(path)
        with shared(path) as sessions:
            assert sessions.count(owner="gone") == 0  # expired: never counted
            assert sessions.cleanup_expired() == 3_500 - 2 * 1_000
            assert sorted(sessions.list(owner="kept")) == sorted(f"l{i}" for i in range(20))
        assert index_matches_table(path)


class TestToolsBesideRunningWriters:
    @pytest.mark.sessionkeeper_slow
    def test_list_show_stats_check_export_backup_migrate_while_a_writer_runs(
        self, tmp_path: Path, workers: list[Worker]
    ) -> None:
        """With a shared writer process storing a session every millisecond, the CLI's
        read-only commands and ``migrate`` work on the same file and see what was written."""
        path = tmp_path / "s.sqlite"
        config = tmp_path / "sessionkeeper.toml"
        config.write_text(
            f'[sessionkeeper]\nbackend = "sqlitedict"\n[sessionkeeper.backend_opts]\n'
            f'file_path = "{path}"\nshared = true\n'
        )
        target = tmp_path / "target.toml"
        target.write_text(
            '[sessionkeeper]\nbackend = "sqlitedict"\n[sessionkeeper.backend_opts]\n'
            f'file_path = "{tmp_path / "copy.sqlite"}"\nauto_save = 0\n'
        )
        writer = start(workers, "write", path)
        writer.expect("ready")
        seen = int(writer.expect("ack"))
        listed = run_cli(config, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert f"w{seen}" in json.loads(listed.stdout)["ids"] or f"w{seen}" in listed.stdout
        shown = run_cli(config, "show", f"w{seen}", "--json")
        assert shown.returncode == 0, shown.stderr
        stats = run_cli(config, "stats", "--json")
        assert stats.returncode == 0, stats.stderr
        checked = run_cli(config, "check", "--json")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        exported = tmp_path / "export.jsonl"
        export = run_cli(config, "export", str(exported))
        assert export.returncode == 0, export.stderr
        assert f'"w{seen}"' in exported.read_text()
        backup = run_cli(config, "backup", str(tmp_path / "backups"), "-q")
        assert backup.returncode == 0, backup.stderr
        assert len(list((tmp_path / "backups").iterdir())) == 1
        migrate = run_cli(config, "migrate", "--to", str(target))
        assert migrate.returncode in (0, 6), migrate.stdout + migrate.stderr  # 6: source grew
        writer.kill()
        with owner(tmp_path / "copy.sqlite") as copy:
            assert copy.peek(f"w{seen}").metadata == {"i": seen}


def test_the_documented_shared_config_opens_one_file_for_several_managers(tmp_path: Path) -> None:
    """docs/examples/sqlitedict_shared.toml (docs/sqlitedict.md) loads, and two managers opened
    from it share one file in shared mode at synchronous NORMAL."""
    example = Path(__file__).resolve().parents[3] / "docs" / "examples" / "sqlitedict_shared.toml"
    config = tmp_path / "sessionkeeper.toml"
    shutil.copy(example, config)
    with (
        SessionManager.from_config(config, schedule=False) as first,
        SessionManager.from_config(config, schedule=False) as second,
    ):
        created = first.create(owner="worker-1")
        assert second.peek(created.id).owner == "worker-1"
        stats = second.stats()["backend_stats"]
        assert (stats["mode"], stats["synchronous"]) == ("shared", "NORMAL")
    assert (tmp_path / "data" / "sessions.sqlite").is_file()


def test_update_conflicts_are_exact_across_managers(tmp_path: Path) -> None:
    """Two managers of one file in one process (two connection pools): a conditional store
    naming a version the other manager has moved past raises VersionConflict naming both."""
    path = tmp_path / "s.sqlite"
    with shared(path) as first, shared(path) as second:
        stored = first.store(Session("v", NOW, NOW))
        second.store(Session("v", NOW, NOW, metadata={"k": 1}), if_version=stored.version)
        with pytest.raises(VersionConflict) as info:
            first.store(Session("v", NOW, NOW), if_version=stored.version)
        assert (info.value.expected, info.value.actual) == (1, 2)
        first.delete("v")
        with pytest.raises(SessionNotFound):
            second.peek("v")
