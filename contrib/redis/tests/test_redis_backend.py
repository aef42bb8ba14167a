"""The ``redis`` backend beyond the conformance kit: options, key layout, native expiry, damage,
several processes, concurrent touches, connection loss, ``WAIT`` and the script cache."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sessionkeeper import (
    ConfigError,
    Session,
    SessionManager,
    SessionNotFound,
    StorageError,
    installed_backends,
    load_config,
)
from sessionkeeper.backend import BackendContext, check_store, decode_session, encode_session
from sessionkeeper.testing import ManualClock
from sessionkeeper_redis import (
    MAX_TTL_MS,
    STORE_CHUNK,
    ClusterOptions,
    RedisBackend,
    RedisOptions,
    SentinelOptions,
)

WORKER = Path(__file__).with_name("redis_worker.py")
START = 1_700_000_000_000


@pytest.fixture
def open_manager(redis_server: Any, table_name: str) -> Iterator[Any]:
    """Open managers on the shared server and the test's table; all closed after the test."""
    opened: list[SessionManager] = []

    def make(**overrides: Any) -> SessionManager:
        backend_opts = {"url": redis_server.url, "table_name": table_name}
        backend_opts.update(overrides.pop("backend_opts", {}))
        kwargs: dict[str, Any] = {"cleanup_interval": 0, **overrides}
        manager = SessionManager(backend="redis", backend_opts=backend_opts, **kwargs)
        opened.append(manager)
        return manager

    yield make
    for manager in reversed(opened):
        manager.close()


def _raw(server: Any) -> redis.Redis:
    return server.client()


def _keys(table: str, session_id: str) -> tuple[str, str, str]:
    return f"{{{table}}}:s:{session_id}", f"{{{table}}}:ids", f"{{{table}}}:exp"


