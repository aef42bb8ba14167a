"""``sessionkeeper migrate`` between sqlitedict and postgres, both ways, as docs/postgres.md shows
it: the command line over two config files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper import Session, SessionManager, installed_backends

START = 1_700_000_000_000


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
