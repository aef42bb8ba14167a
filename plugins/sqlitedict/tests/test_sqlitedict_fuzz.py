"""The disk-row door, fuzzed: hostile rows written into the session table behind the backend.

Each example builds a session table with raw ``sqlite3``: a few intact sessions, then rows of
every kind a foreign program, a bit flip or a truncation could leave there (keys of any type,
values that are random bytes, damaged or truncated records, records filed under another key,
text, numbers, NULL). Then the store is opened for writing and read-only, fetched, listed and
iterated, checked and repaired. Nothing may raise anything but a sessionkeeper error, every row
that is not a session must be reported (never served, never "not found"), and no intact session
may be lost, by the owner, the reader or the repair.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionkeeper import Session, SessionManager, SessionNotFound, StorageError
from sessionkeeper.backend import CodecError, decode_session, encode_session
from sessionkeeper.testing import ManualClock
from sessionkeeper_sqlitedict import check_file

NOW = 1_700_000_000_000
TABLE = "sessions"
ID_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


def record(session_id: str, i: int = 0) -> bytes:
    return encode_session(Session(session_id, NOW - 10, NOW - 5, None, {"i": i, "s": "x" * i}))


@st.composite
def values(draw: st.DrawFn, key: object) -> object:
    """A value for a row under ``key``: intact, damaged, foreign or of another type."""
    own = key if is_session_id(key) else "someone"
    assert isinstance(own, str)
    good = record(own, draw(st.integers(0, 40)))
    kinds = ["bytes", "flipped", "truncated", "other-id", "text", "int", "none", "good"]
    kind = draw(st.sampled_from(kinds))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "flipped":
        at = draw(st.integers(0, len(good) - 1))
        mask = draw(st.integers(1, 255))
        return good[:at] + bytes([good[at] ^ mask]) + good[at + 1 :]
    if kind == "truncated":
        return good[: draw(st.integers(0, len(good) - 1))]
    if kind == "other-id":
        return record("not-" + own[:200])  # a record filed under another key
    if kind == "text":
        return draw(st.text(max_size=20))
    if kind == "int":
        return draw(st.integers(-(2**63), 2**63 - 1))
    if kind == "none":
        return None
    return good


@st.composite
def hostile_rows(draw: st.DrawFn) -> list[tuple[object, object]]:
    keys = st.one_of(
        st.text(ID_CHARS, min_size=1, max_size=12),
        st.sampled_from(["ok0", "ok1", "ok2"]),  # collide with the intact sessions
        st.binary(max_size=12),
        st.integers(-5, 5),
        st.text(max_size=6),  # not valid ids: spaces, control characters, non-ASCII, ""
        st.none(),
    )
    rows = []
    for key in draw(st.lists(keys, max_size=8)):
        rows.append((key, draw(values(key))))
    return rows


def expected_sessions(path: Path) -> tuple[dict[str, Session], list[object]]:
    """What the table holds, judged by the core's codec alone: intact sessions by id, and the
    keys of the rows that are not sessions."""
    connection = sqlite3.connect(path)
    try:
        stored = connection.execute(f'SELECT key, value FROM "{TABLE}"').fetchall()
    finally:
        connection.close()
    intact: dict[str, Session] = {}
    bad: list[object] = []
    for key, value in stored:
        try:
            session = decode_session(value) if isinstance(value, bytes) else None
        except CodecError:
            session = None
        if type(key) is str and session is not None and session.id == key:
            intact[key] = session
        else:
            bad.append(key)
    return intact, bad


def is_session_id(key: object) -> bool:
    return isinstance(key, str) and 1 <= len(key) <= 256 and all("!" <= c <= "~" for c in key)


def manager_on(path: Path, *, read_only: bool) -> SessionManager:
    return SessionManager(
        backend="sqlitedict",
        # Interval mode: nothing is written unless asked (this test only reads).
        backend_opts={"file_path": str(path), "auto_save": 600_000, "synchronous": "NORMAL"},
        cleanup_interval=0,
        clock=ManualClock(NOW),
        read_only=read_only,
    )


def everything(manager: SessionManager, bad: list[object]) -> dict[str, Session]:
    """Every session ``iter_sessions`` yields; it must end in a StorageError exactly when
    there are rows that are not sessions."""
    found: dict[str, Session] = {}

    def drain() -> None:
        for session in manager.iter_sessions(include_expired=True):
            found[session.id] = session

    if bad:
        with pytest.raises(StorageError, match="do not decode"):
            drain()
    else:
        drain()
    return found


def assert_serves(manager: SessionManager, intact: dict[str, Session], bad: list[object]) -> None:
    """The manager serves exactly the intact sessions and raises StorageError for the rest."""
    assert everything(manager, bad) == intact
    assert sorted(manager.list()) == sorted(intact)
    for session_id, session in intact.items():
        assert manager.peek(session_id) == session
    for key in bad:
        if is_session_id(key) and key not in intact:
            assert isinstance(key, str)
            with pytest.raises(StorageError) as info:
                manager.peek(key)
            assert not isinstance(info.value, SessionNotFound)


class TestDiskRows:
    @pytest.mark.fuzz
    # Each example repairs a file (three fsyncs): a quarter of the profile's budget keeps the
    # default run to a few seconds and scales with the fuzz profile.
    @settings(
        max_examples=max(10, settings.default.max_examples // 4),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(rows=hostile_rows(), intact_count=st.integers(0, 3))
    def test_hostile_rows_give_clear_errors_and_lose_no_intact_session(
        self, rows: list[tuple[object, object]], intact_count: int
    ) -> None:
        """Whatever rows sit in the session table, the owner and a reader serve every intact
        session and raise StorageError (never "not found", never a foreign exception) for the
        others; check counts them; check --repair keeps every intact session (or, when no
        row at all is a session, refuses and changes nothing)."""
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "fuzz.sqlite"
            connection = sqlite3.connect(path, isolation_level=None)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f'CREATE TABLE "{TABLE}" (key TEXT PRIMARY KEY, value BLOB)')
            insert = f'INSERT OR REPLACE INTO "{TABLE}" (key, value) VALUES (?, ?)'
            for i in range(intact_count):
                connection.execute(insert, (f"ok{i}", record(f"ok{i}", i)))
            for key, value in rows:
                connection.execute(insert, (key, value))
            connection.close()
            intact, bad = expected_sessions(path)

            for read_only in (False, True):
                with manager_on(path, read_only=read_only) as manager:
                    assert_serves(manager, intact, bad)

            report = check_file(path, TABLE, backend="sqlitedict", repair=False)
            assert (report["intact"], report["ok"]) == (len(intact), not bad)
            before = path.read_bytes()
            report = check_file(path, TABLE, backend="sqlitedict", repair=True)
            if bad and not intact:
                assert report["repaired"] is False
                assert any("refused" in problem for problem in report["problems"])
                assert path.read_bytes() == before
            else:
                assert report["repaired"] is bool(bad)
                assert report["salvaged" if bad else "intact"] == len(intact)
                after, still_bad = expected_sessions(path)
                assert (after, still_bad) == (intact, [])
                assert check_file(path, TABLE, backend="sqlitedict", repair=False)["ok"]


def test_foreign_errors_are_not_swallowed_by_the_oracle() -> None:
    """The fuzz test's own judge (the core codec) rejects what the backend must reject: a
    record under another key is not intact there either."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "judge.sqlite"
        connection = sqlite3.connect(path)
        with connection:
            connection.execute(f'CREATE TABLE "{TABLE}" (key TEXT PRIMARY KEY, value BLOB)')
            connection.execute(f'INSERT INTO "{TABLE}" VALUES (?, ?)', ("a", record("b")))
            connection.execute(f'INSERT INTO "{TABLE}" VALUES (?, ?)', ("c", record("c")))
        connection.close()
        intact, bad = expected_sessions(path)
        assert (sorted(intact), bad) == (["c"], ["a"])
