"""Damaged files: a clear error on open or read, and ``check --repair`` salvaging every intact row.

Each test builds a real store, closes it, damages the file the way disks and people do (cut it
short, overwrite a page, write a row that is not a session) and then opens, checks and repairs it.
Which sessions are intact is worked out from the file's bytes before the damage: a session is
intact when its encoded record lies wholly outside the damaged bytes.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from sqlitedict import SqliteDict
from sqlitedict_stores import open_owner as owner

from sessionkeeper import Session, SessionNotFound, StorageError
from sessionkeeper.backend import encode_session
from sessionkeeper_sqlitedict import check_file

NOW = 1_700_000_000_000
PAGE = 4096


def make_sessions(count: int, *, pad: int = 900) -> list[Session]:
    """Sessions of about 1 KB each (three or four to a page), ids ``s00000``..."""
    return [
        Session(f"s{i:05d}", NOW, NOW + i, None, {"i": i, "pad": "p" * pad}) for i in range(count)
    ]


def build(path: Path, sessions: Iterable[Session], **opts: Any) -> bytes:
    """Store ``sessions`` in a new file, close it, and return the file's bytes."""
    with owner(path, **opts) as manager:
        for session in sessions:
            manager.store(session)
    return path.read_bytes()


def stored(path: Path, table: str = "sessions") -> dict[str, Session]:
    with owner(path, table_name=table) as manager:
        return {s.id: s for s in manager.iter_sessions(include_expired=True)}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def records_in(data: bytes, sessions: Iterable[Session], start: int, end: int) -> set[str]:
    """Ids of the sessions whose record overlaps ``data[start:end]``."""
    touched = set()
    for session in sessions:
        record = encode_session(session)
        offset = data.find(record)
        assert offset >= 0, f"{session.id} is not stored in one piece"
        if offset < end and offset + len(record) > start:
            touched.add(session.id)
    return touched


def assert_repaired(path: Path, report: dict[str, Any], original: bytes) -> None:
    """The repair kept the original byte for byte as the backup, and the new file is sound."""
    assert report["repaired"] is True
    backup = Path(report["backup"])
    assert backup.read_bytes() == original
    assert backup.name.startswith(path.name + ".")
    assert backup.name.endswith(".bak")
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        connection.close()
    assert check_file(path, "sessions", backend="sqlitedict", repair=False)["ok"] is True


class TestTruncatedFile:
    def test_open_fails_clearly_and_repair_keeps_every_intact_session(self, tmp_path: Path) -> None:
        """A file cut to half its length does not open (StorageError naming the file and
        pointing at check); check reports the lost rows by key; repair keeps every session whose
        record lies before the cut, and the store opens again."""
        path = tmp_path / "cut.sqlite"
        sessions = make_sessions(300)
        data = build(path, sessions)
        cut = len(data) // PAGE // 2 * PAGE
        path.write_bytes(data[:cut])
        damaged = path.read_bytes()
        intact = {s.id for s in sessions} - records_in(data, sessions, cut, len(data))
        assert 0 < len(intact) < len(sessions)

        with pytest.raises(StorageError, match="sessionkeeper check") as info:
            owner(path)
        assert str(path) in str(info.value)

        report = check_file(path, "sessions", backend="sqlitedict", repair=False)
        assert report["ok"] is False
        assert report["intact"] == len(intact)
        assert report["unreadable"] == len(sessions) - len(intact)
        lost = sorted({s.id for s in sessions} - intact)
        assert any(repr(lost[0]) in problem for problem in report["problems"])
        assert path.read_bytes() == damaged, "a check without --repair changed the file"

        report = check_file(path, "sessions", backend="sqlitedict", repair=True)
        assert report["salvaged"] == len(intact)
        assert_repaired(path, report, damaged)
        by_id = {s.id: s for s in sessions}
        found = stored(path)
        assert set(found) == intact
        for session_id in intact:
            assert found[session_id] == by_id[session_id]


