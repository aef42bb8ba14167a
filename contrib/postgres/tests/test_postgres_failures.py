"""The ``postgres`` backend when the server goes away: clear errors, recovery without a restart of
the client, nothing acknowledged lost; and stored rows of garbage bytes."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionkeeper import Session, SessionManager, SessionNotFound, StorageError
from sessionkeeper.backend import CodecError, decode_session
from sessionkeeper.testing import ManualClock

START = 1_700_000_000_000


@pytest.fixture
def own_cluster(pg_clusters: Callable[..., Any]) -> Any:
    """A cluster of the test's own, which it may stop and restart."""
    return pg_clusters()


@pytest.fixture
def manager_on(table_name: str) -> Iterator[Callable[..., SessionManager]]:
    """``manager_on(cluster, **backend_opts)``: a manager on the test's table of ``cluster``."""
    opened: list[SessionManager] = []

    def make(cluster: Any, **opts: Any) -> SessionManager:
        backend_opts = {
            "dsn": cluster.dsn(),
            "table_name": table_name,
            "connect_timeout_ms": 2_000,
            **opts,
        }
        manager = SessionManager(
            backend="postgres",
            backend_opts=backend_opts,
            cleanup_interval=0,
            clock=ManualClock(START),
        )
        opened.append(manager)
        return manager

    yield make
    for manager in reversed(opened):
        manager.close()


def _decodes_as(record: bytes, session_id: str) -> bool:
    try:
        return decode_session(record).id == session_id
    except CodecError:
        return False


def _row_of(cluster: Any, table_name: str, session_id: str) -> tuple[Any, ...] | None:
    with cluster.connect() as conn:
        return conn.execute(
            f"SELECT record, last_accessed, version FROM {table_name} WHERE id = %s",  # type: ignore[arg-type]
            (session_id,),
        ).fetchone()


def _session(sid: str, **metadata: Any) -> Session:
    return Session(sid, START, START, None, metadata)


