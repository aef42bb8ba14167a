"""The ``postgres`` backend's concurrent state (issue 14) beyond the conformance kit: a table
written by schema version 1 with format-1 records, the stored deadlines, the owner index in the
plans, the statements that check and write, and the writes that are never sent twice across a
server restart. (The kit runs the races with threads and with processes against the server.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sessionkeeper import (
    Session,
    SessionManager,
    SessionNotFound,
    StorageError,
    VersionConflict,
)
from sessionkeeper.testing import ManualClock
from sessionkeeper_postgres import LATEST_VERSION, META_TABLE

START = 1_700_000_000_000

#: Records written by the previous release's codec (format 1: no version, owner or absolute
#: timeout), byte for byte: ``[1, id, created_at, last_accessed, timeout_ms, metadata]``.
OLD_RECORDS = {
    "old-kept": (
        b"\x96\x01\xa8old-kept\xcf\x00\x00\x01\x8b\xcf\xe5h\x00\xcf\x00\x00\x01\x8b\xcf\xe5h"
        b"\x00\xcd\xea`\xc4\x04\x81\xa1n\x01"
    ),
    "old-short": (
        b"\x96\x01\xa9old-short\xcf\x00\x00\x01\x8b\xcf\xe5h\x00\xcf\x00\x00\x01\x8b\xcf\xe5h"
        b"\x00\xcd\x03\xe8\xc4\x04\x81\xa1n\x02"
    ),
    "old-forever": (
        b"\x96\x01\xabold-forever\xcf\x00\x00\x01\x8b\xcf\xe5h\x00\xcf\x00\x00\x01\x8b\xcf\xe5h"
        b"\x00\xc0\xc4\x01\x80"
    ),
}
#: The timeouts inside those records (their deadlines, as schema-1 code computed them).
OLD_TIMEOUTS = {"old-kept": 60_000, "old-short": 1_000, "old-forever": None}


@pytest.fixture
def open_manager(
    open_manager: Callable[..., SessionManager],
) -> Callable[..., SessionManager]:
    """The conftest's ``open_manager``, each manager on a ``ManualClock`` of its own at
    ``START`` unless given a clock."""

    def make(*args: Any, **overrides: Any) -> SessionManager:
        overrides.setdefault("clock", ManualClock(START))
        return open_manager(*args, **overrides)

    return make


def _plan(cluster: Any, statement: bytes, *values: Any) -> str:
    """The plan PostgreSQL chooses for one of the backend's statements, with ``values``."""
    text = statement.decode()
    for name in ("%(owner)s", "%(now)s", "%s"):
        text = text.replace(name, "{}")
    rendered = text.format(*(f"'{v}'" if isinstance(v, str) else v for v in values))
    return "\n".join(row[0] for row in cluster.sql("EXPLAIN " + rendered))