def _run_worker(*args: str) -> Any:
    done = subprocess.run(
        [sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class TestPackaging:
    def test_the_entry_point_names_the_backend_class(self) -> None:
        """``backend = "redis"`` finds :class:`RedisBackend` through its entry point."""
        assert installed_backends()["redis"].load() is RedisBackend

    def test_capabilities(self) -> None:
        """The backend says it is persistent, shared between processes, blocking, and can be
        opened read-only; it does not claim replication."""
        caps = RedisBackend.capabilities
        assert (caps.persistent, caps.shared, caps.blocking, caps.read_only_open) == (
            True,
            True,
            True,
            True,
        )
        assert caps.replicated is False

    def test_constructor_does_no_io(self) -> None:
        """Building the backend for an address where nothing listens does not connect: only
        ``sessionkeeper_open`` does."""
        from sessionkeeper.backend import BackendContext

        backend = RedisBackend(
            RedisOptions(url="redis://127.0.0.1:1/0"), BackendContext(name="redis")
        )
        assert "closed" in repr(backend)


class TestOptions:
    @pytest.mark.parametrize(
        ("opts", "key", "message"),
        [
            ({}, "url", "exactly one of url"),
            (
                {"url": "redis://h:1", "cluster": {"startup_nodes": ["h:1"]}},
                "cluster",
                "not url and cluster",
            ),
            ({"url": "http://h:1"}, "url", "redis://, rediss://"),
            ({"url": "redis://h:port"}, "url", "not a valid URL"),
            ({"url": "unix://"}, "url", "socket's path"),
            ({"url": "redis://h/x"}, "url", "database number"),
            # issue 12: '²'.isdigit() is true, and redis-py silently read it as database 0
            ({"url": "redis://h/\u00b2"}, "url", "database number"),
            ({"url": "redis://h/\u0663"}, "url", "database number"),
            ({"url": "redis://h/99999999999"}, "url", "not between 0 and 1000000"),
            ({"sentinel": {"hosts": ["h:1"], "service_name": "m"}, "db": 10**12}, "db", "between"),
            # issue 12: the URL's query overrode the bounded options (and failed only at open)
            ({"url": "redis://h/0?socket_timeout=1e400"}, "url", "use socket_timeout_ms"),
            ({"url": "redis://h/0?db=5"}, "url", "URL's path"),
            ({"url": "redis://h/0?bogus=1"}, "url", "only TLS settings"),
            ({"url": "redis://h/0?ssl_ca_certs=/x"}, "url", "needs a rediss:// URL"),
            ({"url": "rediss://h/0?ssl_nonsense=1"}, "url", "not a TLS setting"),
            ({"url": "rediss://h/0?ssl_check_hostname=maybe"}, "url", "not true or false"),
            ({"url": "rediss://h/0?ssl_min_version=abc"}, "url", "ssl_min_version"),
            ({"url": "rediss://h/0?ssl_ca_certs=a&ssl_ca_certs=b"}, "url", "twice"),
            ({"url": "unix:///r.sock?db=x"}, "url", "not a database number"),
            ({"url": "redis://h", "db": 1}, "db", "URL's path"),
            (
                {"sentinel": {"hosts": "h:1", "service_name": "m"}},
                "sentinel.hosts",
                "not one string",
            ),
            ({"sentinel": {"hosts": ["h"], "service_name": "m"}}, "sentinel.hosts[0]", "host:port"),
            ({"sentinel": {"hosts": [], "service_name": "m"}}, "sentinel.hosts", "at least one"),
            (
                {"sentinel": {"hosts": ["h:1"], "service_name": ""}},
                "sentinel.service_name",
                "empty",
            ),
            ({"sentinel": {"hosts": ["h:1"]}}, "sentinel.service_name", "required"),
            (
                {"sentinel": {"hosts": ["h:1"], "service_name": "m", "port": 1}},
                "sentinel.port",
                "unknown key",
            ),
            ({"cluster": {"startup_nodes": ["h:99999"]}}, "cluster.startup_nodes[0]", "port"),
            ({"cluster": {"startup_nodes": ["h:1"]}, "db": 2}, "db", "only database 0"),
            ({"url": "redis://h", "table_name": "a{b}"}, "table_name", "braces"),
            ({"url": "redis://h", "table_name": "a b"}, "table_name", "visible ASCII"),
            ({"url": "redis://h", "wait_replicas": -1}, "wait_replicas", "between 0"),
            ({"url": "redis://h", "wait_timeout_ms": 0}, "wait_timeout_ms", "between 1"),
            ({"url": "redis://h", "ttl_margin_ms": 0}, "ttl_margin_ms", "between 1"),
            ({"url": "redis://h", "retries": "3"}, "retries", "expected an integer"),
            ({"url": "redis://h", "password": ""}, "password", "empty"),
            ({"url": "redis://h", "host": "h"}, "host", "unknown key"),
        ],
    )
    def test_bad_options_name_the_key(self, opts: dict[str, Any], key: str, message: str) -> None:
        """Each mistake in ``backend_opts`` is a ``ConfigError`` naming the offending key,
        raised before any connection is attempted."""
        with pytest.raises(ConfigError, match=message) as info:
            SessionManager(backend="redis", backend_opts=opts)
        assert info.value.key == f"sessionkeeper.backend_opts.{key}"

    def test_a_url_query_may_carry_tls_settings_and_a_socket_its_database(self) -> None:
        """What the URL's query is documented to carry still validates: a ``rediss://`` URL's
        ``ssl_*`` settings, and the database of a ``unix://`` socket."""
        tls = RedisOptions(url="rediss://h:6380/1?ssl_ca_certs=/ca.pem&ssl_check_hostname=false")
        assert tls.server_name() == "redis at h:6380 (TLS)"
        assert RedisOptions(url="unix:///run/redis.sock?db=3").mode == "url"

    def test_the_three_ways_to_name_a_server(self) -> None:
        """``url``, ``sentinel`` and ``cluster`` each build valid options and name the server
        without credentials."""
        plain = RedisOptions(url="redis://user:secret@10.0.0.5:6380/2")
        assert plain.mode == "url"
        assert plain.server_name() == "redis at 10.0.0.5:6380"
        assert "secret" not in repr(plain)
        assert RedisOptions(url="rediss://[::1]").server_name() == "redis at [::1]:6379 (TLS)"
        assert (
            RedisOptions(url="unix:///run/redis.sock").server_name()
            == "redis at unix:/run/redis.sock"
        )
        sentinel = RedisOptions(
            sentinel=SentinelOptions(hosts=("s1:26379", "[::1]:26380"), service_name="mymaster")
        )
        assert sentinel.mode == "sentinel"
        assert sentinel.sentinel is not None
        assert sentinel.sentinel.addresses() == [("s1", 26379), ("::1", 26380)]
        assert "mymaster" in sentinel.server_name()
        cluster = RedisOptions(cluster=ClusterOptions(startup_nodes=("n1:7000",)))
        assert cluster.mode == "cluster"
        assert cluster.server_name() == "redis cluster (startup nodes n1:7000)"

    def test_a_config_file_with_a_sentinel_table(self, tmp_path: Path) -> None:
        """A TOML config with a ``[sessionkeeper.backend_opts.sentinel]`` table validates; an
        unreachable Sentinel is a ``StorageError`` naming the service and the Sentinels."""
        config = tmp_path / "sessionkeeper.toml"
        config.write_text(
            '[sessionkeeper]\nbackend = "redis"\ncleanup_interval = 0\n'
            "[sessionkeeper.backend_opts]\nconnect_timeout_ms = 200\nretries = 0\n"
            "[sessionkeeper.backend_opts.sentinel]\n"
            'hosts = ["127.0.0.1:1"]\nservice_name = "mymaster"\n'
        )
        with pytest.raises(StorageError, match=r"'mymaster' \(sentinels 127\.0\.0\.1:1\)"):
            SessionManager.from_config(config)


class TestIdentity:
    """``SessionManager.identity()`` names the store however the options spelled it (issue 12:
    ``migrate --delete-source`` from ``redis://127.0.0.1:6379/0`` to ``redis://localhost:6379``
    emptied the store it had copied onto itself)."""

    def test_spellings_of_one_server_and_table_have_one_identity(
        self, redis_server: Any, table_name: str
    ) -> None:
        """``127.0.0.1`` and ``localhost``, ``/0`` and no database, read-only or not: one
        identity, built from the server's run id, the database number and the table."""
        port = redis_server.port
        urls = (
            f"redis://127.0.0.1:{port}/0",
            f"redis://localhost:{port}",
            f"redis://localhost:{port}/",
            f"redis://127.0.0.1:{port}//0",
        )
        identities = set()
        for index, url in enumerate(urls):
            with SessionManager(
                backend="redis",
                backend_opts={"url": url, "table_name": table_name},
                cleanup_interval=0,
                read_only=bool(index % 2),
            ) as manager:
                identities.add(manager.identity())
        run_id = _raw(redis_server).info("server")["run_id"]
        assert identities == {f"redis:run_id={run_id},db=0,table={table_name}"}

    def test_migrate_delete_source_onto_itself_is_refused_and_loses_nothing(
        self, redis_server: Any, table_name: str, tmp_path: Path
    ) -> None:
        """The issue's reproduction: ``migrate --delete-source`` from a config naming
        ``redis://127.0.0.1:<port>/0`` to one naming ``redis://localhost:<port>`` (one store) is
        refused with exit code 2, and every session is still there. (Before the backend had an
        identity the migration ran and exited 0: on its own, ``migrate`` once reported "deleted
        20" and left the store empty; now only its second line of defence kept them.)"""
        from click.testing import CliRunner

        from sessionkeeper.cli import cli

        configs = []
        for name, url in (
            ("a", f"redis://127.0.0.1:{redis_server.port}/0"),
            ("b", f"redis://localhost:{redis_server.port}"),
        ):
            path = tmp_path / f"{name}.toml"
            path.write_text(
                '[sessionkeeper]\nbackend = "redis"\ncleanup_interval = 0\n'
                f'[sessionkeeper.backend_opts]\nurl = "{url}"\ntable_name = "{table_name}"\n'
            )
            configs.append(str(path))
        with SessionManager.from_config(configs[0]) as manager:
            stored = {manager.create(timeout_ms=None).id for _ in range(20)}
        result = CliRunner().invoke(
            cli, ["migrate", "--config", configs[0], "--to", configs[1], "--delete-source"]
        )
        assert result.exit_code == 2, result.output
        assert "same store" in result.output
        with SessionManager.from_config(configs[1]) as manager:
            assert set(manager.list()) == stored

    def test_another_database_table_or_server_is_another_store(
        self, redis_server: Any, redis_servers: Any, table_name: str
    ) -> None:
        """A different database number, table name or server gives a different identity."""
        other = redis_servers()
        opts = [
            {"url": f"redis://localhost:{redis_server.port}", "table_name": table_name},
            {"url": f"redis://localhost:{redis_server.port}/1", "table_name": table_name},
            {"url": f"redis://localhost:{redis_server.port}", "table_name": table_name + "x"},
            {"url": other.url, "table_name": table_name},
        ]
        identities = []
        for backend_opts in opts:
            with SessionManager(
                backend="redis", backend_opts=backend_opts, cleanup_interval=0
            ) as manager:
                identities.append(manager.identity())
        assert None not in identities
        assert len(set(identities)) == len(opts), identities


class TestOpening:
    def test_unreachable_server_is_a_storage_error_naming_it(self, unused_port: int) -> None:
        """Opening a manager on an address where no Redis listens fails with a
        ``StorageError`` that names the address, without the password."""
        port = unused_port
        with pytest.raises(StorageError, match=f"127.0.0.1:{port}") as info:
            SessionManager(
                backend="redis",
                backend_opts={
                    "url": f"redis://:hunter2@127.0.0.1:{port}/0",
                    "retries": 0,
                    "connect_timeout_ms": 500,
                },
            )
        assert "hunter2" not in str(info.value)
        assert info.value.backend == "redis"


class TestKeyLayout:
    def test_a_session_is_its_codec_record_with_a_ttl_and_two_index_entries(
        self, open_manager: Any, redis_server: Any, table_name: str
    ) -> None:
        """A stored session is the string ``{table}:s:<id>`` holding exactly the core codec's
        record, with a TTL of ``timeout_ms + ttl_margin_ms``; it is in the id index and, scored
        by its deadline, in the expiry index."""
        clock = ManualClock()
        manager = open_manager(clock=clock, backend_opts={"ttl_margin_ms": 5_000})
        session = manager.create(timeout_ms=120_000, metadata={"user_id": "user_456"})
        raw = _raw(redis_server)
        key, ids, exp = _keys(table_name, session.id)
        assert raw.type(key) == b"string"
        assert raw.get(key) == encode_session(session)
        assert decode_session(raw.get(key)) == session
        assert 120_000 < raw.pttl(key) <= 125_000
        assert raw.zscore(ids, session.id) == 0
        assert raw.zscore(exp, session.id) == clock.now + 120_000

    def test_a_session_without_timeout_has_no_ttl_and_no_deadline(
        self, open_manager: Any, redis_server: Any, table_name: str
    ) -> None:
        """A session that never expires is a key without TTL and is not in the expiry index."""
        manager = open_manager()
        session = manager.create(timeout_ms=None)
        raw = _raw(redis_server)
        key, ids, exp = _keys(table_name, session.id)
        assert raw.pttl(key) == -1
        assert raw.zscore(ids, session.id) == 0
        assert raw.zscore(exp, session.id) is None

    def test_touch_rewrites_the_record_moves_the_deadline_and_renews_the_ttl(
        self, open_manager: Any, redis_server: Any, table_name: str
    ) -> None:
        """A touch stores the record with the new ``last_accessed`` (every other field as it
        was), moves the deadline in the expiry index and gives the key its full TTL again."""
        clock = ManualClock()
        manager = open_manager(clock=clock, backend_opts={"ttl_margin_ms": 5_000})
        session = manager.create(timeout_ms=600_000, metadata={"k": [1, "two"]})
        raw = _raw(redis_server)
        key, _, exp = _keys(table_name, session.id)
        raw.pexpire(key, 100_000)
        now = clock.advance(90_000)
        assert manager.touch(session.id).last_accessed == now
        assert raw.get(key) == encode_session(session.touched(now))
        assert raw.zscore(exp, session.id) == now + 600_000
        assert raw.pttl(key) > 600_000

    @pytest.mark.parametrize("id_length", [1, 31, 32, 255, 256])
    @pytest.mark.parametrize(
        ("before", "after"),
        [
            (0, 1),
            (5, 127),
            (127, 128),
            (128, 255),
            (200, 256),
            (255, 65_535),
            (65_535, 65_536),
            (70_000, 2**32 - 1),
            (2**32 - 1, 2**32),
            (2**32, START),
            (START, START + 1),
            (START, 2**63 - 1),
        ],
    )
    def test_touch_compares_and_rewrites_every_integer_encoding(
        self, open_manager: Any, redis_server: Any, table_name: str, id_length: int,
        before: int, after: int,
    ) -> None:  # fmt: skip
        """The touch script reads and rewrites ``last_accessed`` in every msgpack integer
        encoding and beside ids of every string encoding: a later time is stored exactly, and
        an earlier one (or the same) changes nothing."""
        manager = open_manager()
        hook = manager.plugin_manager.hook
        session_id = "i" * id_length
        stored = Session(session_id, 0, before, 1_000, {"m": 1})
        manager.store(stored)
        key = _keys(table_name, session_id)[0]
        raw = _raw(redis_server)
        assert hook.sessionkeeper_touch(session_id=session_id, last_accessed=before) == stored
        assert raw.get(key) == encode_session(stored)
        touched = hook.sessionkeeper_touch(session_id=session_id, last_accessed=after)
        assert touched == stored.touched(after)
        assert raw.get(key) == encode_session(stored.touched(after))
        assert hook.sessionkeeper_touch(session_id=session_id, last_accessed=before) == touched
        assert raw.get(key) == encode_session(touched)

    @pytest.mark.parametrize("timeout_ms", [None, 1, 127, 128, 65_536, 2**32, MAX_TTL_MS + 1])
    def test_touch_keeps_every_timeout_encoding(
        self, open_manager: Any, redis_server: Any, table_name: str, timeout_ms: int | None
    ) -> None:
        """A touch of a session with a timeout in any msgpack encoding (or none) keeps the
        timeout, sets the deadline from it, and gives the key a TTL only when it has one."""
        clock = ManualClock()
        manager = open_manager(clock=clock, backend_opts={"ttl_margin_ms": 5_000})
        stored = Session("s", clock.now, clock.now, timeout_ms)
        manager.store(stored)
        now = clock.now + 1
        assert manager.plugin_manager.hook.sessionkeeper_touch(session_id="s", last_accessed=now)
        raw = _raw(redis_server)
        key, _, exp = _keys(table_name, "s")
        assert decode_session(raw.get(key)) == stored.touched(now)
        if timeout_ms is None:
            assert raw.zscore(exp, "s") is None
            assert raw.pttl(key) == -1
        else:
            assert raw.zscore(exp, "s") == now + timeout_ms
            if timeout_ms > MAX_TTL_MS:
                assert raw.pttl(key) == -1
            else:
                assert timeout_ms < raw.pttl(key) <= timeout_ms + 5_000

    def test_store_many_writes_what_store_writes_one_by_one(
        self, open_manager: Any, redis_server: Any, table_name: str
    ) -> None:
        """``store_many`` of more sessions than one round trip sends leaves a table as the
        ``store`` hook of each session would: the same records (versions as given), TTLs (none
        without a timeout or beyond the largest TTL), index entries and owner entries, replaced
        sessions' deadlines moved or dropped and their owners changed."""
        clock = ManualClock()
        now = clock.now
        before = [Session(f"old-{i}", now, now, 5_000, owner="ann") for i in range(3)]
        batch = [
            Session("old-0", now, now, 9_000, {"v": 2}, version=7, owner="bob"),
            Session("old-1", now, now, None, {"v": 2}),
            Session("huge-timeout", now, now, MAX_TTL_MS + 1),
            *(Session(f"new-{i}", now, now + i, 1_000 + i, {"i": i}) for i in range(STORE_CHUNK)),
        ]
        raw = _raw(redis_server)
        tables: dict[str, Any] = {}
        for table in (table_name, f"{table_name}-one"):
            opts = {"table_name": table, "ttl_margin_ms": 5_000}
            manager = open_manager(clock=clock, backend_opts=opts)
            for stored in before:
                manager.store(stored)
            if table == table_name:
                assert manager.store_many(batch) == len(batch)
            else:
                for stored in batch:
                    manager.backend.sessionkeeper_store(session=stored)
            backend = manager.backend
            key_of = backend.session_key
            ids, exp = backend.index_keys
            every = [*batch, before[2]]
            tables[table] = (
                raw.mget([key_of(s.id) for s in every]),
                [raw.pttl(key_of(s.id)) > (s.timeout_ms or 0) for s in every],
                [raw.pttl(key_of(s.id)) == -1 for s in every],
                raw.zrange(ids, 0, -1, withscores=True),
                raw.zrange(exp, 0, -1, withscores=True),
                raw.hgetall(backend.owner_hash_key),
                raw.smembers(backend.owner_key("ann")),
                raw.smembers(backend.owner_key("bob")),
            )
        assert tables[table_name] == tables[f"{table_name}-one"]
        records, _, no_ttl, ids_index, exp_index, owners, ann, bob = tables[table_name]
        assert owners == {b"old-0": b"bob", b"old-2": b"ann"}
        assert (ann, bob) == ({b"old-2"}, {b"old-0"})
        assert decode_session(records[0]).version == 7
        assert records == [encode_session(s) for s in [*batch, before[2]]]
        assert no_ttl[:3] == [False, True, True]
        assert len(ids_index) == len(batch) + 1
        assert (b"old-1", float(now + 5_000)) not in exp_index

    def test_keys_of_one_table_share_a_cluster_hash_tag(self, table_name: str) -> None:
        """Every key of a table carries the hash tag ``{table_name}``, so Redis Cluster keeps
        the table in one slot (the scripts need that)."""
        from redis.crc import key_slot

        backend = RedisBackend(
            RedisOptions(url="redis://127.0.0.1/0", table_name=table_name),
            BackendContext(name="redis"),
        )
        keys = [backend.session_key("a"), backend.session_key("{x}*?[]\\"), *backend.index_keys]
        assert len({key_slot(key.encode()) for key in keys}) == 1


class TestNativeExpiry:
    def test_redis_drops_an_expired_session_and_cleanup_counts_it(
        self, open_manager: Any, redis_server: Any, table_name: str, wait_until: Any
    ) -> None:
        """With the system clock, Redis itself drops a session's key once its timeout and the
        margin have run out; the manager no longer finds or counts it, and the next cleanup
        removes its index entries and counts it as dropped by Redis."""
        manager = open_manager(backend_opts={"ttl_margin_ms": 1})
        session = manager.create(timeout_ms=150)
        kept = manager.create(timeout_ms=None)
        raw = _raw(redis_server)
        key, ids, exp = _keys(table_name, session.id)
        wait_until(lambda: raw.exists(key) == 0, "Redis expiring the session's key")
        wait_until(lambda: manager.count() == 1, "the manager's clock passing the deadline")
        with pytest.raises(SessionNotFound):
            manager.fetch(session.id)
        assert manager.list() == [kept.id]
        assert manager.cleanup_expired() == 1
        assert raw.zscore(ids, session.id) is None
        assert raw.zscore(exp, session.id) is None
        assert manager.stats()["backend_stats"]["cleanup_dropped_by_redis"] == 1

    def test_timeouts_beyond_the_largest_ttl_keep_the_key(
        self, open_manager: Any, redis_server: Any, table_name: str
    ) -> None:
        """A timeout longer than the largest TTL the backend sets (``MAX_TTL_MS``, thousands of
        years) stores a key without TTL; the expiry index still holds its deadline, so a
        cleanup removes it once it expired."""
        clock = ManualClock()
        manager = open_manager(clock=clock)
        session = Session("forever-ish", clock.now, clock.now, MAX_TTL_MS + 1)
        manager.store(session)
        raw = _raw(redis_server)
        key, _, _ = _keys(table_name, session.id)
        assert raw.pttl(key) == -1
        clock.advance(MAX_TTL_MS)
        assert manager.cleanup_expired() == 0
        clock.advance(2)
        assert manager.cleanup_expired() == 1
        assert raw.exists(key) == 0


class TestDamagedRecords:
    @pytest.mark.parametrize(
        ("damage", "message"),
        [
            (b"\xc1 not msgpack", "not a msgpack record"),
            (b"\x93\x01\x02\x03", "version 1 record has 3 fields"),
            (b"\x96\x02\xa1x\x00\x00\xc0\xc4\x01\x80", "version 2 record has 6 fields"),
            (b"\x96\x03\xa1x\x00\x00\xc0\xc4\x01\x80", "format version 3"),
            (b"\x96\x01\xa1x\x00\xa1x\xc0\xc4\x01\x80", "last_accessed"),
            (b"\x96\x01\xa1x\x00\xcf\x00\x01", "not a msgpack record"),
            (b"\x96\x01\xa1x\x00\x05\xcd\x01", "not a msgpack record"),
            (b"", "not a msgpack record"),
        ],
        ids=[
            "not-msgpack",
            "short-record",
            "version-2-short",
            "version-3",
            "string-last-accessed",
            "truncated-last-accessed",
            "truncated-timeout",
            "empty",
        ],
    )
    def test_damage_is_a_storage_error_naming_server_table_and_key(
        self,
        open_manager: Any,
        redis_server: Any,
        table_name: str,
        damage: bytes,
        message: str,
    ) -> None:
        """A session key that does not hold a decodable record makes ``fetch``, ``peek`` and
        ``touch`` raise a ``StorageError`` naming the server, the table and the key (never
        ``SessionNotFound``), leaves the value as it was, and ``store`` replaces it."""
        clock = ManualClock()
        manager = open_manager(clock=clock)
        manager.store(Session("victim", clock.now, clock.now, None))
        raw = _raw(redis_server)
        key, _, _ = _keys(table_name, "victim")
        raw.set(key, damage)
        for read in (manager.fetch, manager.peek, manager.touch):
            with pytest.raises(StorageError) as info:
                read("victim")
            assert not isinstance(info.value, SessionNotFound)
            text = str(info.value)
            assert redis_server.address in text
            assert repr(table_name) in text
            assert repr(key) in text
            assert "damaged" in text
        with pytest.raises(StorageError, match=message):
            manager.peek("victim")
        assert raw.get(key) == damage
        fresh = Session("victim", clock.now, clock.now, None, {"fixed": True})
        manager.store(fresh)
        assert manager.peek("victim").metadata == {"fixed": True}

    def test_a_key_of_another_type_is_damage(
        self, open_manager: Any, redis_server: Any, table_name: str
    ) -> None:
        """A session key that another program made a hash is reported as damage by reads and
        by touch, and ``store`` replaces it."""
        clock = ManualClock()
        manager = open_manager(clock=clock)
        raw = _raw(redis_server)
        key, _, _ = _keys(table_name, "victim")
        manager.store(Session("victim", clock.now, clock.now, None))
        raw.delete(key)
        raw.hset(key, "field", "value")
        for read in (manager.fetch, manager.touch):
            with pytest.raises(StorageError, match="not a string") as info:
                read("victim")
            assert repr(key) in str(info.value)
        manager.store(Session("victim", clock.now, clock.now, None))
        assert manager.peek("victim").id == "victim"

    def test_a_record_under_another_id_is_damage(
        self, open_manager: Any, redis_server: Any, table_name: str
    ) -> None:
        """A record copied to another session's key is reported, not served under the wrong id."""
        clock = ManualClock()
        manager = open_manager(clock=clock)
        manager.store(Session("one", clock.now, clock.now, None))
        manager.store(Session("two", clock.now, clock.now, None))
        raw = _raw(redis_server)
        one, _, _ = _keys(table_name, "one")
        two, _, _ = _keys(table_name, "two")
        raw.set(two, raw.get(one))
        with pytest.raises(StorageError, match="holds session 'one'"):
            manager.peek("two")


class TestSharedBetweenProcesses:
    def test_sessions_created_by_one_process_are_used_by_another(
        self, open_manager: Any, redis_server: Any, table_name: str
    ) -> None:
        """Sessions created by a separate process are fetched, touched and deleted here, and a
        third process sees the touches and the deletions."""
        created = _run_worker("create", redis_server.url, table_name, "5")
        manager = open_manager(touch_resolution=0)
        assert sorted(manager.list()) == sorted(created)
        for session_id in created:
            assert manager.fetch(session_id).metadata["by"] == "worker"
        touched = manager.touch(created[0])
        assert manager.delete(created[1]) is True
        shown = _run_worker("show", redis_server.url, table_name, *created[:3])
        assert shown[created[0]]["last_accessed"] == touched.last_accessed
        assert shown[created[1]] is None
        assert shown[created[2]]["metadata"]["by"] == "worker"

    def test_touching_processes_never_resurrect_deleted_sessions(
        self, open_manager: Any, redis_server: Any, table_name: str
    ) -> None:
        """Two processes touching the same sessions in a loop while this one deletes them:
        each deletion is final (no process's touch brings a session back), and both processes
        end up seeing every session gone."""
        manager = open_manager()
        ids = [manager.create(timeout_ms=600_000).id for _ in range(4)]
        raw = _raw(redis_server)
        workers = [
            subprocess.Popen(
                [sys.executable, str(WORKER), "touch", redis_server.url, table_name, *ids],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:
            for worker in workers:
                assert worker.stdout is not None
                assert worker.stdout.readline().strip() == "ready"  # it touched each one
            for session_id in ids:
                assert manager.delete(session_id) is True
                key, ids_key, exp_key = _keys(table_name, session_id)
                assert raw.exists(key) == 0
            reports = []
            for worker in workers:
                out, err = worker.communicate(timeout=120)
                assert worker.returncode == 0, err
                reports.append(json.loads(out.splitlines()[-1]))
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.communicate()
        for report in reports:
            assert report["pending"] == []
            assert sorted(report["gone"]) == sorted(ids)
            assert report["touches"] >= len(ids)
        for session_id in ids:
            key, ids_key, exp_key = _keys(table_name, session_id)
            assert raw.exists(key) == 0
            assert raw.zscore(ids_key, session_id) is None
            assert raw.zscore(exp_key, session_id) is None
        assert manager.count() == 0


class TestConcurrentTouches:
    def test_touches_from_threads_and_a_delete_never_resurrect(
        self, open_manager: Any, redis_server: Any, table_name: str, wait_until: Any
    ) -> None:
        """Threads calling the touch hook with ever later times while another deletes the
        session: after a thread is told the session is gone it never sees it again, the
        stored ``last_accessed`` only ever grew, and nothing is left behind."""
        clock = ManualClock()
        manager = open_manager(clock=clock)
        manager.store(Session("contested", clock.now, clock.now, 600_000))
        backend = manager.backend
        start = clock.now
        seen: list[list[int]] = [[] for _ in range(4)]
        problems: list[str] = []

        def touch(index: int) -> None:
            after_delete = 0
            for step in range(1, 5_000):
                result = backend.sessionkeeper_touch("contested", start + step * 4 + index)
                if result is None:  # gone: keep touching a while, it must stay gone
                    after_delete += 1
                    if after_delete == 50:
                        return
                elif after_delete:
                    problems.append(f"thread {index} saw the session again at step {step}")
                    return
                else:
                    seen[index].append(result.last_accessed)
            problems.append(f"thread {index} never saw the delete")

        threads = [threading.Thread(target=touch, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        wait_until(lambda: all(len(s) >= 20 for s in seen), "every thread touching")
        assert manager.delete("contested") is True
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
        assert problems == []
        for values in seen:
            assert values == sorted(values), "a touch moved last_accessed backwards"
        key, ids, exp = _keys(table_name, "contested")
        raw = _raw(redis_server)
        assert raw.exists(key) == 0
        assert raw.zscore(ids, "contested") is None
        assert raw.zscore(exp, "contested") is None


class TestConnectionLoss:
    def test_an_outage_is_a_storage_error_and_the_manager_recovers(
        self, redis_servers: Any, table_name: str
    ) -> None:
        """While the server is down every operation raises a ``StorageError`` naming it (never
        ``SessionNotFound``); once it is back on the same port, the same manager works again
        and finds what was stored before (the server keeps an fsynced append-only file)."""
        server = redis_servers(["--appendonly", "yes", "--appendfsync", "always"])
        manager = SessionManager(
            backend="redis",
            backend_opts={
                "url": server.url,
                "table_name": table_name,
                "retries": 1,
                "connect_timeout_ms": 500,
                "socket_timeout_ms": 2_000,
            },
            cleanup_interval=0,
        )
        try:
            before = manager.create(timeout_ms=None, metadata={"n": 1})
            server.stop(kill=True)
            for operation in (
                lambda: manager.fetch(before.id),
                lambda: manager.create(),
                lambda: manager.delete(before.id),
                manager.list,
                manager.count,
                manager.cleanup_expired,
            ):
                with pytest.raises(StorageError) as info:
                    operation()
                assert not isinstance(info.value, SessionNotFound)
                assert server.address in str(info.value)
                assert info.value.backend == "redis"
            server.start()
            assert manager.fetch(before.id).metadata == {"n": 1}
            after = manager.create(metadata={"n": 2})
            assert sorted(manager.list()) == sorted([before.id, after.id])
        finally:
            manager.close()


class TestWaitReplicas:
    def test_writes_wait_for_the_replica(
        self, redis_servers: Any, table_name: str, wait_until: Any
    ) -> None:
        """With ``wait_replicas = 1`` and a replica attached, every write returns once the
        replica has it: the replica holds each session right after ``store`` returns, and
        while the replica is stopped (SIGSTOP) a write is refused."""
        primary = redis_servers(["--repl-diskless-sync-delay", "0"])
        replica = redis_servers(["--replicaof", "127.0.0.1", str(primary.port)])
        raw_replica = replica.client()
        wait_until(primary.replica_acknowledges, "the replica acknowledging writes")
        with SessionManager(
            backend="redis",
            backend_opts={"url": primary.url, "table_name": table_name, "wait_replicas": 1},
            cleanup_interval=0,
        ) as manager:
            for n in range(20):
                session = manager.create(timeout_ms=60_000, metadata={"n": n})
                key = _keys(table_name, session.id)[0]
                assert raw_replica.get(key) == encode_session(session)
            assert manager.delete(session.id) is True
            assert raw_replica.exists(key) == 0
            assert manager.touch(manager.list()[0]).id
            primary.client().script_flush()  # the pipelined path reloads scripts too
            assert manager.create(timeout_ms=None).timeout_ms is None
            batch = [Session(f"many-{i}", START, START, None) for i in range(STORE_CHUNK + 1)]
            primary.client().script_flush()
            assert manager.store_many(batch) == len(batch)
            keys = [_keys(table_name, s.id)[0] for s in batch]
            assert raw_replica.mget(keys) == [encode_session(s) for s in batch]
            assert replica.process is not None
            replica.process.send_signal(signal.SIGSTOP)  # no acknowledgements while stopped
            try:
                with pytest.raises(StorageError, match="only 0 of the 1 replicas"):
                    manager.create()
                with pytest.raises(StorageError, match="only 0 of the 1 replicas"):
                    manager.store_many(batch[:2])
            finally:
                replica.process.send_signal(signal.SIGCONT)

    def test_too_few_replicas_is_a_storage_error_but_the_write_happened(
        self, open_manager: Any
    ) -> None:
        """Without replicas, ``wait_replicas = 1`` makes each write raise a ``StorageError``
        saying that no replica acknowledged it; the primary has the write nonetheless."""
        clock = ManualClock()
        manager = open_manager(
            clock=clock, backend_opts={"wait_replicas": 1, "wait_timeout_ms": 20}
        )
        session = Session("unreplicated", clock.now, clock.now, None)
        with pytest.raises(StorageError, match="only 0 of the 1 replicas") as info:
            manager.store(session)
        assert "wait_replicas" in str(info.value)
        assert manager.peek("unreplicated").id == "unreplicated"

    def test_store_many_stops_at_the_first_chunk_too_few_replicas_acknowledged(
        self, open_manager: Any
    ) -> None:
        """Without replicas, ``store_many`` with ``wait_replicas = 1`` raises after its first
        round trip, saying how many writes no replica acknowledged; those are on the primary
        and the rest of the batch was not sent."""
        clock = ManualClock()
        manager = open_manager(
            clock=clock, backend_opts={"wait_replicas": 1, "wait_timeout_ms": 20}
        )
        batch = [Session(f"s{i}", clock.now, clock.now, None) for i in range(STORE_CHUNK + 1)]
        with pytest.raises(StorageError, match="only 0 of the 1 replicas") as info:
            manager.store_many(batch)
        assert f"{STORE_CHUNK} writes are on the primary" in str(info.value)
        assert "they may be lost" in str(info.value)
        assert sorted(manager.list()) == sorted(s.id for s in batch[:STORE_CHUNK])


class TestScriptCache:
    def test_a_flushed_script_cache_is_reloaded(self, open_manager: Any, redis_server: Any) -> None:
        """After ``SCRIPT FLUSH`` (as after a server restart or a failover) every operation
        loads the scripts again and works, with and without ``WAIT``."""
        clock = ManualClock()
        manager = open_manager(clock=clock)
        raw = _raw(redis_server)
        raw.script_flush()
        manager.store(Session("a", clock.now, clock.now, 1_000))
        raw.script_flush()
        assert manager.count() == 1
        raw.script_flush()
        assert manager.list() == ["a"]
        raw.script_flush()
        clock.advance(1_001)
        assert manager.cleanup_expired() == 1
        raw.script_flush()
        assert manager.delete("a") is False
        raw.script_flush()
        batch = [Session(f"b{i}", clock.now, clock.now, None) for i in range(STORE_CHUNK + 1)]
        assert manager.store_many(batch) == len(batch)
        assert manager.count() == len(batch)


class TestCheck:
    @pytest.fixture
    def config_file(self, redis_server: Any, table_name: str, tmp_path: Path) -> Path:
        path = tmp_path / "sessionkeeper.toml"
        path.write_text(
            '[sessionkeeper]\nbackend = "redis"\ncleanup_interval = 0\n'
            f'[sessionkeeper.backend_opts]\nurl = "{redis_server.url}"\n'
            f'table_name = "{table_name}"\n'
        )
        return path

    def test_a_sound_store_passes(self, open_manager: Any, config_file: Path) -> None:
        """``check`` of a store written only through sessionkeeper finds nothing wrong and
        counts every record; sessions Redis dropped at the end of their TTL are not problems."""
        clock = ManualClock()
        manager = open_manager(clock=clock)
        for n in range(7):
            manager.store(Session(f"s{n}", clock.now, clock.now, None if n % 2 else 60_000))
        report = check_store(load_config(config_file))
        assert report is not None
        assert (report["ok"], report["checked"], report["intact"]) == (True, 7, 7)
        assert report["problems"] == []
        assert "redis at 127.0.0.1" in report["server"]

    def test_damage_and_drift_are_reported_then_repaired(
        self, open_manager: Any, redis_server: Any, table_name: str, config_file: Path
    ) -> None:
        """``check`` names each damaged record and each index entry that disagrees with the
        keys; ``check --repair`` moves damaged records to ``{table}:quarantine:<id>``, indexes
        intact sessions the index missed, drops entries of keys that are gone, and a second
        check then passes with every intact session readable."""
        clock = ManualClock()
        manager = open_manager(clock=clock)
        for name in ("good", "garbage", "hash", "gone", "drifted", "foreign"):
            manager.store(Session(name, clock.now, clock.now, 60_000))
        raw = _raw(redis_server)
        key = {name: _keys(table_name, name)[0] for name in ("garbage", "hash", "gone", "orphan")}
        ids_key, exp_key = _keys(table_name, "x")[1:]
        raw.set(key["garbage"], b"\xc1\xc1")
        raw.delete(key["hash"])
        raw.hset(key["hash"], "f", "v")
        raw.delete(key["gone"])
        raw.zrem(exp_key, "gone")  # gone for good, not dropped by its TTL
        raw.zadd(exp_key, {"drifted": 5})
        raw.set(_keys(table_name, "foreign")[0], raw.get(_keys(table_name, "good")[0]))
        orphan = Session("orphan*?[]", clock.now, clock.now, 60_000, {"o": 1})
        raw.set(_keys(table_name, orphan.id)[0], encode_session(orphan))
        raw.zadd(exp_key, {"ghost": 7})

        report = check_store(load_config(config_file))
        assert report is not None
        assert report["ok"] is False
        text = "\n".join(report["problems"])
        for expected in (
            f"{key['garbage']!r} does not decode",
            f"{key['hash']!r} holds a hash",
            "session 'gone' is indexed but its key",
            "deadline 5",
            "holds session 'good'",
            "intact session missing from the id index",
            "deadline entry 'ghost'",
        ):
            assert expected in text
        assert len(report["problems"]) == 7

        repaired = check_store(load_config(config_file), repair=True)
        assert repaired is not None
        assert repaired["repaired"] is True
        assert sorted(repaired["quarantined"]) == sorted(
            f"{{{table_name}}}:quarantine:{name}" for name in ("foreign", "garbage", "hash")
        )
        assert raw.get(f"{{{table_name}}}:quarantine:garbage") == b"\xc1\xc1"
        again = check_store(load_config(config_file))
        assert again is not None
        assert again["ok"] is True, again["problems"]
        assert sorted(manager.list()) == sorted(["good", "drifted", orphan.id])
        assert manager.peek(orphan.id).metadata == {"o": 1}
        assert raw.zscore(exp_key, "drifted") == clock.now + 60_000
        assert raw.zscore(ids_key, "gone") is None

    def test_entries_and_keys_that_are_not_ids_are_reported_then_removed(
        self, open_manager: Any, redis_server: Any, table_name: str, config_file: Path
    ) -> None:
        """Index members and session keys that no id can name (bytes another program wrote:
        not ASCII, a space, empty) are each reported, and ``--repair`` removes the index entries
        and quarantines the key, exactly those bytes: before, the check looked them up under a
        lossy decoding, repair removed nothing, and a key under the prefix failed the whole
        check with "no such key" (issue 12: equality that is not byte equality)."""
        clock = ManualClock()
        manager = open_manager(clock=clock)
        kept = Session("kept", clock.now, clock.now, 60_000, {"n": 1})
        manager.store(kept)
        raw = _raw(redis_server)
        key, ids_key, exp_key = _keys(table_name, "kept")
        prefix = f"{{{table_name}}}:s:".encode()
        raw.zadd(ids_key, {b"\xff\xfe": 0, b"a b": 0})
        raw.zadd(exp_key, {b"\xfd": 5, b"": 5})
        raw.set(prefix + b"\xfc", b"junk")
        report = check_store(load_config(config_file))
        assert report is not None
        assert report["ok"] is False
        problems = "\n".join(report["problems"])
        for shown in ("\\xff\\xfe", "'a b'", "\\xfd", "''", "\\xfc"):
            assert shown in problems, (shown, problems)
        repaired = check_store(load_config(config_file), repair=True)
        assert repaired is not None
        assert len(repaired["quarantined"]) == 1
        assert raw.zrange(ids_key, 0, -1) == [b"kept"]
        assert raw.zrange(exp_key, 0, -1) == [b"kept"]
        assert raw.exists(prefix + b"\xfc") == 0
        again = check_store(load_config(config_file))
        assert again is not None
        assert (again["ok"], again["intact"]) == (True, 1), again["problems"]
        assert manager.peek("kept") == kept
        assert raw.get(key) == encode_session(kept)

    def test_the_cli_exits_4_on_problems(
        self, open_manager: Any, redis_server: Any, table_name: str, config_file: Path
    ) -> None:
        """``sessionkeeper check`` exits with 4 and lists the damaged key; after ``--repair``
        it exits with 0."""
        from click.testing import CliRunner

        from sessionkeeper.cli import cli

        clock = ManualClock()
        manager = open_manager(clock=clock)
        manager.store(Session("damaged", clock.now, clock.now, None))
        _raw(redis_server).set(_keys(table_name, "damaged")[0], b"junk")
        runner = CliRunner()
        result = runner.invoke(cli, ["check", "--config", str(config_file), "--json"])
        assert result.exit_code == 4, result.output
        assert json.loads(result.output)["problems"][0].startswith(
            f"key {_keys(table_name, 'damaged')[0]!r}"
        )
        result = runner.invoke(cli, ["check", "--config", str(config_file), "--repair"])
        assert result.exit_code == 0, result.output
        result = runner.invoke(cli, ["check", "--config", str(config_file)])
        assert result.exit_code == 0, result.output

    def test_a_table_name_with_glob_characters_scans_only_its_own_keys(
        self, redis_server: Any, tmp_path: Path
    ) -> None:
        """The key prefix is escaped in ``SCAN ... MATCH``: checking the table ``t?[ab]*\\`` does
        not pick up the keys of table ``txa``, which an unescaped pattern would match."""
        suffix = uuid.uuid4().hex
        special, plain = f"t?[ab]*\\{suffix}", f"txa*\\{suffix}"
        clock = ManualClock()
        for table in (special, plain):
            with SessionManager(
                backend="redis",
                backend_opts={"url": redis_server.url, "table_name": table},
                clock=clock,
                cleanup_interval=0,
            ) as manager:
                manager.store(Session("s", clock.now, clock.now, None))
        raw = _raw(redis_server)
        lost = Session("lost", clock.now, clock.now, None)
        raw.set(_keys(plain, "lost")[0], encode_session(lost))  # not indexed: a problem there
        config = tmp_path / "special.toml"
        config.write_text(
            '[sessionkeeper]\nbackend = "redis"\n[sessionkeeper.backend_opts]\n'
            f'url = "{redis_server.url}"\ntable_name = {json.dumps(special)}\n'
        )
        report = check_store(load_config(config))
        assert report is not None
        assert (report["ok"], report["checked"]) == (True, 1), report["problems"]