class TestOverwrittenPage:
    def test_rows_on_other_pages_are_all_salvaged(self, tmp_path: Path) -> None:
        """A page of the table overwritten with 0xFF bytes makes the open fail; repair keeps
        every session on the other pages, and the report names the keys that were lost."""
        path = tmp_path / "page.sqlite"
        sessions = make_sessions(300)
        data = build(path, sessions)
        page = data.find(encode_session(sessions[150])) // PAGE
        damaged = bytearray(data)
        damaged[page * PAGE : (page + 1) * PAGE] = b"\xff" * PAGE
        path.write_bytes(bytes(damaged))
        lost = records_in(data, sessions, page * PAGE, (page + 1) * PAGE)
        assert "s00150" in lost

        with pytest.raises(StorageError, match="malformed"):
            owner(path)

        report = check_file(path, "sessions", backend="sqlitedict", repair=True)
        assert report["unreadable"] == len(lost)
        for session_id in lost:
            assert any(repr(session_id) in problem for problem in report["problems"])
        assert report["salvaged"] == len(sessions) - len(lost)
        assert_repaired(path, report, bytes(damaged))
        assert set(stored(path)) == {s.id for s in sessions} - lost


class TestDamagedRecord:
    def test_damaged_bytes_inside_a_record_are_reported_and_quarantined(
        self, tmp_path: Path
    ) -> None:
        """Bytes overwritten inside one record (the page still parses) leave the store
        openable: that session raises StorageError naming file, table and key, never
        SessionNotFound, the others are served, and repair quarantines the damaged row."""
        path = tmp_path / "record.sqlite"
        sessions = make_sessions(50)
        data = build(path, sessions)
        victim = sessions[20]
        offset = data.find(encode_session(victim))
        damaged = bytearray(data)
        damaged[offset : offset + 4] = b"\xc1\xc1\xc1\xc1"  # 0xc1: never valid in msgpack
        path.write_bytes(bytes(damaged))

        with owner(path) as manager:
            for read in (manager.fetch, manager.peek):
                with pytest.raises(StorageError) as info:
                    read(victim.id)
                assert not isinstance(info.value, SessionNotFound)
                message = str(info.value)
                assert str(path) in message
                assert "'sessions'" in message
                assert repr(victim.id) in message
            assert manager.count() == 49
            assert manager.peek("s00021") == sessions[21]
            assert manager.stats()["backend_stats"]["undecodable_rows"] == 1

        report = check_file(path, "sessions", backend="sqlitedict", repair=True)
        assert report["undecodable"] == 1
        assert report["quarantined"] == 1
        assert report["salvaged"] == 49
        assert_repaired(path, report, bytes(damaged))
        quarantine = sqlite3.connect(report["quarantine"])
        try:
            rows = quarantine.execute("SELECT table_name, key, reason FROM quarantine").fetchall()
        finally:
            quarantine.close()
        assert [(table, key) for table, key, _ in rows] == [("sessions", victim.id)]
        assert "does not decode" in rows[0][2]
        assert set(stored(path)) == {s.id for s in sessions} - {victim.id}


