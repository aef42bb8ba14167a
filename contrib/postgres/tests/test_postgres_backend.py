"""The ``postgres`` backend beyond the conformance kit: options and secrets, the table and its
schema version, identity, several processes on one table, check, and damaged rows."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper import (
    ConfigError,
    Session,
    SessionManager,
    SessionNotFound,
    StorageError,
    installed_backends,
    load_config,
)
from sessionkeeper.backend import check_store
from sessionkeeper.testing import ManualClock
from sessionkeeper_postgres import (
    CLEANUP_BATCH,
    LATEST_VERSION,
    META_TABLE,
    PostgresBackend,
    PostgresOptions,
)

WORKER = Path(__file__).with_name("pg_worker.py")
START = 1_700_000_000_000
SECRET = "s3cr3t-pa55word"


def _check(tmp_path: Path, opts: dict[str, Any], *, repair: bool = False) -> dict[str, Any]:
    """``sessionkeeper check`` of the store ``opts`` names, through a config file."""
    config = tmp_path / "check.toml"
    lines = ['[sessionkeeper]\nbackend = "postgres"\n[sessionkeeper.backend_opts]']
    lines += [f"{name} = {json.dumps(value)}" for name, value in opts.items()]
    config.write_text("\n".join(lines) + "\n")
    report = check_store(load_config(config), repair=repair)
    assert report is not None
    return report


def _run_workers(commands: list[list[str]], go: Path) -> list[Any]:
    """Start one worker process per command, let them go together, return their JSON output."""
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    go.touch()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    return results


class TestPackaging:
    def test_the_entry_point_names_the_backend_class(self) -> None:
        """``backend = "postgres"`` finds :class:`PostgresBackend` through its entry point."""
        assert installed_backends()["postgres"].load() is PostgresBackend

    def test_capabilities(self) -> None:
        """The backend declares what it gives: persistent, shared, blocking, read-only open."""
        flags = PostgresBackend.capabilities
        assert (flags.persistent, flags.shared, flags.blocking, flags.read_only_open) == (
            True,
            True,
            True,
            True,
        )
        assert flags.replicated is False


class TestOptions:
    @pytest.mark.parametrize(
        ("opts", "key", "words"),
        [
            ({"table_name": "Sessions"}, "table_name", "lowercase"),
            ({"table_name": "x" * 49}, "table_name", "1-48"),
            ({"table_name": 'a"; drop table x; --'}, "table_name", "not a plain PostgreSQL name"),
            ({"table_name": "pg_sessions"}, "table_name", "not pg_"),
            ({"schema": "1abc"}, "schema", "not a plain PostgreSQL name"),
            ({"synchronous_commit": "fsync"}, "synchronous_commit", "remote_apply"),
            ({"pool_min_size": 5, "pool_max_size": 2}, "pool_min_size", "pool_max_size"),
            ({"pool_max_size": 0}, "pool_max_size", "between 1 and 1000"),
            ({"statement_timeout_ms": -1}, "statement_timeout_ms", "between 0"),
            ({"connect_timeout_ms": 10}, "connect_timeout_ms", "between 100"),
            ({"port": 70000}, "port", "65535"),
            ({"dsn": "host=x port=99999"}, "dsn", "65535"),
            ({"dsn": "host=x nonsense"}, "dsn", "libpq connection string"),
            ({"host": ""}, "host", "must not be empty"),
            ({"tablename": "x"}, "tablename", ""),
        ],
    )
    def test_bad_options_name_the_key(
        self, tmp_path: Path, opts: dict[str, Any], key: str, words: str
    ) -> None:
        """A wrong option is a ``ConfigError`` naming the key and saying what is expected."""
        config = tmp_path / "sessionkeeper.toml"
        lines = ['[sessionkeeper]\nbackend = "postgres"\n[sessionkeeper.backend_opts]']
        lines += [f"{name} = {json.dumps(value)}" for name, value in opts.items()]
        config.write_text("\n".join(lines) + "\n")
        with pytest.raises(ConfigError) as info:
            load_config(config)
        assert key in str(info.value)
        assert words in str(info.value)

    def test_a_password_in_a_bad_dsn_is_not_echoed(self, tmp_path: Path) -> None:
        """A DSN that does not parse is reported without its text when it may hold a
        password."""
        config = tmp_path / "sessionkeeper.toml"
        config.write_text(
            '[sessionkeeper]\nbackend = "postgres"\n[sessionkeeper.backend_opts]\n'
            f'dsn = "host=x password={SECRET} broken"\n'
        )
        with pytest.raises(ConfigError) as info:
            load_config(config)
        assert SECRET not in str(info.value)
        assert "withheld" in str(info.value)

    def test_secrets_stay_out_of_repr_server_name_and_stats(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any
    ) -> None:
        """The password (given alone or inside the DSN) is in no repr, message or statistic."""
        options = PostgresOptions(
            dsn=f"postgresql://postgres:{SECRET}@127.0.0.1:{pg_cluster.port}/postgres",
            password=SECRET,
        )
        assert SECRET not in repr(options)
        assert SECRET not in options.server_name()
        expected = f"postgres at 127.0.0.1:{pg_cluster.port}, database 'postgres'"
        assert options.server_name() == expected
        manager = open_manager(
            backend_opts={"dsn": options.dsn, "password": SECRET}
        )  # trust auth: any password works
        assert SECRET not in json.dumps(manager.stats())
        assert SECRET not in repr(manager.backend)

    def test_discrete_parameters_connect_and_override_the_dsn(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any
    ) -> None:
        """``host``/``port``/``dbname``/``user`` alone reach the server, and override a DSN."""
        discrete = open_manager(
            backend_opts={
                "dsn": None,
                "host": "127.0.0.1",
                "port": pg_cluster.port,
                "dbname": "postgres",
                "user": "postgres",
            }
        )
        discrete.store(Session("a", START, START, None, {}))
        overridden = open_manager(
            backend_opts={"dsn": pg_cluster.dsn(host="192.0.2.1"), "host": "127.0.0.1"}
        )
        assert overridden.peek("a").id == "a"


class TestTable:
    def test_open_creates_the_table_its_indexes_and_its_schema_version(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """The first open creates the table with the columns of the design (version, owner and
        the absolute deadline of the concurrent-state sessions), the deadline and owner
        indexes, and records the schema version in the meta table."""
        open_manager()
        columns = pg_cluster.sql(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_name = %s ORDER BY ordinal_position",
            table_name,
        )
        assert columns == [
            ("id", "text", "NO"),
            ("record", "bytea", "NO"),
            ("last_accessed", "bigint", "NO"),
            ("deadline", "bigint", "YES"),
            ("version", "bigint", "NO"),
            ("owner", "text", "YES"),
            ("absolute_deadline", "bigint", "YES"),
        ]
        query = "SELECT indexname FROM pg_indexes WHERE tablename = %s"
        indexes = {row[0] for row in pg_cluster.sql(query, table_name)}
        assert {f"{table_name}_deadline_idx", f"{table_name}_owner_idx"} <= indexes
        assert pg_cluster.sql(
            f"SELECT schema_version FROM {META_TABLE} WHERE table_name = %s", table_name
        ) == [(LATEST_VERSION,)]

    def test_store_writes_the_columns_and_counts_versions(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """A store writes last_accessed and the deadline beside the record; replacing a
        session increases its version; a touch moves last_accessed and the deadline only."""
        manager = open_manager(clock=ManualClock(START))
        manager.store(Session("s", START, START, 1_000, {"k": 1}))
        manager.store(Session("forever", START, START, None, {}))
        query = f"SELECT last_accessed, deadline, version FROM {table_name} WHERE id = %s"
        assert pg_cluster.sql(query, "s") == [(START, START + 1_000, 1)]
        assert pg_cluster.sql(query, "forever") == [(START, None, 1)]
        manager.store(Session("s", START, START, 2_000, {"k": 2}))
        assert pg_cluster.sql(query, "s") == [(START, START + 2_000, 2)]
        manager.backend.sessionkeeper_touch("s", START + 500)
        assert pg_cluster.sql(query, "s") == [(START + 500, START + 2_500, 2)]
        manager.backend.sessionkeeper_touch("s", START + 100)
        assert pg_cluster.sql(query, "s") == [(START + 500, START + 2_500, 2)]

    def test_cleanup_reads_the_deadline_index_not_the_table(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """The cleanup statement finds expired rows through the deadline index and deletes them
        through the primary key: its plan has no sequential scan of a table of 20,000 rows."""
        manager = open_manager(clock=ManualClock(START))
        manager.store_many([Session(f"s{n}", START, START, 10**9, {}) for n in range(20_000)])
        pg_cluster.sql(f"ANALYZE {table_name}")
        statement = manager.backend.statements.cleanup.decode()
        plan = "\n".join(
            row[0]
            for row in pg_cluster.sql(
                "EXPLAIN " + statement.replace("%s", "{}").format(START, CLEANUP_BATCH)
            )
        )
        assert f"{table_name}_deadline_idx" in plan, plan
        assert f"{table_name}_pkey" in plan, plan
        assert "Seq Scan" not in plan, plan

    def test_deadlines_past_the_largest_bigint_are_capped(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """A timeout that takes the deadline past 2**63-1 stores (and touches) the largest
        bigint instead of failing, and the session stays live."""
        big = 2**63 - 1
        manager = open_manager(clock=ManualClock(START))
        manager.store(Session("far", START, START, big, {}))
        manager.backend.sessionkeeper_touch("far", START + 10)
        assert pg_cluster.sql(f"SELECT deadline FROM {table_name}") == [(big,)]
        assert manager.list() == ["far"]

    def test_a_newer_schema_version_is_refused(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """A table whose recorded schema is newer than this code knows is not opened: the error
        says to upgrade, and nothing is changed."""
        open_manager().close()
        pg_cluster.sql(
            f"UPDATE {META_TABLE} SET schema_version = %s WHERE table_name = %s",
            LATEST_VERSION + 1,
            table_name,
        )
        with pytest.raises(StorageError, match="newer sessionkeeper-postgres") as info:
            open_manager()
        assert info.value.backend == "postgres"

    def test_a_table_sessionkeeper_did_not_create_is_refused(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """An existing table of the same name with no schema record is never written into."""
        pg_cluster.sql(f"CREATE TABLE {table_name} (x int)")
        pg_cluster.sql(f"INSERT INTO {table_name} VALUES (1)")
        with pytest.raises(StorageError, match="sessionkeeper did not create it"):
            open_manager()
        assert pg_cluster.sql(f"SELECT x FROM {table_name}") == [(1,)]

    def test_read_only_open_of_a_missing_table_says_so(
        self, open_manager: Callable[..., SessionManager]
    ) -> None:
        """Opened read-only, a table that does not exist yet is an error that says so (it is not
        created, and the store does not pass for an empty one)."""
        with pytest.raises(StorageError, match="does not exist"):
            open_manager(read_only=True)

    def test_a_named_schema_is_used(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """With ``schema``, the table and its meta table live in that schema."""
        pg_cluster.sql("CREATE SCHEMA IF NOT EXISTS sk_other")
        manager = open_manager(backend_opts={"schema": "sk_other"})
        manager.store(Session("x", START, START, None, {}))
        assert pg_cluster.sql(f"SELECT id FROM sk_other.{table_name}") == [("x",)]
        assert manager.stats()["backend_stats"]["table"] == f"sk_other.{table_name}"


class TestIdentity:
    def test_every_spelling_of_the_server_gives_one_identity(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any
    ) -> None:
        """127.0.0.1, localhost, the Unix socket and discrete parameters name one store: the
        same identity, built from the cluster's system identifier."""
        sysid = pg_cluster.sql("SELECT system_identifier FROM pg_control_system()")[0][0]
        spellings = [
            {"dsn": pg_cluster.dsn()},
            {"dsn": pg_cluster.dsn(host="localhost")},
            {"dsn": f"host={pg_cluster.socket_dir} port={pg_cluster.port} user=postgres"},
            {"dsn": None, "host": "127.0.0.1", "port": pg_cluster.port, "user": "postgres"},
        ]
        identities = {open_manager(backend_opts=opts).identity() for opts in spellings}
        assert len(identities) == 1
        (identity,) = identities
        assert identity is not None
        assert identity.startswith(f"postgres:{sysid}/postgres/public.")

    def test_another_table_or_cluster_is_another_identity(
        self,
        open_manager: Callable[..., SessionManager],
        pg_clusters: Callable[..., Any],
        pg_cluster: Any,
    ) -> None:
        """A different table on the same server, or the same table name on another cluster,
        is a different store."""
        first = open_manager().identity()
        other_table = open_manager(backend_opts={"table_name": "t_other_identity"}).identity()
        other = pg_clusters()
        other_cluster = open_manager(backend_opts={"dsn": other.dsn()}).identity()
        assert len({first, other_table, other_cluster}) == 3