class TestConnectionLoss:
    def test_open_against_no_server_is_a_storage_error_naming_it(
        self, own_cluster: Any, manager_on: Callable[..., SessionManager]
    ) -> None:
        """Opening a store whose server is down fails with a ``StorageError`` naming the backend
        and the address, and libpq's reason."""
        own_cluster.stop()
        with pytest.raises(StorageError) as info:
            manager_on(own_cluster)
        assert info.value.backend == "postgres"
        assert f"127.0.0.1:{own_cluster.port}" in str(info.value)
        assert "cannot connect" in str(info.value)

    def test_operations_fail_clearly_while_down_and_work_again_after(
        self, own_cluster: Any, manager_on: Callable[..., SessionManager]
    ) -> None:
        """With the server stopped, every operation raises a ``StorageError`` naming the
        backend and server (never ``SessionNotFound``); once it is back, the same manager works
        again and finds what was stored before."""
        manager = manager_on(own_cluster)
        manager.store(_session("before", n=1))
        own_cluster.stop()
        operations = {
            "fetch": lambda: manager.fetch("before"),
            "peek": lambda: manager.peek("before"),
            "store": lambda: manager.store(_session("during")),
            "delete": lambda: manager.delete("before"),
            "list": manager.list,
            "count": manager.count,
            "cleanup": manager.cleanup_expired,
        }
        for name, operation in operations.items():
            with pytest.raises(StorageError) as info:
                operation()
            assert not isinstance(info.value, SessionNotFound), name
            assert info.value.backend == "postgres", name
            assert f"127.0.0.1:{own_cluster.port}" in str(info.value), name
        own_cluster.start()
        assert manager.fetch("before").metadata == {"n": 1}
        manager.store(_session("after"))
        assert sorted(manager.list()) == ["after", "before"]

    def test_a_restart_between_operations_is_invisible(
        self,
        own_cluster: Any,
        manager_on: Callable[..., SessionManager],
        restart_server: Callable[..., None],
    ) -> None:
        """After a restart, the pool's connections are all dead; the next operations still
        succeed (a lost connection is replaced and the operation retried once)."""
        manager = manager_on(own_cluster, pool_min_size=3, pool_max_size=3)
        manager.store(_session("kept", n=1))
        restart_server(own_cluster, manager, 3)
        for _ in range(5):
            assert manager.peek("kept").metadata == {"n": 1}
            manager.store(_session("kept", n=1))

    def test_a_restart_is_invisible_to_the_plain_store_and_store_many(
        self,
        own_cluster: Any,
        manager_on: Callable[..., SessionManager],
        restart_server: Callable[..., None],
    ) -> None:
        """The writes of the store hook (``create``, import, migrate) and of ``store_many``,
        sent first on an unchecked connection, succeed on their first call after a restart
        that killed every pooled connection: the lost attempt is sent again on a sound one."""
        manager = manager_on(own_cluster, pool_min_size=2, pool_max_size=2)
        created: list[Session] = []
        writes: dict[str, Callable[[], object]] = {
            "create": lambda: created.append(manager.create(metadata={"n": 1})),
            "store_many": lambda: manager.store_many([_session("many-1"), _session("many-2")]),
        }
        for name, write in writes.items():
            restart_server(own_cluster, manager, 2)
            write()  # no StorageError
            assert manager.count() == len(created) + (2 if name == "store_many" else 0)
        assert manager.peek(created[0].id).metadata == {"n": 1}
        assert sorted(manager.list()) == sorted([created[0].id, "many-1", "many-2"])

    def test_every_acknowledged_write_survives_a_crash_restart_under_load(
        self, own_cluster: Any, manager_on: Callable[..., SessionManager]
    ) -> None:
        """Writers keep storing while the server is killed (immediate shutdown: no checkpoint)
        and started again: every store that returned is in the table afterwards, failed ones
        raised ``StorageError``, and the writers go on storing on the same manager."""
        manager = manager_on(own_cluster, pool_max_size=4)
        acknowledged: list[set[str]] = [set() for _ in range(4)]
        failures: list[list[BaseException]] = [[] for _ in range(4)]
        stop = threading.Event()
        after_restart = threading.Event()
        written_after: list[int] = [0] * 4

        def write(index: int) -> None:
            n = 0
            while not stop.is_set():
                sid = f"w{index}-{n}"
                n += 1
                try:
                    manager.store(_session(sid, n=n))
                except StorageError as exc:
                    failures[index].append(exc)
                    continue
                acknowledged[index].add(sid)
                if after_restart.is_set():
                    written_after[index] += 1

        threads = [threading.Thread(target=write, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        try:
            while sum(len(done) for done in acknowledged) < 200:
                threading.Event().wait(0.01)
            own_cluster.restart(immediate=True)
            after_restart.set()
            end = threading.Event()
            for _ in range(3000):
                if all(count >= 20 for count in written_after):
                    break
                end.wait(0.01)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        assert all(count >= 20 for count in written_after), written_after
        for errors in failures:
            assert all(isinstance(error, StorageError) for error in errors)
        stored = set(manager.list())
        for done in acknowledged:
            assert done <= stored, sorted(done - stored)[:10]


@pytest.fixture(scope="class")
def garbage_manager(pg_cluster: Any) -> Iterator[SessionManager]:
    """One manager for every example of the garbage-row test (its own table)."""
    with SessionManager(
        backend="postgres",
        backend_opts={"dsn": pg_cluster.dsn(), "table_name": "garbage_rows"},
        cleanup_interval=0,
        clock=ManualClock(START),
    ) as manager:
        yield manager


@pytest.mark.fuzz
class TestGarbageRows:
    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        record=st.one_of(
            st.binary(max_size=200),
            st.binary(max_size=40).map(lambda tail: b"\x96\x01\xa1g" + tail),
        ),
        last_accessed=st.integers(min_value=-(2**63), max_value=2**63 - 1),
        version=st.one_of(st.just(1), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    )
    def test_a_row_of_garbage_is_a_clear_error(
        self,
        pg_cluster: Any,
        garbage_manager: SessionManager,
        record: bytes,
        last_accessed: int,
        version: int,
    ) -> None:
        """Whatever bytes, last_accessed and version a row holds, reading it either gives a
        valid session of that id (with that version) or raises a ``StorageError`` naming the
        backend, the table and the id — never another exception, never "not found"; a
        ``rotate`` of it changes nothing, and the neighbouring row stays readable."""
        manager, table_name = garbage_manager, "garbage_rows"
        manager.delete("g")
        manager.store(_session("g", n=0))
        manager.store(_session("neighbour", n=1))
        with pg_cluster.connect() as conn:
            conn.execute(
                f"UPDATE {table_name} SET record = %s, last_accessed = %s, version = %s "  # type: ignore[arg-type]
                "WHERE id = 'g'",
                (record, last_accessed, version),
            )
        if _decodes_as(record, "g") and version >= 1:
            assert manager.peek("g", include_expired=True).version == version
            for read in (manager.peek, manager.fetch, manager.touch):
                with contextlib.suppress(SessionNotFound):  # expired at the clock
                    assert read("g").id == "g"
        else:
            for read in (manager.peek, manager.fetch, manager.touch):
                with pytest.raises(StorageError) as info:
                    read("g")
                assert not isinstance(info.value, SessionNotFound)
                assert info.value.backend == "postgres"
                assert "'g'" in str(info.value)
                assert table_name in str(info.value)
            with pytest.raises(StorageError, match="'g'"):
                list(manager.iter_sessions(include_expired=True))
            with pytest.raises(StorageError, match="'g'"):
                manager.rotate("g")
            assert _row_of(pg_cluster, table_name, "g") == (record, last_accessed, version)
        assert manager.peek("neighbour").metadata == {"n": 1}