class Exploit:
    """Unpickling this creates the file named ``target``: proof that pickle ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.target,))


class TestForeignRows:
    def test_a_pickled_row_is_never_unpickled(self, tmp_path: Path) -> None:
        """A row that plain sqlitedict wrote with its default pickle encoding is reported as a
        foreign row and quarantined; the pickle inside is never run."""
        path = tmp_path / "foreign.sqlite"
        sessions = make_sessions(5, pad=10)
        build(path, sessions)
        proof = tmp_path / "pickle-ran"
        with SqliteDict(str(path), tablename="sessions", autocommit=True) as foreign:
            foreign["evil"] = Exploit(proof)  # sqlitedict's default: pickle
        assert pickle.loads(pickle.dumps(0)) == 0  # (pickle itself works here)

        with owner(path) as manager:
            with pytest.raises(StorageError, match="'evil'"):
                manager.fetch("evil")
            assert sorted(manager.list()) == [s.id for s in sessions]
            with pytest.raises(StorageError, match="do not decode"):
                list(manager.iter_sessions())
        report = check_file(path, "sessions", backend="sqlitedict", repair=True)
        assert (report["undecodable"], report["salvaged"]) == (1, 5)
        assert not proof.exists(), "a pickled row was unpickled"

    def test_a_foreign_row_can_be_replaced_or_deleted(self, tmp_path: Path) -> None:
        """Storing a session under a foreign row's key replaces the row; deleting such a key
        removes it and returns True; both survive a reopen."""
        path = tmp_path / "heal.sqlite"
        build(path, make_sessions(2, pad=10))
        connection = sqlite3.connect(path)
        with connection:
            connection.executemany(
                "INSERT INTO sessions VALUES (?, ?)", [("healed", b"junk"), ("dropped", b"junk")]
            )
        connection.close()
        healthy = Session("healed", NOW, NOW, None, {"ok": True})
        with owner(path) as manager:
            manager.store(healthy)
            assert manager.delete("dropped") is True
            assert manager.delete("dropped") is False
        found = stored(path)
        assert found["healed"] == healthy
        assert "dropped" not in found
        assert check_file(path, "sessions", backend="sqlitedict", repair=False)["ok"] is True


class TestNotADatabase:
    def test_garbage_file_fails_to_open_and_repair_starts_an_empty_store(
        self, tmp_path: Path
    ) -> None:
        """A file that is not SQLite at all fails to open with a StorageError naming it;
        repair keeps it as the backup and leaves an empty, working store."""
        path = tmp_path / "garbage.sqlite"
        garbage = b"this is not a database " * 400
        path.write_bytes(garbage)
        with pytest.raises(StorageError) as info:
            owner(path)
        assert str(path) in str(info.value)
        assert "not a database" in str(info.value)
        report = check_file(path, "sessions", backend="sqlitedict", repair=True)
        assert report["salvaged"] == 0
        assert any("cannot be read as a SQLite database" in p for p in report["problems"])
        assert_repaired(path, report, garbage)
        with owner(path) as manager:
            assert manager.count() == 0
            manager.store(Session("fresh", NOW, NOW))


class TestRepair:
    def test_a_healthy_store_is_left_alone(self, tmp_path: Path) -> None:
        """Repairing a store with nothing wrong rewrites nothing: same bytes, no backup."""
        path = tmp_path / "healthy.sqlite"
        build(path, make_sessions(10, pad=10))
        before = digest(path)
        report = check_file(path, "sessions", backend="sqlitedict", repair=True)
        assert report["ok"] is True
        assert report["repaired"] is False
        assert report["backup"] is None
        assert "nothing to repair" in report["notes"]
        assert digest(path) == before
        assert not [p for p in tmp_path.iterdir() if p.suffix in (".bak", ".quarantine")]

    def test_other_tables_of_the_file_are_kept(self, tmp_path: Path) -> None:
        """Repairing one table's rows rewrites the file with the other tables' rows too."""
        path = tmp_path / "shared.sqlite"
        other = make_sessions(7, pad=10)
        build(path, other, table_name="other")
        build(path, make_sessions(3, pad=10))
        connection = sqlite3.connect(path)
        with connection:
            connection.execute("INSERT INTO sessions VALUES ('bad', x'00')")
        connection.close()
        report = check_file(path, "sessions", backend="sqlitedict", repair=True)
        assert report["other_tables"] == {"other": 7}
        assert (report["salvaged"], report["quarantined"]) == (3, 1)
        assert sorted(stored(path, "other")) == sorted(s.id for s in other)
        assert len(stored(path)) == 3

    def test_the_wal_of_the_original_goes_with_the_backup(self, tmp_path: Path) -> None:
        """Committed rows still in the original's WAL are read by the repair, and the WAL is
        moved to the backup's name, so it is never replayed into the repaired file."""
        path = tmp_path / "wal.sqlite"
        build(path, make_sessions(3, pad=10))
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("PRAGMA journal_mode = WAL")
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("INSERT INTO sessions VALUES ('bad', x'00')")
        writer.execute(
            "INSERT INTO sessions VALUES (?, ?)",
            ("in-wal", encode_session(Session("in-wal", NOW, NOW))),
        )
        # Copy the file and its WAL as a crash would leave them, then let the writer go.
        files = {kind: path.with_name(path.name + kind) for kind in ("", "-wal")}
        copies = {kind: source.read_bytes() for kind, source in files.items()}
        writer.close()
        for kind, content in copies.items():
            files[kind].write_bytes(content)
        report = check_file(path, "sessions", backend="sqlitedict", repair=True)
        assert report["salvaged"] == 4
        assert not files["-wal"].exists()
        assert Path(report["backup"] + "-wal").read_bytes() == copies["-wal"]
        assert "in-wal" in stored(path)

    def test_a_crash_in_rollback_journal_mode_is_rolled_back(self, tmp_path: Path) -> None:
        """A writer killed mid-transaction in DELETE journal mode leaves a hot journal: the
        read-only check says how to proceed, and repair lets SQLite roll it back, after which
        every session is as it was committed (nothing to rewrite)."""
        path = tmp_path / "journal.sqlite"
        sessions = make_sessions(100, pad=500)
        build(path, sessions, journal_mode="DELETE")
        crash = textwrap.dedent(
            f"""\
            import os, signal, sqlite3
            connection = sqlite3.connect({str(path)!r}, isolation_level=None)
            connection.execute("PRAGMA cache_size = 1")  # spill changed pages into the file
            connection.execute("BEGIN")
            connection.execute("UPDATE sessions SET value = randomblob(600)")
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        subprocess.run([sys.executable, "-c", crash], check=False, timeout=120)
        assert path.with_name(path.name + "-journal").stat().st_size > 0
        report = check_file(path, "sessions", backend="sqlitedict", repair=False)
        assert report["ok"] is False
        assert "check --repair" in report["problems"][0]
        report = check_file(path, "sessions", backend="sqlitedict", repair=True)
        assert report["ok"] is True
        assert report["intact"] == 100
        assert any("rolled back" in note for note in report["notes"])
        assert stored(path) == {s.id: s for s in sessions}

    def test_check_of_a_missing_file_reports_it(self, tmp_path: Path) -> None:
        """Checking a file that does not exist reports that, and creates nothing."""
        path = tmp_path / "missing.sqlite"
        report = check_file(path, "sessions", backend="sqlitedict", repair=True)
        assert report["ok"] is False
        assert "does not exist" in report["problems"][0]
        assert list(tmp_path.iterdir()) == []

    def test_repair_is_refused_while_the_store_is_open_for_writing(self, tmp_path: Path) -> None:
        """A repair needs the owner stopped: while a manager owns the file, it is refused;
        a plain check runs beside it."""
        path = tmp_path / "busy.sqlite"
        with owner(path) as manager:
            manager.store(Session("s", NOW, NOW))
            assert check_file(path, "sessions", backend="sqlitedict", repair=False)["ok"]
            with pytest.raises(StorageError, match="open for writing"):
                check_file(path, "sessions", backend="sqlitedict", repair=True)


def damage_a_row(path: Path, table: str = "sessions") -> None:
    """Add a row to ``table`` that is not a session, so that a repair has something to do."""
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(f'INSERT INTO "{table}" VALUES (?, ?)', ("junk", b"\xc1 not a record"))
    connection.close()


def table_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()
    finally:
        connection.close()


class TestRepairTouchesOnlySessionTables:
    """Issue 12, items 2 and 3: a repair never replaces or drops a table that is not the
    session table it was pointed at."""

    def test_a_table_of_another_shape_is_refused_and_left_alone(self, tmp_path: Path) -> None:
        """``table_name`` naming an application's own table (other columns, 1,000 rows): the
        repair refuses, says the table is not a session table, and changes nothing."""
        path = tmp_path / "app.sqlite"
        build(path, make_sessions(3, pad=10), table_name="real_sessions")
        connection = sqlite3.connect(path)
        with connection:
            connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
            connection.executemany(
                "INSERT INTO users VALUES (?, ?)", [(i, f"user {i}") for i in range(1_000)]
            )
        connection.close()
        damage_a_row(path, "real_sessions")  # something to repair elsewhere in the file
        before = digest(path)
        report = check_file(path, "users", backend="sqlitedict", repair=True)
        assert report["ok"] is False
        assert report["repaired"] is False
        assert report["backup"] is None
        assert any("not a session table" in p and "refused" in p for p in report["problems"])
        assert digest(path) == before
        assert len(table_rows(path, "users")) == 1_000
        assert not [p for p in tmp_path.iterdir() if p.suffix in (".bak", ".quarantine")]

    def test_a_table_of_foreign_rows_only_is_refused(self, tmp_path: Path) -> None:
        """A (key, value) table none of whose readable rows is a session (another program's
        plain sqlitedict table, pickled values) is not emptied into a quarantine: refused."""
        path = tmp_path / "plain.sqlite"
        with SqliteDict(str(path), tablename="cache", autocommit=True) as foreign:
            for i in range(20):
                foreign[f"k{i}"] = {"value": i}  # sqlitedict's default: pickle
        before = digest(path)
        report = check_file(path, "cache", backend="sqlitedict", repair=True)
        assert report["repaired"] is False
        assert any("none of its 20 readable row(s)" in p for p in report["problems"])
        assert digest(path) == before

    @pytest.mark.parametrize("other", ["sqliteapp", "sqlite1", "SQLiteData"])
    def test_tables_whose_name_starts_with_sqlite_are_kept(
        self, tmp_path: Path, other: str
    ) -> None:
        """Another table named like ``sqliteapp`` (``_`` is a LIKE wildcard, so ``NOT LIKE
        'sqlite_%'`` matched it) is copied by a repair, rows and all."""
        path = tmp_path / "names.sqlite"
        kept = make_sessions(4, pad=10)
        build(path, kept, table_name=other)
        build(path, make_sessions(2, pad=10))
        damage_a_row(path)
        report = check_file(path, "sessions", backend="sqlitedict", repair=True)
        assert report["repaired"] is True
        assert report["other_tables"] == {other: 4}
        assert sorted(stored(path, other)) == sorted(s.id for s in kept)

    def test_a_session_table_named_sqliteapp_is_repaired(self, tmp_path: Path) -> None:
        """The session table itself may be called ``sqliteapp``: repair keeps its sessions and
        its index, and the other tables."""
        path = tmp_path / "own.sqlite"
        build(path, make_sessions(5, pad=10), table_name="sqliteapp")
        build(path, make_sessions(2, pad=10), table_name="sqlite1")
        damage_a_row(path, "sqliteapp")
        report = check_file(path, "sqliteapp", backend="sqlitedict", repair=True)
        assert (report["salvaged"], report["quarantined"]) == (5, 1)
        assert report["other_tables"] == {"sqlite1": 2}
        assert len(stored(path, "sqliteapp")) == 5

    def test_a_without_rowid_table_is_copied(self, tmp_path: Path) -> None:
        """Another table declared WITHOUT ROWID (it has no rowid to scan by) keeps every row
        through a repair, as do the counters of an AUTOINCREMENT table."""
        path = tmp_path / "norowid.sqlite"
        build(path, make_sessions(2, pad=10))
        connection = sqlite3.connect(path)
        with connection:
            connection.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")
            connection.executemany(
                "INSERT INTO kv VALUES (?, ?)", [(f"k{i}", b"v") for i in range(50)]
            )
            connection.execute("CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, t TEXT)")
            connection.executemany("INSERT INTO log (t) VALUES (?)", [("x",)] * 10)
            connection.execute("DELETE FROM log WHERE id > 5")
        connection.close()
        damage_a_row(path)
        report = check_file(path, "sessions", backend="sqlitedict", repair=True)
        assert report["other_tables"] == {"kv": 50, "log": 5}
        assert len(table_rows(path, "kv")) == 50
        connection = sqlite3.connect(path)
        with connection:
            connection.execute("INSERT INTO log (t) VALUES ('after')")
            new_id = connection.execute("SELECT max(id) FROM log").fetchone()[0]
        connection.close()
        assert new_id == 11, "AUTOINCREMENT reused a deleted id after the repair"

    def test_a_differently_cased_table_name_is_the_same_table(self, tmp_path: Path) -> None:
        """SQLite table names ignore ASCII case: repairing ``Sessions`` repairs ``sessions``
        without reporting the table as another one that could not be recreated."""
        path = tmp_path / "case.sqlite"
        build(path, make_sessions(3, pad=10))
        damage_a_row(path)
        report = check_file(path, "Sessions", backend="sqlitedict", repair=True)
        assert (report["salvaged"], report["quarantined"]) == (3, 1)
        assert report["other_tables"] == {}
        assert [p for p in report["problems"] if "recreated" in p] == []


class TestRepairThroughLinks:
    """Repairing a store reached through a link rewrites the real file, never the link."""

    def test_a_symlinked_store_is_repaired_in_the_real_file(self, tmp_path: Path) -> None:
        """Through ``link -> real``, the repaired file replaces ``real`` (the link stays a link
        and sees it); the backup is taken of the real file."""
        real = tmp_path / "real.sqlite"
        link = tmp_path / "link.sqlite"
        build(real, make_sessions(3, pad=10))
        link.symlink_to(real)
        damage_a_row(real)
        report = check_file(link, "sessions", backend="sqlitedict", repair=True)
        assert report["repaired"] is True
        assert link.is_symlink()
        assert Path(report["backup"]).parent == real.parent
        assert Path(report["backup"]).name.startswith("real.sqlite.")
        assert len(stored(real)) == 3
        assert check_file(real, "sessions", backend="sqlitedict", repair=False)["ok"] is True

    def test_a_hard_linked_store_is_not_split_in_two(self, tmp_path: Path) -> None:
        """A file with a second name (hard link) is not rewritten under one name, which would
        leave the damaged file under the other: the repair refuses and says why."""
        path = tmp_path / "one.sqlite"
        build(path, make_sessions(3, pad=10))
        os.link(path, tmp_path / "two.sqlite")
        damage_a_row(path)
        before = digest(path)
        report = check_file(path, "sessions", backend="sqlitedict", repair=True)
        assert report["repaired"] is False
        assert any("hard link" in p for p in report["problems"])
        assert digest(path) == before

    @pytest.mark.parametrize("kind", ["directory", "fifo"])
    def test_a_path_that_is_not_a_file_is_named_as_such(self, tmp_path: Path, kind: str) -> None:
        """``check`` of a directory or a FIFO says what it is (not "does not exist") and
        neither hangs nor changes it."""
        path = tmp_path / "odd.sqlite"
        if kind == "directory":
            path.mkdir()
        else:
            os.mkfifo(path)
        for repair in (False, True):
            report = check_file(path, "sessions", backend="sqlitedict", repair=repair)
            assert report["ok"] is False
            expected = "is a directory" if kind == "directory" else "not a regular file"
            assert expected in report["problems"][0]
