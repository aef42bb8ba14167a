"""What is particular to the leveldb backend: options, paths, tables, the key layout and the
expiry index, damaged records, read-only opening. The shared semantics are in
test_conformance.py; crashes and a second process are in test_durability.py."""

from __future__ import annotations

import ast
import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sessionkeeper_leveldb
from sessionkeeper import (
    ConfigError,
    Session,
    SessionManager,
    SessionNotFound,
    StorageError,
    installed_backends,
)
from sessionkeeper.backend import decode_session
from sessionkeeper.testing import ManualClock
from sessionkeeper_leveldb import BATCH, LAYOUT_VERSION, LevelDBBackend, TableKeys


def backend_of(manager: SessionManager) -> LevelDBBackend:
    backend = manager.backend
    assert isinstance(backend, LevelDBBackend)
    return backend


def raw_keys(manager: SessionManager) -> list[bytes]:
    """Every key of the manager's table, in LevelDB's order."""
    backend = backend_of(manager)
    with backend.db.iterator(
        start=backend.keys.prefix, stop=backend.keys.table_end, include_value=False
    ) as keys:
        return list(keys)


def index_entries(manager: SessionManager) -> list[tuple[int, str]]:
    """``(deadline, id)`` of every expiry-index entry of the manager's table."""
    backend = backend_of(manager)
    found = []
    for key in raw_keys(manager):
        if key.startswith(backend.keys.index):
            deadline, raw_id = backend.keys.parse_entry(key)
            found.append((deadline, raw_id.decode("ascii")))
    return found


def session(session_id: str, now: int, timeout_ms: int | None = 10_000, **metadata: Any) -> Session:
    return Session(session_id, now, now, timeout_ms, metadata)


class TestEntryPoint:
    def test_the_entry_point_names_the_backend_class(self) -> None:
        """``leveldb`` in group sessionkeeper.backends loads :class:`LevelDBBackend`, which
        declares itself persistent, blocking and atomic (issue 14)."""
        entry_point = installed_backends()["leveldb"]
        assert entry_point.load() is LevelDBBackend
        assert LevelDBBackend.capabilities.as_dict() == {
            "persistent": True,
            "shared": False,
            "replicated": False,
            "blocking": True,
            "read_only_open": False,
            "atomic": True,
        }

    def test_only_the_public_core_api_is_imported(self) -> None:
        """The plugin imports sessionkeeper only from its public API, the root and the authoring
        module (it is the example of a third-party plugin written from the documentation alone):
        no private module."""
        package = Path(sessionkeeper_leveldb.__file__).parent
        imported = set()
        for path in package.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module)
                elif isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
        ours = {name for name in imported if name.split(".")[0] == "sessionkeeper"}
        assert ours == {"sessionkeeper", "sessionkeeper.backend"}