class TestProcesses:
    def test_concurrent_sweepers_remove_each_expired_session_once(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str,
        tmp_path: Path,
    ) -> None:  # fmt: skip
        """Four processes running ``cleanup_expired`` at once on one table remove every
        expired session exactly once between them (their counts add up) and no live one."""
        manager = open_manager(clock=ManualClock(START))
        expired = 3 * CLEANUP_BATCH + 17
        manager.store_many([Session(f"old-{n}", START, START, 10, {}) for n in range(expired)])
        manager.store_many([Session(f"live-{n}", START, START, 10**9, {}) for n in range(300)])
        go = tmp_path / "go"
        command = ["sweep", pg_cluster.dsn(), table_name, str(go), str(START + 1_000)]
        results = _run_workers([command] * 4, go)
        assert sum(result["removed"] for result in results) == expired
        assert sorted(manager.list()) == sorted(f"live-{n}" for n in range(300))
        assert manager.cleanup_expired() == 0

    def test_processes_writing_one_table_lose_nothing(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str,
        tmp_path: Path,
    ) -> None:  # fmt: skip
        """Processes that store, fetch and delete their own sessions in one table at once leave
        exactly what each kept, whole."""
        manager = open_manager()
        go = tmp_path / "go"
        commands = [
            ["write", pg_cluster.dsn(), table_name, str(go), f"p{index}", "60"]
            for index in range(4)
        ]
        results = _run_workers(commands, go)
        kept = {sid for result in results for sid in result["kept"]}
        assert len(kept) == 4 * 40
        assert set(manager.list()) == kept
        for sid in kept:
            prefix, number = sid.split("-")
            assert manager.peek(sid).metadata == {"by": prefix, "n": int(number)}

    def test_touching_processes_never_resurrect_a_deleted_session(
        self,
        open_manager: Callable[..., SessionManager],
        pg_cluster: Any,
        table_name: str,
        tmp_path: Path,
        wait_until: Callable[..., Any],
    ) -> None:
        """While other processes touch sessions in a loop, deleting them removes them for good:
        no touch brings one back, and every toucher sees them gone."""
        manager = open_manager(touch_resolution=0)
        ids = [f"touched-{n}" for n in range(20)]
        manager.store_many([Session(sid, START, START, None, {}) for sid in ids])
        go = tmp_path / "go"
        processes = [
            subprocess.Popen(
                [sys.executable, str(WORKER), "touch", pg_cluster.dsn(), table_name, str(go), *ids],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        go.touch()
        wait_until(
            lambda: all(manager.peek(sid).last_accessed > START for sid in ids),
            "the workers touching every session",
        )
        for sid in ids:
            assert manager.delete(sid) is True
        for process in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            assert json.loads(out)["pending"] == []
        assert manager.list() == []
        for sid in ids:
            with pytest.raises(SessionNotFound):
                manager.peek(sid)


class TestCheck:
    def test_check_of_a_sound_table_is_ok(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str,
        tmp_path: Path,
    ) -> None:  # fmt: skip
        """``check`` on an intact table reports ok with every row checked and intact."""
        manager = open_manager()
        manager.store_many([Session(f"s{n}", START, START, 1_000, {"n": n}) for n in range(700)])
        report = _check(tmp_path, {"dsn": pg_cluster.dsn(), "table_name": table_name})
        assert report["ok"] is True
        assert (report["checked"], report["intact"], report["problems"]) == (700, 700, [])

    def test_check_names_damaged_rows_and_repair_quarantines_them(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str,
        tmp_path: Path,
    ) -> None:  # fmt: skip
        """``check`` names each damaged row (a record that does not decode, a record of another
        id, a wrong deadline, an owner or absolute deadline the columns lack); ``--repair``
        moves the undecodable ones to the quarantine table with their bytes, recomputes the
        index columns from the record, and leaves every intact session as it was."""
        manager = open_manager(clock=ManualClock(START))
        manager.store_many([Session(f"s{n}", START, START, 1_000, {"n": n}) for n in range(5)])
        manager.store_many(
            [Session("s5", START, START, 1_000, {}, owner="o", absolute_timeout_ms=500)]
        )
        # What schema-1 code wrote for a session with an owner: no owner column, no absolute.
        pg_cluster.sql(
            f"UPDATE {table_name} SET owner = NULL, absolute_deadline = NULL, "
            "deadline = %s WHERE id = 's5'",
            START + 1_000,
        )
        pg_cluster.sql(f"UPDATE {table_name} SET record = %s WHERE id = 's1'", b"\xc1garbage")
        pg_cluster.sql(
            f"UPDATE {table_name} SET record = (SELECT record FROM {table_name} WHERE id = 's3') "
            "WHERE id = 's2'",
        )
        pg_cluster.sql(f"UPDATE {table_name} SET deadline = 5 WHERE id = 's4'")
        opts = {"dsn": pg_cluster.dsn(), "table_name": table_name}
        report = _check(tmp_path, opts)
        assert report["ok"] is False
        assert (report["checked"], report["intact"]) == (6, 2)
        problems = "\n".join(report["problems"])
        assert (
            f"'s5': its deadline is {START + 1_000}, expected {START + 500}, its "
            f"absolute_deadline is None, expected {START + 500}, its owner is None, expected 'o'"
        ) in problems
        assert "'s1'" in problems
        assert "does not decode" in problems
        assert "holds session 's3'" in problems
        assert "'s4': its deadline is 5" in problems
        repaired = _check(tmp_path, opts, repair=True)
        assert (repaired["repaired"], repaired["quarantined"], repaired["columns_fixed"]) == (
            True,
            2,
            2,
        )
        assert sorted(manager.list()) == ["s0", "s3", "s4", "s5"]
        assert manager.list(owner="o") == ["s5"]
        assert pg_cluster.sql(
            f"SELECT deadline, absolute_deadline, owner FROM {table_name} WHERE id = 's5'",
        ) == [(START + 500, START + 500, "o")]
        assert manager.peek("s4").metadata == {"n": 4}
        quarantined = pg_cluster.sql(f"SELECT id, record FROM {table_name}_quarantine ORDER BY id")
        assert [row[0] for row in quarantined] == ["s1", "s2"]
        assert quarantined[0][1] == b"\xc1garbage"
        assert _check(tmp_path, opts)["ok"] is True

    def test_check_of_a_missing_table_reports_it(
        self, pg_cluster: Any, table_name: str, tmp_path: Path
    ) -> None:
        """``check`` of a table that was never created says so instead of passing."""
        report = _check(tmp_path, {"dsn": pg_cluster.dsn(), "table_name": table_name})
        assert report["ok"] is False
        assert "no recorded schema version" in report["problems"][0]
