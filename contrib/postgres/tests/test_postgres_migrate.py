"""``sessionkeeper migrate`` into postgres, as docs/postgres.md shows it: the command line over
two config files, between sqlitedict and postgres both ways, and from a real ``redis-server``
(started with contrib/redis's own test server class) with sessions of every shape."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sessionkeeper import Session, SessionManager, installed_backends
from sessionkeeper_postgres._schema import deadlines

START = 1_700_000_000_000
HOUR = 3_600_000
ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "postgres.md"


def _sessionkeeper(*args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "sessionkeeper", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def configs(tmp_path: Path, pg_cluster: Any, table_name: str) -> tuple[Path, Path]:
    """A sqlitedict config and a postgres config (the documented shape), in ``tmp_path``."""
    if "sqlitedict" not in installed_backends():
        pytest.skip("needs sessionkeeper-sqlitedict")
    sqlite = tmp_path / "sqlitedict.toml"
    sqlite.write_text(
        '[sessionkeeper]\nbackend = "sqlitedict"\ncleanup_interval = 0\n\n'
        "[sessionkeeper.backend_opts]\n"
        'file_path = "sessions.sqlite"\nauto_save = 0\n'
    )
    postgres = tmp_path / "postgres.toml"
    postgres.write_text(
        '[sessionkeeper]\nbackend = "postgres"\ncleanup_interval = 0\n\n'
        "[sessionkeeper.backend_opts]\n"
        f'dsn = "{pg_cluster.dsn()}"\ntable_name = "{table_name}"\n'
    )
    return sqlite, postgres


def test_migrate_from_sqlitedict_to_postgres_and_back(configs: tuple[Path, Path]) -> None:
    """``sessionkeeper migrate --to postgres.toml`` copies every live session from a sqlitedict
    file into PostgreSQL, verified, with every field intact; migrating back into an empty
    sqlitedict store gives the same sessions again."""
    sqlite, postgres = configs
    sessions = [
        Session(f"s{n}", START, START + n, None, {"n": n, "who": "user_456"}) for n in range(1_234)
    ]
    with SessionManager.from_config(sqlite) as source:
        source.store_many(sessions)
    report = _sessionkeeper("migrate", "--config", str(sqlite), "--to", str(postgres), "--json")
    assert report["verified"] is True
    with SessionManager.from_config(postgres) as target:
        assert target.count() == len(sessions)
        for session in sessions[::97]:
            assert target.peek(session.id) == session
    back = sqlite.with_name("back.toml")
    back.write_text(sqlite.read_text().replace("sessions.sqlite", "back.sqlite"))
    report = _sessionkeeper("migrate", "--config", str(postgres), "--to", str(back), "--json")
    assert report["verified"] is True
    with SessionManager.from_config(back) as copy:
        assert sorted(copy.list()) == sorted(s.id for s in sessions)


def test_migrate_onto_the_same_table_under_another_spelling_is_refused(
    configs: tuple[Path, Path], pg_cluster: Any
) -> None:
    """``migrate`` from a table to the same table reached as ``localhost`` instead of
    ``127.0.0.1`` is refused (the identities match), and nothing is written."""
    _sqlite, postgres = configs
    with SessionManager.from_config(postgres) as store:
        store.store(Session("only", START, START, None, {}))
    alias = postgres.with_name("alias.toml")
    alias.write_text(postgres.read_text().replace("127.0.0.1", "localhost"))
    done = subprocess.run(
        [sys.executable, "-m", "sessionkeeper", "migrate", "--config", str(postgres), "--to",
         str(alias)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "same store" in (done.stdout + done.stderr)


# -- from redis ---------------------------------------------------------------------------------


def _redis_test_servers() -> ModuleType:
    """contrib/redis's test conftest (its :class:`RedisServer`), imported from its file: the
    redis backend's own way of running a real ``redis-server``, not a copy of it."""
    name = "sessionkeeper_redis_test_servers"
    if name not in sys.modules:
        path = ROOT / "contrib" / "redis" / "tests" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None, path
        assert spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real ``redis-server`` of this test's own (skips, saying how to get one, without)."""
    if "redis" not in installed_backends():
        pytest.skip("needs sessionkeeper-redis")
    server = _redis_test_servers().RedisServer(tmp_path / "redis").start()
    try:
        yield server.url
    finally:
        server.close()


def _doc_block(lang: str, containing: str) -> str:
    """The first fenced ``lang`` block of docs/postgres.md that contains ``containing``."""
    for match in re.finditer(rf"^```{lang}\n(.*?)^```", DOC.read_text(), re.M | re.S):
        if containing in match[1]:
            return match[1]
    raise AssertionError(f"docs/postgres.md has no {lang} block with {containing!r}")


def _documented_commands() -> list[list[str]]:
    """The ``sessionkeeper migrate --config redis.toml`` commands the page shows, as argv."""
    block = _doc_block("console", "--config redis.toml")
    return [shlex.split(line.removeprefix("$ "))[1:] for line in block.splitlines()]