class TestOptions:
    @pytest.mark.parametrize(
        ("opts", "key", "message"),
        [
            ({}, "db_path", "required"),
            ({"db_path": ""}, "db_path", "database directory"),
            ({"db_path": 5}, "db_path", "string"),
            ({"db_path": "d", "table_name": ""}, "table_name", "non-empty"),
            ({"db_path": "d", "table_name": "a\0b"}, "table_name", "NUL"),
            # issue 12: these failed only when the store opened ("cannot start"), or never
            ({"db_path": "d", "table_name": "\udc80"}, "table_name", "UTF-8"),
            ({"db_path": "d", "table_name": "t" * 1025}, "table_name", "at most 1024 bytes"),
            ({"db_path": "d\udc80"}, "db_path", "UTF-8"),
            ({"db_path": "d", "sync": "yes"}, "sync", "true or false"),
            ({"db_path": "d", "file_path": "x"}, "file_path", "unknown key"),
        ],
        ids=[
            "missing",
            "empty-path",
            "int-path",
            "empty-table",
            "nul-table",
            "surrogate-table",
            "huge-table",
            "surrogate-path",
            "str-sync",
            "unknown",
        ],
    )
    def test_bad_options_name_the_key(
        self, opts: dict[str, Any], key: str, message: str, tmp_path: Path
    ) -> None:
        """Each bad option is a ``ConfigError`` naming ``sessionkeeper.backend_opts.<key>``, and
        nothing is created on disk."""
        with pytest.raises(ConfigError, match=message) as info:
            SessionManager(backend="leveldb", backend_opts=opts, base_dir=tmp_path)
        assert info.value.key == f"sessionkeeper.backend_opts.{key}"
        assert list(tmp_path.iterdir()) == []

    def test_relative_db_path_is_resolved_against_the_config_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``db_path = "data/sessions.leveldb"`` in ``conf/sessionkeeper.toml`` opens
        ``conf/data/sessions.leveldb`` whatever the working directory, creating the missing
        parents and the database directory with owner-only permissions."""
        conf = tmp_path / "conf"
        conf.mkdir()
        (conf / "sessionkeeper.toml").write_text(
            '[sessionkeeper]\nbackend = "leveldb"\ncleanup_interval = 0\n'
            '[sessionkeeper.backend_opts]\ndb_path = "data/sessions.leveldb"\n',
            encoding="utf-8",
        )
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        with SessionManager.from_config(conf / "sessionkeeper.toml") as manager:
            created = manager.create(metadata={"user_id": "user_456"})
            assert backend_of(manager).path == conf / "data" / "sessions.leveldb"
        database = conf / "data" / "sessions.leveldb"
        assert (database / "CURRENT").is_file()
        assert stat.S_IMODE(database.stat().st_mode) == 0o700
        assert list(elsewhere.iterdir()) == []
        with SessionManager.from_config(conf / "sessionkeeper.toml") as manager:
            assert manager.peek(created.id) == created

    def test_sync_off_still_persists_across_close(self, open_manager: Any) -> None:
        """With ``sync = false`` writes are not fsynced, yet what was stored is there after a
        clean close and reopen."""
        manager = open_manager(sync=False)
        stored = manager.create(metadata={"k": "v"})
        manager.close()
        assert open_manager(sync=False).peek(stored.id) == stored


class TestTables:
    def test_tables_of_one_database_are_independent(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """Managers on different tables of one database (tables ``a``, ``ab`` and ``a b``,
        whose names are prefixes of each other) see only their own sessions, and a cleanup of
        one leaves the others' expired sessions alone."""
        managers = {name: open_manager(table_name=name) for name in ("a", "ab", "a b")}
        for name, manager in managers.items():
            manager.store(session("shared-id", clock.now, 1_000, table=name))
            manager.store(session(f"only-{name.replace(' ', '_')}", clock.now, None))
        clock.advance(1_001)
        assert managers["ab"].cleanup_expired() == 1
        assert managers["a"].count() == 1
        for name, manager in managers.items():
            own = f"only-{name.replace(' ', '_')}"
            assert manager.list() == [own]
            expired = {s.id: s for s in manager.iter_sessions(include_expired=True)}
            if name == "ab":
                assert set(expired) == {own}
            else:
                assert expired["shared-id"].metadata == {"table": name}

    def test_managers_on_one_table_share_its_sessions(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """Two managers of one process on the same table share one database handle: what one
        stores, touches or deletes, the other sees at once."""
        first, second = open_manager(), open_manager()
        stored = first.create(timeout_ms=60_000)
        assert second.peek(stored.id) == stored
        clock.advance(30_000)
        touched = second.touch(stored.id)
        assert first.peek(stored.id) == touched
        assert first.delete(stored.id) is True
        with pytest.raises(SessionNotFound):
            second.peek(stored.id)

    def test_the_last_manager_to_close_closes_the_database(
        self, open_manager: Any, tmp_path: Path
    ) -> None:
        """The database stays open while any manager of the process uses it and is closed by
        the last one, after which plyvel can open it directly."""
        import plyvel  # type: ignore[import-untyped]

        first, second = open_manager(table_name="one"), open_manager(table_name="two")
        first.close()
        assert second.count() == 0
        second.close()
        direct = plyvel.DB(str(tmp_path / "db"))
        try:
            assert direct.get(TableKeys("one").version) == LAYOUT_VERSION
        finally:
            direct.close()


@pytest.fixture
def bind_mount(tmp_path: Path) -> Iterator[Any]:
    """``bind_mount(source)``: a second path to the directory ``source`` (``mount --bind``),
    unmounted after the test; skips (visibly) where this process may not mount."""
    mounted: list[Path] = []

    def make(source: Path) -> Path:
        view = tmp_path / f"view-{len(mounted)}"
        view.mkdir()
        done = subprocess.run(
            ["mount", "--bind", str(source), str(view)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot bind-mount here (needs root): {done.stderr.strip()}")
        mounted.append(view)
        return view

    yield make
    for view in reversed(mounted):
        subprocess.run(["umount", "--lazy", str(view)], check=True)  # even if still open


class TestIdentity:
    """``SessionManager.identity()`` names the database directory by device and inode, so no
    spelling of its path makes one store look like two (issue 12)."""

    def test_spellings_of_one_directory_and_table_have_one_identity(
        self, open_manager: Any, tmp_path: Path
    ) -> None:
        """The path, a symlink to it, a path with ``..`` and a relative path give one identity;
        another table of the same database gives another."""
        (tmp_path / "link").symlink_to(tmp_path / "db")
        (tmp_path / "sub").mkdir()
        spellings = [
            str(tmp_path / "db"),
            str(tmp_path / "link"),
            str(tmp_path / "sub/../db"),
            "db",
        ]
        identities = {open_manager(db_path=path).identity() for path in spellings}
        found = (tmp_path / "db").stat()
        assert identities == {f"leveldb:dev={found.st_dev},ino={found.st_ino},table=sessions"}
        assert open_manager(table_name="other").identity() not in identities

    def test_migrate_through_a_bind_mount_onto_itself_is_refused(
        self, tmp_path: Path, bind_mount: Any
    ) -> None:
        """``migrate --delete-source`` from a database to the same database reached through a
        bind mount is refused with exit code 2 and every session is kept (issue 12 item 1: the
        paths differ even after resolving symlinks, so only the directory's device and inode
        tell that the store is one)."""
        from click.testing import CliRunner

        from sessionkeeper.cli import cli

        (tmp_path / "data").mkdir()
        view = bind_mount(tmp_path / "data")
        configs = []
        for name, folder in (("a", tmp_path / "data"), ("b", view)):
            path = tmp_path / f"{name}.toml"
            path.write_text(
                '[sessionkeeper]\nbackend = "leveldb"\ncleanup_interval = 0\n'
                f'[sessionkeeper.backend_opts]\ndb_path = "{folder / "db"}"\n'
            )
            configs.append(str(path))
        with SessionManager.from_config(configs[0]) as manager:
            stored = {manager.create(timeout_ms=None).id for _ in range(20)}
        result = CliRunner().invoke(
            cli, ["migrate", "--config", configs[0], "--to", configs[1], "--delete-source"]
        )
        assert result.exit_code == 2, result.output
        assert "same store" in result.output
        with SessionManager.from_config(configs[0]) as manager:
            assert set(manager.list()) == stored

    def test_another_directory_is_another_store(self, open_manager: Any, tmp_path: Path) -> None:
        """Two database directories have two identities."""
        assert open_manager().identity() != open_manager(db_path=str(tmp_path / "db2")).identity()

    def test_a_bind_mount_is_the_same_database_not_a_second_owner(
        self, open_manager: Any, tmp_path: Path, bind_mount: Any
    ) -> None:
        """A database reached through a bind mount shares the process's one handle: LevelDB's
        ``LOCK`` does not stop a process opening a directory twice under two paths, and two
        handles would each keep writes the other never sees (issue 12: two owners through a
        second path). Both managers see each other's writes at once and have one identity."""
        first = open_manager()
        view = bind_mount(tmp_path)
        second = open_manager(db_path=str(view / "db"))
        stored = first.create(timeout_ms=60_000)
        assert second.peek(stored.id) == stored
        again = second.create(timeout_ms=60_000)
        assert first.peek(again.id) == again
        assert first.identity() == second.identity()


class TestKeyLayout:
    def test_store_writes_the_record_and_one_index_entry(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """A stored session is the codec record under ``<table>\\0s<id>`` and one entry
        ``<table>\\0x<deadline, 8 bytes big-endian><id>``; a session that never expires has no
        entry."""
        manager = open_manager(table_name="t")
        expiring = session("exp", clock.now, 5_000, user="u")
        manager.store(expiring)
        manager.store(session("forever", clock.now, None))
        record = backend_of(manager).db.get(b"t\0sexp")
        assert record is not None
        assert decode_session(record) == expiring
        deadline = (clock.now + 5_000).to_bytes(8, "big")
        assert raw_keys(manager) == [
            b"t\0sexp",
            b"t\0sforever",
            b"t\0v",
            b"t\0x" + deadline + b"exp",
        ]

    def test_touch_and_replace_move_the_entry_and_delete_removes_it(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """Touching moves the index entry to the new deadline; replacing with another timeout
        (or none) rewrites or drops it; deleting removes it with the record."""
        manager = open_manager()
        start = clock.now
        manager.store(session("s", start, 5_000))
        assert index_entries(manager) == [(start + 5_000, "s")]
        clock.advance(2_000)
        manager.touch("s")
        assert index_entries(manager) == [(start + 7_000, "s")]
        manager.store(session("s", clock.now, 1_000))
        assert index_entries(manager) == [(clock.now + 1_000, "s")]
        manager.store(session("s", clock.now, None))
        assert index_entries(manager) == []
        manager.store(session("s", clock.now, 3_000))
        assert manager.delete("s") is True
        assert index_entries(manager) == []
        assert backend_of(manager).db.get(backend_of(manager).keys.session("s")) is None

    def test_store_many_writes_what_store_writes_one_by_one(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """``store_many`` leaves a table exactly as ``store`` of each session would: records and
        index entries of new sessions, entries moved, dropped or added for replaced ones (with
        another timeout, none, or the same deadline), and a damaged record repaired."""
        now = clock.now
        before = [
            session("moved", now, 5_000),
            session("dropped", now, 5_000),
            session("added", now, None),
            session("same", now, 5_000),
            session("damaged", now, 5_000),
            session("kept", now, 5_000),
        ]
        batch = [
            session("moved", now, 9_000, v=2),
            session("dropped", now, None, v=2),
            session("added", now, 7_000, v=2),
            session("same", now, 5_000, v=2),
            session("damaged", now, 3_000, v=2),
            *(session(f"new-{i}", now + i, 1_000 + i % 3) for i in range(50)),
        ]
        tables = {}
        for table in ("one", "many"):
            manager = open_manager(table_name=table)
            for stored in before:
                manager.store(stored)
            corrupt(manager, "damaged")
            if table == "one":  # the plain hook: manager.store would count versions
                for stored in batch:
                    manager.plugin_manager.hook.sessionkeeper_store(session=stored)
            else:
                assert manager.plugin_manager.hook.sessionkeeper_store_many(sessions=batch) == 55
            db, prefix = backend_of(manager).db, len(table) + 1
            tables[table] = [(key[prefix:], db.get(key)) for key in raw_keys(manager)]
        assert tables["many"] == tables["one"]
        many = open_manager(table_name="many")
        assert [many.peek(s.id) for s in batch] == batch
        live = [(s.expires_at, s.id) for s in [*batch, before[-1]] if s.expires_at is not None]
        orphan = (now + 5_000, "damaged")  # its record did not decode: a cleanup drops it
        assert sorted(index_entries(many)) == sorted([*live, orphan])

    def test_store_many_on_a_closed_backend_names_the_database(
        self, open_manager: Any, clock: ManualClock, tmp_path: Path
    ) -> None:
        """A batch that cannot be written is a ``StorageError`` naming ``store_many``, the
        database and the table."""
        manager = open_manager(table_name="app")
        backend = backend_of(manager)
        manager.close()
        with pytest.raises(StorageError, match="store_many failed") as info:
            backend.sessionkeeper_store_many([session("a", clock.now)])
        assert str(tmp_path / "db") in str(info.value)
        assert "table 'app'" in str(info.value)
        assert "the database is closed" in str(info.value)

    def test_a_newer_layout_version_is_refused(self, open_manager: Any, tmp_path: Path) -> None:
        """A table written by a newer layout is not read: opening it is a ``StorageError`` that
        names the database, the table and both versions."""
        manager = open_manager(table_name="future")
        backend_of(manager).db.put(TableKeys("future").version, b"9")
        manager.close()
        with pytest.raises(StorageError, match="layout version b'9'") as info:
            open_manager(table_name="future")
        assert str(tmp_path / "db") in str(info.value)
        assert "'future'" in str(info.value)


class TestCleanup:
    def test_cleanup_reads_only_the_expired_index_entries(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """Among 2,000 sessions of which 10 have expired, a cleanup removes the 10 and reads
        10 index entries: its cost grows with the number expired, not the number stored."""
        manager = open_manager(sync=False)
        for i in range(10):
            manager.store(session(f"short-{i}", clock.now, 1_000))
        for i in range(1_990):
            manager.store(session(f"long-{i}", clock.now, 60_000 + i))
        clock.advance(1_001)
        assert manager.cleanup_expired() == 10
        assert manager.stats()["backend_stats"]["cleanup_entries_read"] == 10
        assert manager.count() == 1_990
        assert manager.cleanup_expired() == 0
        assert manager.stats()["backend_stats"]["cleanup_entries_read"] == 10

    def test_cleanup_of_more_than_a_batch_removes_every_expired_session(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """A sweep larger than one batch continues batch after batch until the expired range
        is empty, and leaves the live sessions and their entries."""
        manager = open_manager(sync=False)
        expired = BATCH * 2 + 7
        for i in range(expired):
            manager.store(session(f"e{i:05}", clock.now, 1_000 + i % 50))
        manager.store(session("live", clock.now, 120_000))
        clock.advance(2_000)
        assert manager.count() == 1
        assert manager.cleanup_expired() == expired
        assert manager.list() == ["live"]
        assert index_entries(manager) == [(clock.now - 2_000 + 120_000, "live")]

    def test_iter_sessions_reads_more_than_a_batch(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """``iter_sessions`` continues from iterator to iterator and yields every session once."""
        manager = open_manager(sync=False)
        ids = {f"s{i}" for i in range(BATCH + BATCH // 2)}
        for sid in ids:
            manager.store(session(sid, clock.now, None))
        seen = [s.id for s in manager.iter_sessions()]
        assert sorted(seen) == sorted(ids)


def corrupt(manager: SessionManager, session_id: str, value: bytes = b"\xc1garbage") -> bytes:
    backend = backend_of(manager)
    key = backend.keys.session(session_id)
    backend.db.put(key, value)
    return key


class TestDamagedRecords:
    def test_fetch_names_the_database_table_and_key(
        self, open_manager: Any, clock: ManualClock, tmp_path: Path
    ) -> None:
        """A record that does not decode makes fetch raise a ``StorageError`` (not
        ``SessionNotFound``) naming the database path, the table and the key."""
        manager = open_manager(table_name="app")
        manager.store(session("bad", clock.now))
        key = corrupt(manager, "bad")
        with pytest.raises(StorageError) as info:
            manager.fetch("bad")
        message = str(info.value)
        assert info.value.backend == "leveldb"
        assert str(tmp_path / "db") in message
        assert "table 'app'" in message
        assert repr(key) in message
        assert "damaged record" in message

    def test_a_record_under_another_id_is_damage(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """A valid record stored under the key of another id is reported, never returned as
        that other session."""
        manager = open_manager()
        manager.store(session("one", clock.now))
        backend = backend_of(manager)
        record = backend.db.get(backend.keys.session("one"))
        assert record is not None
        corrupt(manager, "two", record)
        with pytest.raises(StorageError, match="it holds session 'one'"):
            manager.peek("two")

    def test_cleanup_skips_damage_and_removes_the_rest(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """An expired session whose record was damaged is left for fetch to report; the cleanup
        removes every other expired session and counts the skipped record in stats."""
        manager = open_manager()
        for sid in ("a", "b", "c"):
            manager.store(session(sid, clock.now, 1_000))
        corrupt(manager, "b")
        clock.advance(1_001)
        assert manager.cleanup_expired() == 2
        assert manager.stats()["backend_stats"]["damaged_records_skipped"] == 1
        assert manager.list() == ["b"]  # not known to be expired: listed, and peek says why
        with pytest.raises(StorageError, match="damaged record"):
            manager.peek("b")

    def test_a_damaged_record_can_be_replaced_or_deleted(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """Storing over a damaged record repairs it, and its orphaned index entry is dropped by
        the next cleanup that reaches it; deleting a damaged record removes it."""
        manager = open_manager()
        manager.store(session("fixed", clock.now, 1_000))
        manager.store(session("dropped", clock.now, 1_000))
        corrupt(manager, "fixed")
        corrupt(manager, "dropped")
        repaired = session("fixed", clock.now, 60_000, repaired=True)
        manager.store(repaired)
        assert manager.peek("fixed") == repaired
        assert manager.delete("dropped") is True
        clock.advance(1_001)
        assert manager.cleanup_expired() == 0
        assert index_entries(manager) == [(repaired.expires_at, "fixed")]

    def test_iter_sessions_reports_damage(self, open_manager: Any, clock: ManualClock) -> None:
        """An export never skips a record silently: a damaged one raises ``StorageError``."""
        manager = open_manager()
        manager.store(session("bad", clock.now))
        corrupt(manager, "bad")
        with pytest.raises(StorageError, match="damaged record"):
            list(manager.iter_sessions())


class TestReadOnly:
    def test_read_only_reads_and_refuses_writes(
        self, open_manager: Any, clock: ManualClock
    ) -> None:
        """Opened read-only (its owner stopped), the store is read and every write is a
        ``StorageError`` saying it was opened read-only."""
        owner = open_manager()
        stored = owner.create(metadata={"k": "v"})
        owner.close()
        reader = open_manager(read_only=True)
        assert reader.peek(stored.id) == stored
        assert reader.list() == [stored.id]
        for write in (
            lambda: reader.store(stored),
            lambda: reader.store_many([stored]),
            lambda: reader.delete(stored.id),
            lambda: reader.touch(stored.id),
            reader.cleanup_expired,
        ):
            with pytest.raises(StorageError, match="opened read-only"):
                write()

    def test_read_only_does_not_create_a_missing_database(
        self, open_manager: Any, tmp_path: Path
    ) -> None:
        """A read-only open of a path holding no database is a ``StorageError`` naming it, and
        creates nothing."""
        with pytest.raises(StorageError, match="no LevelDB database at") as info:
            open_manager(read_only=True)
        assert str(tmp_path / "db") in str(info.value)
        assert not (tmp_path / "db").exists()


class TestStats:
    def test_stats_describe_the_table(
        self, open_manager: Any, clock: ManualClock, tmp_path: Path
    ) -> None:
        """``stats()`` shows the database path, the table, the sync mode and the cleanup
        figures, as JSON-compatible values."""
        manager = open_manager(table_name="t", sync=False)
        manager.store(session("s", clock.now))
        figures = manager.stats()["backend_stats"]
        assert figures["db_path"] == str(tmp_path / "db")
        assert figures["table_name"] == "t"
        assert figures["sync"] is False
        assert figures["cleanup_entries_read"] == 0
        assert isinstance(figures["approximate_bytes"], int)
        assert json.loads(json.dumps(figures)) == figures