def _schema_1_table(pg_cluster: Any, table_name: str) -> None:
    """A table as schema-1 code created it, holding :data:`OLD_RECORDS` as that code stored
    them (``old-kept`` stored twice: its version column counted 2)."""
    pg_cluster.sql(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (table_name text PRIMARY "
                   "KEY, schema_version integer NOT NULL, updated_at timestamptz NOT NULL "
                   "DEFAULT now())")  # fmt: skip
    pg_cluster.sql(f'CREATE TABLE {table_name} (id text COLLATE "C" PRIMARY KEY, record '
                   "bytea NOT NULL, last_accessed bigint NOT NULL, deadline bigint, version bigint "
                   "NOT NULL DEFAULT 1, owner text)")  # fmt: skip
    pg_cluster.sql(f"CREATE INDEX {table_name}_deadline_idx ON {table_name} (deadline) "
                   "WHERE deadline IS NOT NULL")  # fmt: skip
    pg_cluster.sql(f"CREATE INDEX {table_name}_owner_idx ON {table_name} (owner) "
                   "WHERE owner IS NOT NULL")  # fmt: skip
    pg_cluster.sql(f"INSERT INTO {META_TABLE} (table_name, schema_version) VALUES (%s, 1)",
                   table_name)  # fmt: skip
    old_store = (  # schema 1's upsert, as the previous release sent it
        f"INSERT INTO {table_name} AS s (id, record, last_accessed, deadline) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, "
        "last_accessed = EXCLUDED.last_accessed, deadline = EXCLUDED.deadline, "
        "version = s.version + 1"
    )
    for session_id, record in OLD_RECORDS.items():
        timeout = OLD_TIMEOUTS[session_id]
        deadline = None if timeout is None else START + timeout
        pg_cluster.sql(old_store, session_id, record, START, deadline)
    pg_cluster.sql(old_store, "old-kept", OLD_RECORDS["old-kept"], START, START + 60_000)


class TestSchemaOneTables:
    def test_a_table_of_schema_1_with_format_1_records_opens_reads_and_works(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """A table created by the previous schema (version 1: no absolute_deadline column),
        holding format-1 records as the previous code wrote them, is migrated forward on open
        (one column added, no row rewritten): its sessions read as version 1 (the version
        column's count where the old code counted re-stores), without an owner or absolute
        timeout; then every operation works on them, cleanup included."""
        _schema_1_table(pg_cluster, table_name)
        manager = open_manager()
        assert pg_cluster.sql(
            f"SELECT schema_version FROM {META_TABLE} WHERE table_name = %s",
            table_name,
        ) == [(LATEST_VERSION,)]  # fmt: skip
        forever = manager.peek("old-forever")
        assert (forever.version, forever.owner, forever.absolute_timeout_ms) == (1, None, None)
        assert forever.metadata == {}
        assert forever.timeout_ms is None
        kept = manager.peek("old-kept")
        assert (kept.version, kept.owner, kept.metadata) == (2, None, {"n": 1})
        short = manager.peek("old-short")
        assert (short.version, short.timeout_ms, short.metadata) == (1, 1_000, {"n": 2})
        assert sorted(manager.list()) == sorted(OLD_RECORDS)

        updated = manager.update("old-kept", lambda md: {"n": md["n"] + 1})
        assert (updated.version, updated.metadata) == (3, {"n": 2})
        with pytest.raises(VersionConflict):
            manager.store(manager.peek("old-forever"), if_version=2)
        manager.clock.advance(1_001)  # type: ignore[attr-defined]
        with pytest.raises(SessionNotFound):
            manager.fetch("old-short")
        assert manager.fetch("old-kept").metadata == {"n": 2}
        assert manager.cleanup_expired() == 1
        assert manager.take("old-forever").metadata == {}
        assert manager.list() == ["old-kept"]

    def test_a_table_of_schema_1_opens_read_only_and_reads_without_migrating(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """Opened read-only (as a migration opens its source), a table of schema 1 is read as
        it is — sessions, listing and a full export — and left at schema 1, untouched."""
        _schema_1_table(pg_cluster, table_name)
        reader = open_manager(read_only=True)
        assert sorted(reader.list()) == sorted(OLD_RECORDS)
        exported = {s.id: s for s in reader.iter_sessions(include_expired=True)}
        assert sorted(exported) == sorted(OLD_RECORDS)
        assert exported["old-kept"].version == 2
        assert {(s.owner, s.absolute_timeout_ms) for s in exported.values()} == {(None, None)}
        assert reader.peek("old-short").metadata == {"n": 2}
        with pytest.raises(StorageError, match="read-only"):
            reader.store(reader.peek("old-short"))
        assert pg_cluster.sql(
            f"SELECT schema_version FROM {META_TABLE} WHERE table_name = %s",
            table_name,
        ) == [(1,)]  # fmt: skip
        columns = pg_cluster.sql(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
            table_name,
        )
        assert ("absolute_deadline",) not in columns


class TestColumns:
    def test_the_deadline_is_the_earliest_and_a_touch_never_passes_the_absolute_one(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """The stored deadline is the session's ``expires_at`` (the earlier of the idle and
        the absolute deadline), the absolute deadline is kept beside it, and a touch moves the
        deadline by as much as ``last_accessed`` but never past the absolute deadline; cleanup
        removes the session once that has passed, however recently it was touched."""
        manager = open_manager()
        manager.store_many([
            Session("both", START, START, 1_000, {}, absolute_timeout_ms=1_500, owner="o"),
            Session("absolute", START, START, None, {}, absolute_timeout_ms=2_000),
            Session("idle", START, START, 1_000, {}),
        ])  # fmt: skip
        query = f"SELECT id, deadline, absolute_deadline, owner FROM {table_name} ORDER BY id"
        assert pg_cluster.sql(query) == [
            ("absolute", START + 2_000, START + 2_000, None),
            ("both", START + 1_000, START + 1_500, "o"),
            ("idle", START + 1_000, None, None),
        ]
        for session_id in ("both", "absolute", "idle"):
            manager.backend.sessionkeeper_touch(session_id, START + 800)
        assert pg_cluster.sql(query) == [
            ("absolute", START + 2_000, START + 2_000, None),
            ("both", START + 1_500, START + 1_500, "o"),
            ("idle", START + 1_800, None, None),
        ]
        assert manager.backend.sessionkeeper_cleanup_expired(START + 1_500) == 0
        assert manager.backend.sessionkeeper_cleanup_expired(START + 1_501) == 1
        assert sorted(manager.backend.sessionkeeper_list(START + 1_501)) == ["absolute", "idle"]

    def test_the_version_column_is_what_readers_see(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """An unconditional store counts the version in SQL (the record may carry another
        number, guessed before the write): every read, the store's answer and an export
        give the column's version, and a conditional write checks that one."""
        manager = open_manager()
        stored = manager.store(Session("s", START, START, None, {"k": 1}, version=7))
        assert stored.version == 1  # a new id starts at 1, whatever the session said
        assert pg_cluster.sql(f"SELECT version FROM {table_name}") == [(1,)]
        assert manager.peek("s").version == 1
        assert [s.version for s in manager.iter_sessions()] == [1]
        again = manager.store(manager.peek("s"))
        assert again.version == manager.peek("s").version == 2
        assert manager.store(again.replace(metadata={"k": 2}), if_version=2).version == 3


class TestStatements:
    def test_a_conditional_write_never_recreates_a_deleted_or_expired_session(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """``store(if_version=N)`` for N >= 1 is an ``UPDATE`` of the live row at version N:
        when the session was deleted (or expired) after it was read, the write is refused
        with ``VersionConflict(actual=0)`` and no row is created — an upsert checking the
        version on conflict would insert it again (an update racing a logout would bring the
        session back)."""
        manager = open_manager()
        read = manager.create(timeout_ms=1_000, metadata={"n": 1})
        manager.delete(read.id)
        with pytest.raises(VersionConflict) as info:
            manager.store(read.replace(metadata={"n": 2}), if_version=read.version)
        assert (info.value.expected, info.value.actual) == (1, 0)
        assert pg_cluster.sql(f"SELECT count(*) FROM {table_name}") == [(0,)]
        again = manager.create(timeout_ms=1_000)
        manager.clock.advance(1_001)  # type: ignore[attr-defined]
        with pytest.raises(VersionConflict):
            manager.store(again.replace(metadata={"late": True}), if_version=1)
        assert manager.peek(again.id, include_expired=True).metadata == {}

    def test_owner_operations_read_the_owner_index(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """Listing, counting and deleting by owner find the rows through the owner index
        (no sequential scan of a table of 20,000 sessions of 2,000 owners)."""
        manager = open_manager()
        manager.store_many([
            Session(f"s{n}", START, START, None, {}, owner=f"user-{n % 2_000}")
            for n in range(20_000)
        ])  # fmt: skip
        pg_cluster.sql(f"ANALYZE {table_name}")
        statements = manager.backend.statements
        for statement, values in (
            (statements.list_owner, ("user-7", START)),
            (statements.count_owner, ("user-7", START)),
            (statements.delete_owner, ("user-7",)),
        ):
            plan = _plan(pg_cluster, statement, *values)
            assert f"{table_name}_owner_idx" in plan, plan
            assert "Seq Scan" not in plan, plan
        assert manager.count(owner="user-7") == 10
        assert manager.delete_owner("user-7") == 10
        assert manager.count() == 19_990

    def test_take_of_a_damaged_row_keeps_its_bytes(
        self, open_manager: Callable[..., SessionManager], pg_cluster: Any, table_name: str
    ) -> None:
        """``take`` of a row whose record does not decode raises ``StorageError`` naming the
        id, and the bytes it removed are kept in the quarantine table (never lost)."""
        manager = open_manager()
        manager.create(timeout_ms=None)
        pg_cluster.sql(f"INSERT INTO {table_name} (id, record, last_accessed) VALUES "
             "('bad', %s, 1)", b"\xc1 not a record")  # fmt: skip
        with pytest.raises(StorageError, match=r"'bad'.*quarantine"):
            manager.take("bad")
        assert pg_cluster.sql(f"SELECT id, record, last_accessed FROM {table_name}_quarantine") == [
            ("bad", b"\xc1 not a record", 1)
        ]
        assert manager.count() == 1


class TestRestart:
    def test_a_restart_is_invisible_to_the_writes_that_are_never_sent_twice(
        self,
        open_manager: Callable[..., SessionManager],
        pg_clusters: Callable[..., Any],
        restart_server: Callable[..., None],
    ) -> None:
        """``delete``, ``take``, ``rotate``, conditional stores, ``update`` and
        ``delete_owner`` are not retried after a lost connection (their first attempt may have
        done the work); after a server restart they still succeed, because the connection is
        checked for the server's goodbye before it is used, and a dead one replaced."""
        cluster = pg_clusters()
        manager = open_manager(cluster, backend_opts={"pool_min_size": 3, "pool_max_size": 3})
        made = [manager.create(timeout_ms=None, owner="o", metadata={"n": 0}) for _ in range(6)]
        operations: list[Callable[[], object]] = [
            lambda: manager.delete(made[0].id),
            lambda: manager.take(made[1].id),
            lambda: manager.rotate(made[2].id),
            lambda: manager.store(made[3].replace(metadata={"n": 1}), if_version=1),
            lambda: manager.update(made[4].id, lambda md: {"n": 2}),
            lambda: manager.delete_owner("o"),
        ]
        for operation in operations:
            restart_server(cluster, manager, 3)  # every pooled connection used, then dead
            operation()
        assert manager.count() == 0