def _shapes(now: int) -> list[Session]:
    """Live sessions of every shape: no owner or an owner, idle timeout or none, absolute
    timeout or none, touched since created, nested and non-ASCII metadata; plus 600 plain
    owned ones (more than one write batch)."""
    shapes = [
        Session("plain", now, now, HOUR, {}),
        Session("owned-absolute", now - 5_000, now - 1_000, HOUR, {"user_id": "alice"},
                owner="alice", absolute_timeout_ms=8 * HOUR),
        Session("absolute-only", now - 60_000, now - 60_000, None,
                {"list": [1, 2.5, None, True, "x"]}, owner="alice", absolute_timeout_ms=2 * HOUR),
        Session("forever", now - HOUR, now, None, {"nested": {"a": {"b": "é ☃ 🙂"}}}),
        Session("versioned", now - 1_000, now - 10, HOUR, {"n": 0}, owner="bob"),
    ]  # fmt: skip
    shapes += [
        Session(f"bulk-{n:04}", now - n, now, HOUR, {"n": n}, owner=("carol", "dave")[n % 2])
        for n in range(600)
    ]
    return shapes


def _expired(now: int) -> list[Session]:
    """Sessions stored but expired: idle past their timeout, and past their absolute limit
    while their idle timeout is still running."""
    return [
        Session("expired-idle", now - 2 * HOUR, now - 2 * HOUR, 60_000, {}),
        Session("expired-absolute", now - 3 * HOUR, now - 1_000, 10 * HOUR, {}, owner="alice",
                absolute_timeout_ms=HOUR),
    ]  # fmt: skip


def _columns(dsn: str, table: str) -> dict[str, tuple[Any, ...]]:
    """``id -> (deadline, absolute_deadline, owner, version)`` as stored in ``table``."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT id, deadline, absolute_deadline, owner, version FROM {table}"  # type: ignore[arg-type]
        ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def test_migrate_from_redis_keeps_every_shape_then_delete_source_empties_it(
    tmp_path: Path, redis_url: str, pg_cluster: Any, table_name: str
) -> None:
    """The page's redis.toml (its URL pointed at a real server) and its two commands: the first
    copies every live session from the redis backend into postgres with ids, timestamps, both
    timeouts, owners, metadata and versions as Redis held them (deadline columns and the owner
    index computed from them, expired sessions left out), leaving Redis as it was; the second
    (``--delete-source``), run after one more session was written to Redis, copies that one
    and deletes from Redis every live session (the earlier run's too: both stores report their
    identity), leaving only the expired ones there."""
    redis_opts = tomllib.loads(_doc_block("toml", 'backend = "redis"'))["sessionkeeper"][
        "backend_opts"
    ]
    redis_opts["url"] = redis_url  # the page's, pointed at the test's server
    redis_toml = tmp_path / "redis.toml"
    redis_toml.write_text(
        '[sessionkeeper]\nbackend = "redis"\ncleanup_interval = 0\n\n'
        "[sessionkeeper.backend_opts]\n"
        + "".join(f"{key} = {json.dumps(value)}\n" for key, value in redis_opts.items())
    )
    postgres_toml = tmp_path / "postgres.toml"
    postgres_toml.write_text(
        '[sessionkeeper]\nbackend = "postgres"\ncleanup_interval = 0\n\n'
        "[sessionkeeper.backend_opts]\n"
        f'dsn = "{pg_cluster.dsn()}"\ntable_name = "{table_name}"\n'
    )
    first, second = _documented_commands()
    assert first == ["migrate", "--config", "redis.toml", "--to", "postgres.toml"]
    assert second == [*first, "--delete-source"]
    now = int(time.time() * 1000)
    with SessionManager.from_config(redis_toml) as source:
        source.store_many(_shapes(now) + _expired(now))
        for _ in range(6):  # version 7, counted by the redis backend itself
            source.update("versioned", lambda md: {**md, "n": md["n"] + 1})
        live = {s.id: s for s in source.iter_sessions()}
    assert live["versioned"].version == 7
    assert len(live) == 605

    def migrate(argv: list[str]) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "sessionkeeper", *argv, "--json"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    report = migrate(first)
    assert (report["verified"], report["copied"], report["deleted"]) == (True, 605, 0)
    with SessionManager.from_config(postgres_toml) as target:
        copied = {s.id: s for s in target.iter_sessions(include_expired=True)}
        assert copied == live  # every field, versions and owners included
        assert sorted(target.list(owner="alice")) == ["absolute-only", "owned-absolute"]
        assert target.count(owner="carol") == 300
    columns = _columns(pg_cluster.dsn(), table_name)
    assert columns == {
        s.id: (*deadlines(s), s.owner, s.version) for s in live.values()
    }  # each expires at the same millisecond as in Redis
    with SessionManager.from_config(redis_toml) as source:
        assert {s.id: s for s in source.iter_sessions()} == live  # left as it was
        late = source.create(HOUR, {"late": True}, owner="erin")

    report = migrate(second)
    assert report["verified"] is True
    assert (report["copied"], report["unchanged"], report["deleted"]) == (1, 605, 606)
    with SessionManager.from_config(redis_toml) as source:
        assert source.count() == 0
        remaining = {s.id for s in source.iter_sessions(include_expired=True)}
    assert remaining == {"expired-idle", "expired-absolute"}
    with SessionManager.from_config(postgres_toml) as target:
        assert target.count() == 606
        assert target.peek(late.id) == late
